"""Offline checks of a bundle, in the spirit of the MONAI model zoo's CI (``ci/verify_bundle.py`` there).

:data:`CHECKS` names them, in the order :func:`verify_bundle` runs them. Each check raises :class:`BundleCheckError`
with a message naming the file and what is wrong; :func:`verify_bundle` stops at the first failure. No check writes
into the bundle: the workflows are instantiated with a temporary output folder, the TorchScript export goes to a
temporary file.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import jsonschema
import torch
from monai.bundle import ConfigParser, ConfigWorkflow, verify_net_in_out

from tools.commands.export import export_torchscript, inference_network

__all__ = [
    "BundleCheckError", "CHECKS", "REQUIRED_FILES", "SCHEMA_PATH", "verify_bundle", "verify_dataset_dir",
    "check", "check_config_paths",
]

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "meta_schema_20240725.json"
REQUIRED_FILES = (
    "configs/metadata.json",
    "configs/train.json",
    "configs/inference.json",
    "configs/evaluate.json",
    "configs/multi_gpu_train.json",
    "configs/logging.conf",
    "docs/README.md",
    "docs/data_license.txt",
    "LICENSE",
    "models/model.pt",
)
logger = logging.getLogger(__name__)


# (name, what it checks), in the order verify_bundle runs them
CHECKS: tuple[tuple[str, str], ...] = (
    ("required files", "the model-zoo layout's files are present (configs, docs, licences, models/model.pt)"),
    ("metadata schema and changelog", "metadata.json matches MONAI's schema; its version has a changelog entry"),
    ("configs parse", "every config parses (overlays merged on top of train.json)"),
    ("configs stay inside the bundle", "no config string reaches outside the bundle's folder ('../', an absolute path, "
     "a sibling bundle's name)"),
    ("workflow properties", "the train and infer workflows have MONAI's required properties"),
    ("network input/output", "network_def maps metadata.json's input to its output (channels, dtype, size)"),
    ("TorchScript round trip", "the exported models/model.pt gives the eager network's output"),
)


class BundleCheckError(RuntimeError):
    """A bundle failed a check; the message names the file and the problem, ``check`` the check's name (set by
    :func:`verify_bundle`)."""

    check: str | None = None


def _configs(bundle: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted((bundle / "configs").glob("*.json")) if p.name != "metadata.json"}


def check_files(bundle: Path) -> None:
    missing = [f for f in REQUIRED_FILES if not (bundle / f).is_file()]
    if missing:
        raise BundleCheckError(f"{bundle}: missing required files: {', '.join(missing)}.")


def check_metadata(bundle: Path) -> dict:
    path = bundle / "configs" / "metadata.json"
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BundleCheckError(f"{path}: not valid JSON: {e}.") from e
    schema = json.loads(SCHEMA_PATH.read_text())
    validator_cls = jsonschema.validators.validator_for(schema)
    errors = sorted(validator_cls(schema).iter_errors(meta), key=lambda e: list(e.path))
    if errors:
        msgs = "; ".join(f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors[:5])
        raise BundleCheckError(f"{path}: does not match {SCHEMA_PATH.name}: {msgs}.")
    if meta["version"] not in meta.get("changelog", {}):
        raise BundleCheckError(f"{path}: version {meta['version']} has no entry in 'changelog'.")
    if not re.fullmatch(r"\d+\.\d+\.\d+", meta["version"]):
        raise BundleCheckError(f"{path}: version {meta['version']!r} is not MAJOR.MINOR.PATCH.")
    return meta


def check_configs_parse(bundle: Path) -> None:
    """Parse every config; overlays (all but train.json and inference.json) merged on top of train.json."""
    configs = _configs(bundle)
    for name, path in configs.items():
        files = [str(path)] if name in ("train", "inference") else [str(configs["train"]), str(path)]
        try:
            parser = ConfigParser()
            parser.read_config(files)
            parser.parse()
        except Exception as e:  # the parser raises many types; all mean the same to the user
            raise BundleCheckError(f"{path}: does not parse as a MONAI bundle config: {e}.") from e


_PARENT_DIR = re.compile(r"(?:^|[/\\'\"\s])\.\.(?:[/\\'\"]|$)")  # a ".." path component
# a string that is an absolute path, or an expression that starts with one: "/data/x", "$'/data/x' + ...", "C:\\x"
_ABSOLUTE = re.compile(r"""^(?:\$\s*[rRuU]?['"])?(?:/(?![/*])|[A-Za-z]:[/\\]|\\\\)""")
REPOSITORY = Path(__file__).resolve().parents[2]


def _strings(value: object, where: str = "") -> list[tuple[str, str]]:
    """``(config id, text)`` of every string in a parsed JSON config, ids joined with ``#`` as MONAI writes them."""
    if isinstance(value, str):
        return [(where, value)]
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return []
    return [found for k, v in items for found in _strings(v, f"{where}#{k}" if where else str(k))]


def _sibling_bundles(bundle: Path) -> set[str]:
    """The names of the other bundles a config could reach into: the folders beside ``bundle`` that hold a
    ``configs/`` folder, and this repository's bundles (a packed copy lives elsewhere)."""
    names = set()
    for folder in {bundle.parent, REPOSITORY / "bundles"}:
        if folder.is_dir():
            names |= {p.name for p in folder.iterdir() if p.is_dir() and (p / "configs").is_dir()}
    return names - {bundle.name}


def _reaches_outside(text: str, siblings: set[str], sibling_pattern: re.Pattern | None) -> str | None:
    """Why a config string reaches outside its bundle, or None."""
    if _PARENT_DIR.search(text):
        return "'..'"
    if _ABSOLUTE.match(text.strip()):
        return "an absolute path"
    if str(REPOSITORY) in text:
        return "a path into the repository"
    if sibling_pattern is not None:
        m = sibling_pattern.search(text)
        if m:
            return f"the sibling bundle {m.group(0)}"
    return None


def check_config_paths(bundle: Path) -> None:
    """No config (``configs/**/*.json`` but ``metadata.json``) holds a string that reaches outside the bundle's
    folder: a ``..`` path component, an absolute path (the string, or the expression it starts), this repository's
    absolute path, or the name of a sibling bundle (a folder beside it with ``configs/``, or a bundle of this
    repository). A bundle is published alone, so a path into a sibling bundle
    (``$@bundle_root + '/../other/sample_data'``) or into the machine it was made on breaks a copied-alone bundle."""
    siblings = _sibling_bundles(bundle)
    sibling_pattern = (re.compile(r"(?<![\w-])(?:" + "|".join(map(re.escape, sorted(siblings, key=len, reverse=True)))
                                  + r")(?![\w-])") if siblings else None)
    found = []
    for path in sorted((bundle / "configs").rglob("*.json")):
        if path.name == "metadata.json":
            continue
        try:
            config = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise BundleCheckError(f"{path}: not valid JSON: {e}.") from e
        for where, text in _strings(config):
            why = _reaches_outside(text, siblings, sibling_pattern)
            if why:
                found.append(f"{path.relative_to(bundle)}: {where}: {text!r} ({why})")
    if found:
        raise BundleCheckError(
            f"{bundle}: configs reach outside the bundle's folder; a bundle must stand alone: " + "; ".join(found) + "."
        )


def verify_dataset_dir(bundle: Path) -> Path:
    """The data the train workflow's properties are checked with: the ``verify_dataset_dir`` id of the bundle's
    ``train.json`` when it has one (evaluated with ``bundle_root`` set to ``bundle``; like every config path it must
    stay inside the bundle), else ``<bundle>/sample_data/dataset``.

    Raises:
        BundleCheckError: if ``verify_dataset_dir`` names something that is not a folder.
    """
    train = bundle / "configs" / "train.json"
    parser = ConfigParser()
    parser.read_config(str(train))
    if "verify_dataset_dir" not in parser:
        return bundle / "sample_data" / "dataset"
    parser["bundle_root"] = str(bundle)
    path = Path(parser.get_parsed_content("verify_dataset_dir"))
    if not path.is_dir():
        raise BundleCheckError(f"{train}: verify_dataset_dir {path} is not a folder.")
    return path


def check_properties(bundle: Path, dataset_dir: Path | None = None) -> None:
    """``check_properties`` of the train and infer workflows (MONAI instantiates each property to check it, so
    the train workflow reads ``dataset_dir``: by default :func:`verify_dataset_dir`, the bundle's small
    ``sample_data/dataset`` unless its ``train.json`` names another folder)."""
    configs = _configs(bundle)
    dataset_dir = dataset_dir or verify_dataset_dir(bundle)
    meta = str(bundle / "configs" / "metadata.json")
    logging_file = str(bundle / "configs" / "logging.conf")
    # instantiating the trainer opens its TensorBoard writer in output_dir: a temporary one, not <bundle>/eval
    with tempfile.TemporaryDirectory(prefix="verify_", ignore_cleanup_errors=True) as output_dir:
        for name, wtype in (("train", "train"), ("inference", "infer")):
            workflow = ConfigWorkflow(
                config_file=str(configs[name]), meta_file=meta, logging_file=logging_file, workflow_type=wtype,
                bundle_root=str(bundle), output_dir=output_dir,
                **({"dataset_dir": str(dataset_dir)} if wtype == "train" else {}),
            )
            workflow.initialize()
            missing = workflow.check_properties()
            if missing:
                raise BundleCheckError(f"{configs[name]}: required {wtype} properties missing: {missing}.")


def _inference_network(bundle: Path, eval_mode: bool = True) -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    net = parser.get_parsed_content("network_def", instantiate=True)
    return net.eval() if eval_mode else net


def check_network_io(bundle: Path, meta: dict) -> None:
    """MONAI's ``verify_net_in_out`` (channels, dtype), then our check that the output's spatial shape is right."""
    config = str(bundle / "configs" / "inference.json")
    meta_file = str(bundle / "configs" / "metadata.json")
    try:
        verify_net_in_out(net_id="network_def", meta_file=meta_file, config_file=config, n=2, device="cpu",
                          bundle_root=str(bundle))
    except Exception as e:
        raise BundleCheckError(f"{config}: verify_net_in_out failed: {e}.") from e
    fmt = meta["network_data_format"]
    inp, out = fmt["inputs"]["image"], fmt["outputs"]["pred"]
    n = 2
    shape = [int(eval(str(s), {"n": n, "p": 1})) for s in inp["spatial_shape"]]  # noqa: S307 (metadata strings)
    net = _inference_network(bundle)
    with torch.no_grad():
        y = net(torch.rand(1, inp["num_channels"], *shape))
    expected = (1, out["num_channels"], *shape)
    if tuple(y.shape) != expected:
        raise BundleCheckError(
            f"{config}: network_def maps input (1, {inp['num_channels']}, {', '.join(map(str, shape))}) to "
            f"{tuple(y.shape)}; metadata.json promises {expected}."
        )


def check_torchscript(bundle: Path, meta: dict, atol: float = 1e-4) -> None:
    """Export to a temporary file, load it, and compare its output with eager mode on the trained weights."""
    inp = meta["network_data_format"]["inputs"]["image"]
    shape = [int(eval(str(s), {"n": 4, "p": 1})) for s in inp["spatial_shape"]]  # noqa: S307
    net = inference_network(bundle)
    x = torch.rand(1, inp["num_channels"], *shape, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        ts_path = export_torchscript(bundle, Path(tmp) / "model.ts")
        ts = torch.jit.load(str(ts_path), map_location="cpu").eval()
        with torch.no_grad():
            eager, scripted = net(x), ts(x)
    if eager.shape != scripted.shape or not torch.allclose(eager, scripted, atol=atol, rtol=1e-4):
        diff = (eager - scripted).abs().max().item() if eager.shape == scripted.shape else float("nan")
        raise BundleCheckError(
            f"{bundle}/models/model.pt: TorchScript output {tuple(scripted.shape)} differs from eager "
            f"{tuple(eager.shape)} (max abs difference {diff:.3g})."
        )


def verify_bundle(
    bundle_dir: str | Path, dataset_dir: str | Path | None = None, on_pass: Callable[[str], object] | None = None
) -> list[str]:
    """Run the checks of :data:`CHECKS` on a bundle, in order; return the names of the checks passed (all of them).

    Args:
        bundle_dir: the bundle folder.
        dataset_dir: the data the train workflow's properties are instantiated with (default: the
            ``verify_dataset_dir`` id of the bundle's ``train.json`` when present, else the bundle's
            ``sample_data/dataset``; a few real cases in the bundle's training layout).
        on_pass: called with each check's name as it passes (the command line prints it).

    Raises:
        BundleCheckError: at the first failing check, naming the file and the problem; its ``check`` is the check's
            name.
    """
    bundle = Path(bundle_dir).resolve()
    if not bundle.is_dir():
        raise BundleCheckError(f"{bundle} is not a folder.")
    with _bundle_code_importable(bundle):
        return _verify(bundle, dataset_dir, on_pass)


@contextmanager
def _bundle_code_importable(bundle: Path) -> Iterator[None]:
    """The bundle's own ``scripts`` package importable while the checks run, as ``python -m monai.bundle run`` makes it
    (the bundle folder on ``sys.path``; a packed bundle's configs say ``$import scripts``); another bundle's
    ``scripts`` already imported in this process is set aside meanwhile, and put back after."""
    def own(name: str) -> bool:
        return name == "scripts" or name.startswith("scripts.")

    saved = {name: sys.modules.pop(name) for name in [n for n in sys.modules if own(n)]}
    sys.path.insert(0, str(bundle))
    try:
        yield
    finally:
        for name in [n for n in sys.modules if own(n)]:
            del sys.modules[name]
        sys.modules.update(saved)
        if str(bundle) in sys.path:
            sys.path.remove(str(bundle))
        importlib.invalidate_caches()


def _verify(bundle: Path, dataset_dir: str | Path | None, on_pass: Callable[[str], object] | None) -> list[str]:
    meta: dict = {}
    steps: dict[str, Callable[[], object]] = {
        "required files": lambda: check_files(bundle),
        "metadata schema and changelog": lambda: meta.update(check_metadata(bundle)),
        "configs parse": lambda: check_configs_parse(bundle),
        "configs stay inside the bundle": lambda: check_config_paths(bundle),
        "workflow properties": lambda: check_properties(bundle, Path(dataset_dir) if dataset_dir else None),
        "network input/output": lambda: check_network_io(bundle, meta),
        "TorchScript round trip": lambda: check_torchscript(bundle, meta),
    }
    passed = []
    for name, _ in CHECKS:
        try:
            steps[name]()
        except BundleCheckError as e:
            e.check = name
            raise
        logger.debug("ok: %s", name)
        passed.append(name)
        if on_pass is not None:
            on_pass(name)
    return passed


check = verify_bundle


# ---------------------------------------------------------------- the command line (python -m tools verify)


def verify_command(bundle_dir: str, dataset_dir: str | None = None) -> str:
    """Run a bundle's offline checks in order, printing each one's name as it passes; exit 1 at the first failure.

    The checks, by name (``tools.commands.verify.CHECKS``):
        required files: the model-zoo layout's files are present (configs, docs, licences, models/model.pt).
        metadata schema and changelog: metadata.json matches MONAI's schema; its version has a changelog entry.
        configs parse: every config parses (overlays merged on top of train.json).
        configs stay inside the bundle: no config string reaches outside the bundle's folder ('../', an absolute
            path, a sibling bundle's name).
        workflow properties: the train and infer workflows have MONAI's required properties.
        network input/output: network_def maps metadata.json's input to its output (channels, dtype, size).
        TorchScript round trip: the exported models/model.pt gives the eager network's output.

    Nothing is written into the bundle (temporary output folder and export file).

    Args:
        bundle_dir: the bundle folder (e.g. bundles/covid19_lesion_ct_rcbunetpp_segmentation).
        dataset_dir: the data the train workflow is instantiated with for the properties check; default the
            bundle's own sample data (its train.json's verify_dataset_dir, else sample_data/dataset).
    """
    logging.basicConfig(level=logging.WARNING)
    try:
        passed = verify_bundle(bundle_dir, dataset_dir, on_pass=lambda name: print(f"ok: {name}", flush=True))
    except BundleCheckError as e:
        print(f"FAILED: {e.check or 'bundle'}: {e}", file=sys.stderr)
        names = [name for name, _ in CHECKS]
        not_run = names[names.index(e.check) + 1:] if e.check in names else names
        if not_run:
            print(f"not run: {', '.join(not_run)}", file=sys.stderr)
        sys.exit(1)
    return f"{bundle_dir}: all {len(passed)} checks passed"
