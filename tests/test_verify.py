"""``python -m tools verify`` passes on the shipped bundles and fails, naming the problem, on broken copies."""

import json
import shutil
import subprocess
import sys

import pytest

from tools.commands.verify import CHECKS, BundleCheckError, verify_bundle

from conftest import BUNDLES

BUNDLE = BUNDLES / "covid19_lesion_ct_rcbunetpp_segmentation"


@pytest.fixture
def bundle_copy(tmp_path):
    dst = tmp_path / BUNDLE.name
    shutil.copytree(BUNDLE, dst, ignore=shutil.ignore_patterns("eval", "*.ts", "resume_*"))
    return dst


def _edit_metadata(bundle, edit):
    path = bundle / "configs" / "metadata.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def test_shipped_bundle_passes_every_check():
    assert verify_bundle(BUNDLE) == [
        "required files", "metadata schema and changelog", "configs parse", "configs stay inside the bundle",
        "workflow properties", "network input/output", "TorchScript round trip",
    ]


def test_verify_writes_nothing_into_the_bundle(bundle_copy):
    before = sorted(p for p in bundle_copy.rglob("*") if "__pycache__" not in p.parts)
    verify_bundle(bundle_copy)
    assert sorted(p for p in bundle_copy.rglob("*") if "__pycache__" not in p.parts) == before


def test_a_config_reaching_into_a_sibling_folder_fails_naming_the_check(bundle_copy):
    path = bundle_copy / "configs" / "inference.json"
    config = json.loads(path.read_text())
    config["input"] = "$@bundle_root + '/../other_bundle/sample_data/dataset/Imgs'"
    path.write_text(json.dumps(config))
    with pytest.raises(BundleCheckError, match=r"configs/inference\.json: input: .*/\.\./other_bundle") as err:
        verify_bundle(bundle_copy)
    assert err.value.check == "configs stay inside the bundle"


def test_missing_weights_are_named(bundle_copy):
    (bundle_copy / "models" / "model.pt").unlink()
    with pytest.raises(BundleCheckError, match="models/model.pt"):
        verify_bundle(bundle_copy)


def test_version_without_changelog_entry_fails(bundle_copy):
    _edit_metadata(bundle_copy, lambda m: m.update(version="9.9.9"))
    with pytest.raises(BundleCheckError, match="9.9.9 has no entry in 'changelog'"):
        verify_bundle(bundle_copy)


def test_metadata_against_schema_names_the_missing_field(bundle_copy):
    _edit_metadata(bundle_copy, lambda m: m.pop("numpy_version"))
    with pytest.raises(BundleCheckError, match="numpy_version"):
        verify_bundle(bundle_copy)


def test_network_whose_output_shrinks_is_caught(bundle_copy):
    # channels and dtype are right, so MONAI's verify_net_in_out passes; the spatial check must not
    path = bundle_copy / "configs" / "inference.json"
    config = json.loads(path.read_text())
    config["network_def"] = {"_target_": "torch.nn.Conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": 3}
    path.write_text(json.dumps(config))
    with pytest.raises(BundleCheckError, match=r"network_def maps input \(1, 1, 32, 32\) to \(1, 1, 30, 30\)"):
        verify_bundle(bundle_copy)


def test_cli_exits_non_zero_with_message(bundle_copy):
    (bundle_copy / "LICENSE").unlink()
    proc = subprocess.run([sys.executable, "-m", "tools", "verify", str(bundle_copy)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "FAILED: required files:" in proc.stderr and "LICENSE" in proc.stderr
    assert "not run: metadata schema and changelog, configs parse" in proc.stderr


def test_cli_prints_each_check_by_name_as_it_passes(bundle_copy):
    proc = subprocess.run([sys.executable, "-m", "tools", "verify", str(bundle_copy)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [line for line in proc.stdout.splitlines() if line.startswith("ok: ")] == [
        f"ok: {name}" for name, _ in CHECKS
    ]
