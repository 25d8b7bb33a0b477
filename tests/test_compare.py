"""``python -m tools compare``: every variant of a bundle trained the same way, evaluated on the validation split,
tabulated. Runs the ResAttUNet bundle's four variants as tiny networks for one epoch on six sample slices."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tools.commands.compare import TABLE_COLUMNS, CompareError, bundle_variants, compare_variants

from conftest import BUNDLES

BUNDLE = BUNDLES / "covid19_lesion_ct_resattunet_segmentation"
SAMPLE = BUNDLES / "covid19_lesion_ct_rcbunetpp_segmentation" / "sample_data" / "dataset"
VARIANTS = ["resattunet", "unet", "res_unet", "attention_unet"]
TINY = {
    "network_def#layers": [1, 1, 1, 1],
    "network_def#channels": [8, 16, 32, 64],
    "network_def#decoder_channels": [32, 16, 8, 8],
    "spatial_size": [64, 64],
    "val_interval": 1,
    "val_count": 2,
    "train#handlers#-1#persist": False,
}


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    result = compare_variants(BUNDLE, variants=VARIANTS, output_dir=out, max_epochs=1, dataset_dir=SAMPLE,
                              overrides=TINY)
    return out, result


def test_the_bundles_variants_are_its_network_and_its_baseline_overlays():
    variants = bundle_variants(BUNDLE)
    assert list(variants) == ["resattunet", "attention_unet", "res_unet", "unet"]
    assert variants["resattunet"] is None and variants["unet"].name == "unet.json"


def test_every_variant_is_trained_evaluated_and_tabulated(compared):
    out, result = compared
    assert [r["variant"] for r in result["variants"]] == VARIANTS
    for r in result["variants"]:
        assert (out / r["variant"] / "models" / "model.pt").is_file()
        metrics = json.loads((out / r["variant"] / "metrics.json").read_text())
        assert metrics == r["metrics"] and metrics["n_images"] == 2  # the validation split (val_count 2)
        assert r["epochs"] == 1 and r["best_val_epoch"] == 1 and r["best_val_metric"]["name"] == "val_iou"
        assert r["settings"]["overrides"] == TINY and r["settings"]["max_epochs"] == 1
    params = {r["variant"]: r["params"] for r in result["variants"]}
    # the overlays really change the network: gates and projection shortcuts add parameters
    assert params["resattunet"] > params["res_unet"] > params["unet"]
    assert params["resattunet"] > params["attention_unet"] > params["unet"]
    assert json.loads((out / "comparison.json").read_text())["variants"] == result["variants"]
    table = (out / "comparison.md").read_text()
    header = "| " + " | ".join(title for title, _ in TABLE_COLUMNS) + " |"
    assert header in table and "dice (F1)" in header and "best val epoch" in header
    rows = [line for line in table.splitlines() if line.startswith("| ") and line != header]
    assert [row.split(" | ")[0].strip("| ") for row in rows] == VARIANTS


def test_rerun_with_reuse_keeps_unchanged_variants(compared):
    out, result = compared
    ckpt = out / "unet" / "models" / "model.pt"
    before = ckpt.stat().st_mtime_ns
    again = compare_variants(BUNDLE, variants=["unet"], output_dir=out, max_epochs=1, dataset_dir=SAMPLE,
                             overrides=TINY, reuse=True)
    assert ckpt.stat().st_mtime_ns == before
    assert again["variants"][0] == next(r for r in result["variants"] if r["variant"] == "unet")


def test_unknown_variant_and_too_few_epochs_are_refused(tmp_path):
    with pytest.raises(CompareError, match="unknown variant.*nope.*resattunet, attention_unet, res_unet, unet"):
        compare_variants(BUNDLE, variants=["nope"], output_dir=tmp_path)
    with pytest.raises(CompareError, match="max_epochs 1 < val_interval 5"):
        compare_variants(BUNDLE, variants=["unet"], output_dir=tmp_path, max_epochs=1, dataset_dir=SAMPLE,
                         overrides={k: v for k, v in TINY.items() if k != "val_interval"})


def test_cli_exits_non_zero_naming_the_unknown_variant(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tools", "compare", str(BUNDLE), "--variants", "['nope']", "--output_dir", str(tmp_path)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 1
    assert "FAILED:" in proc.stderr and "nope" in proc.stderr
