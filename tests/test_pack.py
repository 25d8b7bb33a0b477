"""``python -m tools pack``: every bundle packs into a self-contained copy in the model zoo's layout (its code under
``scripts/``, nothing left referring to the project's packages, metadata listing its packages, JSON as the zoo's
pre-commit writes it), whose code imports and whose inference workflow builds with the project's packages made
unimportable; the copy passes ``tools verify`` (slow); and, end to end (slow), the packed RCB-UNet++ bundle run in a
fresh virtual environment holding only the packages its metadata lists gives the repository bundle's masks."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tools.commands.pack import PackError, code_closure, pack_bundle, pretty_json, rewrite_references
from tools.commands.verify import check_config_paths, check_metadata, verify_bundle

from conftest import BUNDLES

NAMES = sorted(p.name for p in BUNDLES.iterdir() if (p / "configs").is_dir())
RCB = "covid19_lesion_ct_rcbunetpp_segmentation"
SMALL = "retinal_vessel_fundus_unetvariants_segmentation"  # the smallest weights: cheapest to pack again
PROJECT_REFERENCE = re.compile(r"(?<![\w.])(?:tools|custom_networks)\.[A-Za-z_]")


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("zoo")
    return {name: Path(pack_bundle(BUNDLES / name, out)["bundle"]) for name in NAMES}


def _hook_format(text: str) -> str:
    """What pre-commit-hooks' ``pretty-format-json --autofix --no-sort-keys --indent=4`` (the zoo's
    .pre-commit-config.yaml) writes: ``_get_pretty_format`` with indent "    ", ensure_ascii, keys kept in order."""
    return json.dumps(json.loads(text), indent="    ", ensure_ascii=True) + "\n"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["OMP_NUM_THREADS"] = "1"
    return env


# ------------------------------------------------------------------------------------------------------ layout


@pytest.mark.parametrize("name", NAMES)
def test_the_packed_bundle_has_the_zoo_layout_and_only_model_files(packed, name):
    src, dst = BUNDLES / name, packed[name]
    assert dst.name == name
    for rel in ("LICENSE", "configs/metadata.json", "configs/inference.json", "configs/logging.conf",
                "docs/README.md", "docs/data_license.txt", "models/model.pt", "scripts/__init__.py"):
        assert (dst / rel).is_file(), rel
    assert (dst / "LICENSE").read_bytes() == (src / "LICENSE").read_bytes()
    assert sorted(p.name for p in (dst / "models").iterdir()) == sorted(
        p.name for p in (src / "models").glob("*.pt") if not p.name.startswith("resume_"))
    assert (dst / "models" / "model.pt").read_bytes() == (src / "models" / "model.pt").read_bytes()
    assert {p.relative_to(dst / "configs") for p in (dst / "configs").rglob("*") if p.is_file()} == {
        p.relative_to(src / "configs") for p in (src / "configs").rglob("*") if p.is_file()}
    assert {p.relative_to(dst / "sample_data") for p in (dst / "sample_data").rglob("*") if p.is_file()} == {
        p.relative_to(src / "sample_data") for p in (src / "sample_data").rglob("*") if p.is_file()}
    assert sorted(p.name for p in dst.iterdir()) == ["LICENSE", "configs", "docs", "models", "sample_data", "scripts"]
    assert not list(dst.rglob(".partial-*")) and not list(dst.parent.glob(".partial-*"))


@pytest.mark.parametrize("name", NAMES)
def test_nothing_in_the_packed_bundle_refers_to_the_project_packages(packed, name):
    dst = packed[name]
    for path in sorted(dst.rglob("*")):
        if path.suffix not in (".py", ".json"):
            continue
        text = path.read_text()
        assert not PROJECT_REFERENCE.findall(text), f"{path.relative_to(dst)}: {PROJECT_REFERENCE.findall(text)}"
        if path.suffix == ".py":
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.Import):
                    assert not {a.name.split(".")[0] for a in node.names} & {"tools", "custom_networks"}
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    assert (node.module or "").split(".")[0] not in ("tools", "custom_networks"), path
    inference = json.loads((dst / "configs" / "inference.json").read_text())
    assert "$import scripts" in inference["imports"] and "$import tools" not in inference["imports"]
    assert inference["network_def"]["_target_"].startswith("scripts.custom_networks.nets.")
    assert check_config_paths(dst) is None  # nothing reaches outside the folder either


def test_only_the_modules_a_bundle_uses_are_copied(packed):
    scripts = packed[RCB] / "scripts"
    nets = scripts / "custom_networks" / "nets"
    assert sorted(p.name for p in nets.glob("*.py")) == ["__init__.py", "rcb_unetplusplus.py"]
    assert "from .rcb_unetplusplus import RCBUNetPlusPlus\n" == nets.joinpath("__init__.py").read_text()
    assert not (scripts / "tools" / "cli.py").exists() and not (scripts / "tools" / "pack.py").exists()
    assert (scripts / "tools" / "lung_mask.py").is_file()  # the CT pipeline's, reached through tools.pipelines.ct
    init = (scripts / "tools" / "pipelines" / "__init__.py").read_text()
    assert "import rgb" not in init and "pipelines.rgb import" not in init
    assert "from scripts.tools.pipelines.ct import" in init
    assert not (scripts / "tools" / "pipelines" / "rgb.py").exists()
    assert "from . import custom_networks, tools" in (scripts / "__init__.py").read_text()


def test_a_package_init_is_cut_down_to_the_imports_used():
    closure = code_closure(BUNDLES / RCB)
    assert closure.init_names["custom_networks.nets"] == {"RCBUNetPlusPlus", "rcb_unetplusplus"}
    assert "custom_networks.nets.resattunet" not in closure.modules
    assert {"tools.runner", "tools.checkpoints", "tools.pipelines.ct", "tools.data.inputs"} <= closure.modules


@pytest.mark.parametrize("name", NAMES)
def test_every_json_file_is_formatted_as_the_zoo_pre_commit_hook_writes_it(packed, name):
    files = sorted(packed[name].rglob("*.json"))
    assert files
    for path in files:
        text = path.read_text()
        assert text == _hook_format(text) == pretty_json(json.loads(text)), path


@pytest.mark.parametrize("name", NAMES)
def test_text_files_end_with_one_newline_and_have_no_trailing_spaces(packed, name):
    # the zoo's pre-commit also runs end-of-file-fixer and trailing-whitespace
    for path in sorted(packed[name].rglob("*")):
        text_file = path.suffix in (".py", ".json", ".md", ".txt", ".conf") or path.name == "LICENSE"
        if not text_file or not path.stat().st_size:
            continue
        text = path.read_text()
        assert text.endswith("\n") and not text.endswith("\n\n"), path
        assert not [n for n, line in enumerate(text.splitlines(), 1) if line != line.rstrip()], path


# ---------------------------------------------------------------------------------------------------- metadata


def _third_party_imports(scripts: Path) -> set[str]:
    names = set()
    for path in scripts.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names.add((node.module or "").split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "scripts"}


@pytest.mark.parametrize("name", NAMES)
def test_metadata_lists_every_package_the_code_needs_and_no_seg_bundles(packed, name):
    src = json.loads((BUNDLES / name / "configs" / "metadata.json").read_text())
    meta = check_metadata(packed[name])  # still MONAI's schema
    required = meta["required_packages_version"]
    canonical = {re.sub(r"[-_.]+", "-", d).lower() for d in required}
    assert "seg-bundles" not in canonical and "seg-bundles" not in json.dumps(meta.get("optional_packages_version", {}))
    assert "fire" in canonical  # python -m monai.bundle needs it
    distributions = importlib.metadata.packages_distributions()
    for module in _third_party_imports(packed[name] / "scripts") - {"torch", "monai", "numpy"}:
        assert {re.sub(r"[-_.]+", "-", d).lower() for d in distributions[module]} & canonical, module
    for dist in src["required_packages_version"]:  # what the bundle listed (MONAI's readers, handlers) is kept
        assert dist == "seg-bundles" or dist in required
    for dist, version in required.items():
        assert version == importlib.metadata.version(dist)
    for key in ("monai_version", "pytorch_version", "numpy_version", "version", "network_data_format"):
        assert meta[key] == src[key]


def test_packages_are_the_installed_distributions_of_the_imports():
    from tools.commands.pack import required_packages

    out = required_packages({"PIL", "ignite", "skimage", "os", "torch", "monai", "numpy", "tools"},
                            {"seg-bundles": "0.1.0", "nibabel": "0.0.1", "not-installed-anywhere": "1.2.3"})
    assert list(out)[:2] == ["nibabel", "not-installed-anywhere"]  # listed first, in their order
    assert out["nibabel"] == importlib.metadata.version("nibabel") and out["not-installed-anywhere"] == "1.2.3"
    assert {"pillow", "pytorch-ignite", "scikit-image", "fire"} <= set(out)
    assert not {"seg-bundles", "torch", "monai", "numpy", "os", "tools"} & set(out)


# ------------------------------------------------------------------------------------------------------ rewrite


@pytest.mark.parametrize("text, python, expected", [
    ("$import tools", False, "$import scripts"),
    ("$import tools.training_options", False, "$import scripts.tools.training_options"),
    ("$tools.data.inference_datalist(@input)", False, "$scripts.tools.data.inference_datalist(@input)"),
    ("custom_networks.nets.RCBUNetPlusPlus", False, "scripts.custom_networks.nets.RCBUNetPlusPlus"),
    ("python -m tools benchmark", False, "python -m tools benchmark"),
    ("monai.tools.x and my_tools.x", False, "monai.tools.x and my_tools.x"),
    ("from tools.io import atomic_path\n", True, "from scripts.tools.io import atomic_path\n"),
    ("from tools import data\n", True, "from scripts.tools import data\n"),
    ("import tools.io\ntools.io.x()\n", True, "import scripts.tools.io\nscripts.tools.io.x()\n"),
    ("    import custom_networks\n", True, "    import scripts.custom_networks\n"),
    ("from . import tools\n", True, "from . import tools\n"),
])
def test_references_are_moved_under_scripts(text, python, expected):
    assert rewrite_references(text, python=python) == expected


# ------------------------------------------------------------------------------------ without the project's code


def test_the_packed_code_imports_and_the_inference_workflow_builds_without_the_project(packed, tmp_path):
    # one interpreter for every bundle (each bundle's scripts package is dropped before the next one's); the project's
    # packages are made unimportable, so any reference left to them fails here
    script = textwrap.dedent("""
        import importlib, json, sys
        from pathlib import Path
        sys.modules["tools"] = None
        sys.modules["custom_networks"] = None
        from monai.bundle import ConfigParser
        for bundle in map(Path, json.loads(sys.argv[1])):
            for name in [n for n in sys.modules if n == "scripts" or n.startswith("scripts.")]:
                del sys.modules[name]
            sys.path.insert(0, str(bundle))
            for path in sorted((bundle / "scripts").rglob("*.py")):
                parts = path.relative_to(bundle).with_suffix("").parts
                importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
            parser = ConfigParser()
            parser.read_config(str(bundle / "configs" / "inference.json"))
            parser["bundle_root"] = str(bundle)
            parser["output_dir"] = sys.argv[2]
            evaluator = parser.get_parsed_content("evaluator")
            assert len(evaluator.data_loader.dataset) > 0, bundle
            assert all(m.__file__.startswith(str(bundle)) for n, m in sys.modules.items()
                       if n.startswith("scripts") and getattr(m, "__file__", None))
            sys.path.remove(str(bundle))
            print("built", bundle.name, type(evaluator).__name__)
    """)
    bundles = [str(packed[name]) for name in NAMES]
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(bundles), str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("built ")] == NAMES


# ------------------------------------------------------------------------------------------ destination folder


def test_an_existing_destination_is_refused_unless_overwrite(tmp_path):
    first = Path(pack_bundle(BUNDLES / SMALL, tmp_path)["bundle"])
    (first / "marker").write_text("from the first run")
    with pytest.raises(PackError, match="exists; it is not replaced without --overwrite true"):
        pack_bundle(BUNDLES / SMALL, tmp_path)
    assert (first / "marker").is_file()
    pack_bundle(BUNDLES / SMALL, tmp_path, overwrite=True)
    assert not (first / "marker").exists() and (first / "configs" / "metadata.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [SMALL]  # no temporary folder left


def test_a_failed_pack_leaves_nothing_and_keeps_the_previous_copy(tmp_path, monkeypatch):
    import tools.commands.pack

    def broken(bundle, out):
        (out / "configs").mkdir()
        (out / "configs" / "half_written.json").write_text("{")
        raise OSError("disk full")

    monkeypatch.setattr(tools.commands.pack, "_build", broken)
    with pytest.raises(OSError, match="disk full"):
        pack_bundle(BUNDLES / SMALL, tmp_path)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / SMALL).mkdir()
    (tmp_path / SMALL / "previous").write_text("kept")
    with pytest.raises(OSError, match="disk full"):
        pack_bundle(BUNDLES / SMALL, tmp_path, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == [SMALL] and (tmp_path / SMALL / "previous").is_file()


def test_packing_into_the_bundle_itself_or_a_non_bundle_is_refused(tmp_path):
    with pytest.raises(PackError, match="into the bundle itself"):
        pack_bundle(BUNDLES / SMALL, BUNDLES)
    with pytest.raises(PackError, match="is it a bundle folder"):
        pack_bundle(tmp_path, tmp_path / "out")


def test_cli_refuses_an_existing_destination_with_a_message(tmp_path):
    (tmp_path / SMALL).mkdir()
    proc = subprocess.run([sys.executable, "-m", "tools", "pack", str(BUNDLES / SMALL), "--output_dir", str(tmp_path)],
                          capture_output=True, text=True, env=_env())
    assert proc.returncode == 1
    assert proc.stderr.startswith("FAILED: ") and "--overwrite true" in proc.stderr
    assert list((tmp_path / SMALL).iterdir()) == []


# ---------------------------------------------------------------------------------------------------- slow ones


# in-process verify takes about 2 s a bundle here: RCB-UNet++'s (the end-to-end test's bundle) is in the fast loop, the
# others are marked slow like the rest of verify's workflow tests
@pytest.mark.parametrize("name", [n if n == RCB else pytest.param(n, marks=pytest.mark.slow) for n in NAMES])
def test_verify_passes_on_the_packed_bundle(packed, name):
    assert len(verify_bundle(packed[name])) == 7


_NO_INDEX = ("(from versions: none)", "Temporary failure in name resolution", "Failed to establish a new connection",
             "Network is unreachable", "NewConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
             "Name or service not known", "No route to host", "Could not fetch URL")


def _pip_install(python: Path, *requirements: str) -> None:
    proc = subprocess.run([str(python), "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
                           "--no-compile", *requirements], capture_output=True, text=True, env=_env(), timeout=1800)
    if proc.returncode:
        out = proc.stdout + proc.stderr
        tail = "\n".join(out.strip().splitlines()[-5:])
        if any(marker in out for marker in _NO_INDEX):
            pytest.skip(f"pip could not reach a package index for {' '.join(requirements)}:\n{tail}")
        pytest.fail(f"pip install {' '.join(requirements)} failed:\n{tail}")


def _infer(python: str | Path, cwd: Path, config_dir: str, out: Path, *args: str) -> None:
    proc = subprocess.run([str(python), "-m", "monai.bundle", "run", "--config_file", f"{config_dir}/inference.json",
                           *args, "--output_dir", str(out)], capture_output=True, text=True, cwd=cwd, env=_env(),
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_the_packed_bundle_runs_in_a_fresh_venv_with_only_its_listed_packages_and_gives_the_same_masks(tmp_path,
                                                                                                       request):
    # about 1.5 min on 2 busy CPU cores with pip's cache warm (the torch wheel is local); the venv (2.7 GB) is removed
    import nibabel as nib
    import numpy as np
    from PIL import Image

    bundle = Path(pack_bundle(BUNDLES / RCB, tmp_path / "zoo")["bundle"])
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    venv = tmp_path / "venv"
    request.addfinalizer(lambda: shutil.rmtree(venv, ignore_errors=True))
    proc = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, env=_env())
    if proc.returncode:
        pytest.skip(f"could not create a virtual environment: {proc.stderr.strip()[-500:]}")
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    torch_pin = f"torch=={meta['pytorch_version']}"
    _pip_install(python, torch_pin)  # first and pinned: an unpinned torch pulls several GB of CUDA packages
    _pip_install(python, torch_pin, f"numpy=={meta['numpy_version']}", f"monai=={meta['monai_version']}",
                 *(f"{dist}=={version}" for dist, version in meta["required_packages_version"].items()))
    check = subprocess.run([str(python), "-c", "import importlib.util as u, sys; "
                            "sys.exit(any(u.find_spec(n) for n in ('tools', 'custom_networks', 'seg_bundles')))"],
                           cwd=bundle, env=_env())
    assert check.returncode == 0, "the project's packages are importable in the fresh environment"

    ct = "sample_data/ct/example_ct_sm.nii.gz"
    # the packed bundle from its own folder, as the zoo runs it; the repository's with this interpreter
    _infer(python, bundle, "configs", tmp_path / "packed_slices")
    _infer(python, bundle, "configs", tmp_path / "packed_ct", "--input", ct)
    repo = BUNDLES / RCB
    _infer(sys.executable, tmp_path, str(repo / "configs"), tmp_path / "repo_slices", "--bundle_root", str(repo))
    _infer(sys.executable, tmp_path, str(repo / "configs"), tmp_path / "repo_ct", "--bundle_root", str(repo),
           "--input", str(repo / ct))

    masks = sorted(p.name for p in (tmp_path / "repo_slices").iterdir())
    assert len(masks) == 6 and sorted(p.name for p in (tmp_path / "packed_slices").iterdir()) == masks
    for name in masks:
        a, b = tmp_path / "repo_slices" / name, tmp_path / "packed_slices" / name
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b))), name
        assert a.read_bytes() == b.read_bytes(), name
    (a,), (b,) = (tmp_path / "repo_ct").iterdir(), (tmp_path / "packed_ct").iterdir()
    assert a.name == b.name
    va, vb = nib.load(a), nib.load(b)
    assert np.array_equal(np.asarray(va.dataobj), np.asarray(vb.dataobj)) and np.asarray(va.dataobj).any()
    assert np.array_equal(va.affine, vb.affine)
