"""``python -m tools export``: TorchScript, torch.export (.pt2) and ONNX (onnxruntime) against the eager network."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import BUNDLES
from tools.commands import export as export_mod
from tools.commands.export import FORMATS, ExportError, export_bundle, inference_network, sample_inputs

REPO = Path(__file__).resolve().parents[1]
BUNDLE = BUNDLES / "retinal_vessel_fundus_unetvariants_segmentation"  # the smallest network: fast exports

_LOAD_IN_A_FRESH_PROCESS = """
import sys, torch
from tools.commands.export import load_exported
x = torch.load(sys.argv[1])
with torch.no_grad():
    y = load_exported(sys.argv[2], sys.argv[3])(x)
torch.save(y, sys.argv[4])
"""


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_loads_in_a_fresh_process_and_gives_the_eager_masks(fmt, tmp_path):
    report = export_bundle(BUNDLE, fmt, tmp_path / f"model_{fmt}")
    assert report["mask_disagreement"] <= 0.001 and report["max_abs_prob_diff"] < 1e-3
    assert report["inputs"] and all(not s.startswith("input ") for s in report["inputs"])  # the real sample files
    x, _ = sample_inputs(BUNDLE)
    torch.save(x, tmp_path / "x.pt")
    res = subprocess.run([sys.executable, "-c", _LOAD_IN_A_FRESH_PROCESS, str(tmp_path / "x.pt"), report["file"], fmt,
                          str(tmp_path / "y.pt")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    with torch.no_grad():
        eager = torch.sigmoid(inference_network(BUNDLE)(x)) >= 0.5
    exported = torch.sigmoid(torch.load(tmp_path / "y.pt")) >= 0.5
    assert exported.shape == eager.shape
    assert (exported != eager).float().mean() <= 0.001
    assert set(report["dynamic"]) >= {"batch"}


def test_masks_that_differ_fail_the_export_and_the_command_exits_1(tmp_path, monkeypatch):
    real = export_mod.load_exported
    monkeypatch.setattr(export_mod, "load_exported", lambda path, fmt: (lambda x: -real(path, fmt)(x)))
    with pytest.raises(ExportError, match="differ from the eager"):
        export_bundle(BUNDLE, "torchscript", tmp_path / "m.ts")
    res = subprocess.run([sys.executable, "-m", "tools", "export", str(BUNDLE), "--format", "pickle"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and "unknown export format 'pickle'" in res.stderr


def test_sample_inputs_of_a_volume_bundle_are_slices_at_the_network_size():
    x, sources = sample_inputs(BUNDLES / "spine_vertebra_msrunet_segmentation")
    assert x.ndim == 4 and x.shape[0] == 4 and "slice" in sources[0]
    assert list(x.shape[2:]) == json.loads((BUNDLES / "spine_vertebra_msrunet_segmentation" / "configs" /
                                            "inference.json").read_text())["spatial_size"]
