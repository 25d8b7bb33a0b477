"""``python -m tools serve``: MONAI Label's server, offline, with this repository's bundles (needs ``.[monailabel]``).

The server is MONAI Label's own (``monailabel.main``, uvicorn, the ``monailabel.app`` FastAPI app, given the answers
for bad requests by :mod:`tools.integrations.monailabel_server`) started in this process, with
:class:`tools.integrations.monailabel_app.SegBundlesApp` as its app: no model-zoo downloads (bundles are served from
their folders), no SAM 2 model, no internet needed.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

__all__ = ["APP_MAIN", "UVICORN_APP", "bundle_dirs", "model_spec", "prepare_app", "served_copies", "serve"]

APP_MAIN = '''"""MONAI Label app folder written by `python -m tools serve`; the app is tools.integrations.monailabel_app.SegBundlesApp."""
from tools.integrations.monailabel_app import SegBundlesApp


class App(SegBundlesApp):
    pass
'''


# MONAI Label's FastAPI app with the answers for bad requests (4xx with a reason): integrations/monailabel_server.py
UVICORN_APP = "tools.integrations.monailabel_server:app"


def bundle_dirs(bundles: str | list[str] | tuple[str, ...] | None = None) -> list[Path]:
    """The bundle folders to serve: each of ``bundles`` (a folder, or the name of a folder under this repository's
    ``bundles/``), or every bundle of the repository when ``None``.

    Raises:
        FileNotFoundError: naming a bundle that has no ``configs/inference.json``.
    """
    root = Path(__file__).resolve().parents[2] / "bundles"
    if bundles is None:
        found = sorted(p for p in root.iterdir() if (p / "configs" / "inference.json").is_file()
                       and not p.name.startswith("_")) if root.is_dir() else []
        if not found:
            raise FileNotFoundError(f"no bundles under {root}; pass --bundles")
        return found
    if isinstance(bundles, str):
        bundles = [b for b in bundles.split(",") if b]
    out = []
    for b in bundles:
        p = Path(b).expanduser()
        if not p.is_dir() and (root / b).is_dir():
            p = root / b
        if not (p / "configs" / "inference.json").is_file():
            raise FileNotFoundError(f"{b}: not a bundle folder (no configs/inference.json)")
        out.append(p.resolve())
    return out


def model_spec(dirs: list[Path]) -> dict[str, dict]:
    """MONAI Label models of the bundles: ``{name: {"bundle": DIR, "configs": [...]}}`` (the app's ``models``
    setting, :func:`tools.integrations.monailabel_app.parse_models`). A bundle with ``configs/inference_ct.json`` (an MRI bundle
    that also has a CT configuration) adds a second model ``<name>_ct`` merging it over ``inference.json``."""
    spec = {}
    for d in dirs:
        dim = 3 if volume_only(d) else 2
        spec[d.name] = {"bundle": str(d), "configs": ["inference.json"], "dimension": dim}
        if (d / "configs" / "inference_ct.json").is_file():
            spec[d.name + "_ct"] = {"bundle": str(d), "configs": ["inference.json", "inference_ct.json"],
                                    "dimension": dim}
    return spec


def volume_only(bundle: Path) -> bool:
    """Whether the bundle's inference takes volumes only (its ``run`` writes volume masks whatever the input: the
    spine bundle), so that MONAI Label lists it as a 3D model; the COVID-19 bundles take slices and volumes and are
    listed as 2D (their network is 2D), the others are 2D."""
    cfg = json.loads((bundle / "configs" / "inference.json").read_text())
    return "volume=True" in json.dumps(cfg.get("run", ""))


def prepare_app(app_dir: str | Path) -> Path:
    """Write the app folder MONAI Label loads (``main.py`` naming our app class); returns it, resolved."""
    app = Path(app_dir).expanduser().resolve()
    app.mkdir(parents=True, exist_ok=True)
    (app / "main.py").write_text(APP_MAIN)
    return app


def served_copies(dirs: list[Path], app: Path) -> list[Path]:
    """The bundle folders MONAI Label serves: copies in ``APP/bundles/<name>`` (made on first use, without training
    outputs under ``eval/``; an existing copy is kept, with the models its training runs promoted), so that training
    in MONAI Label never rewrites the repository's shipped weights. To ship a model trained there:
    ``python -m tools promote APP/runs/<name>/<time> bundles/<name>``."""
    out = []
    for d in dirs:
        dst = app / "bundles" / d.name
        if not dst.is_dir():
            tmp = dst.with_name(dst.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(d, tmp, ignore=shutil.ignore_patterns("eval", "__pycache__", "*.pyc"))
            tmp.rename(dst)
        out.append(dst)
    return out


def serve(studies: str, host: str = "127.0.0.1", port: int = 8000, bundles=None, app_dir: str = "monailabel_app",
          skip_trainers: bool = False, dryrun: bool = False) -> None:
    """Start MONAI Label's server (blocking) with the bundles; see :func:`tools.cli.serve`."""
    from tools.integrations.torchvision_ops import ensure_torchvision_imports

    ensure_torchvision_imports()
    try:
        from monailabel.main import Main
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"MONAI Label is not installed ({e}); install the extra: pip install -e \".[monailabel]\"")
    dirs = bundle_dirs(bundles)
    app = prepare_app(app_dir)
    spec = model_spec(served_copies(dirs, app))
    Path(studies).expanduser().mkdir(parents=True, exist_ok=True)
    argv = ["monailabel", "start_server", "--app", str(app), "--studies", str(Path(studies).expanduser().resolve()),
            "--host", str(host), "--port", str(int(port)), "--uvicorn_app", UVICORN_APP,
            "--conf", "models", json.dumps(spec), "--conf", "sam2", "false",
            "--conf", "skip_trainers", "true" if skip_trainers else "false",
            "--conf", "preload", "false"]
    if dryrun:
        argv.append("--dryrun")
    sys.argv = argv
    Main().run()


# ---------------------------------------------------------------- the command line (python -m tools serve)


def serve_command(studies: str, host: str = "127.0.0.1", port: int = 8000, bundles: str | None = None,
          app_dir: str = "monailabel_app", skip_trainers: bool = False) -> None:
    """Start MONAI Label's server, offline, serving the bundles for inference and training (blocks until stopped).

    Needs the extra: pip install -e ".[monailabel]". Every bundle is a MONAI Label model named after its folder
    (a bundle with configs/inference_ct.json adds <name>_ct, its CT configuration); 2D inputs give PNG label maps
    of the input's size, volumes (NIfTI, NRRD, MetaImage, DICOM series) NIfTI label maps with the input's affine,
    labels 0 = background and 1 = the class (metadata.json's channel_def). The bundles are served from copies in
    APP_DIR/bundles/ (the repository's are never written); POST /train/<model> trains into
    APP_DIR/runs/<model>/<time>/ and promotes the run's best validation model to the served copy's
    models/model.pt, which the next inference uses. No model-zoo download, no SAM 2 model: nothing leaves the machine.
    Bad requests (an unknown model or image id, an image the bundle cannot read, params that are not JSON) are
    answered 404/422/400 with a JSON one-line reason, server faults 500 (README.md, "Serving in MONAI Label").

    Args:
        studies: the studies folder (images; MONAI Label keeps labels in STUDIES/labels/final/); created if absent.
        host: the address to listen on (127.0.0.1: this machine only).
        port: the port.
        bundles: comma-separated bundle folders or names under bundles/ (default: every bundle of the repository).
        app_dir: the app folder MONAI Label runs from (written if absent; holds the served copies of the bundles,
            MONAI Label's logs and the training runs).
        skip_trainers: serve inference only.
    """
    try:
        serve(studies, host=host, port=port, bundles=bundles, app_dir=app_dir, skip_trainers=skip_trainers)
    except (ImportError, FileNotFoundError) as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
