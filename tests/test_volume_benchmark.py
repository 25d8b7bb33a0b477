"""``python -m tools benchmark B --volume_shape X,Y,Z``: a full-size CT through a volume bundle's CT inference."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import BUNDLES
from tools.commands.volume_benchmark import VolumeBenchmarkError, benchmark_volume, full_size_ct

REPO = Path(__file__).resolve().parents[1]
SAMPLE_CT = BUNDLES / "covid19_lesion_ct_rcbunetpp_segmentation" / "sample_data" / "ct" / "example_ct_sm.nii.gz"


def test_full_size_ct_keeps_the_field_of_view_and_the_hu(tmp_path):
    src = nib.load(SAMPLE_CT)
    out = nib.load(full_size_ct(SAMPLE_CT, (244, 202, 60), tmp_path / "big.nii"))
    assert out.shape == (244, 202, 60) and out.get_data_dtype() == np.int16

    def box(img):  # world positions of the outer faces of the first and last voxels
        lo = img.affine @ np.array([-0.5, -0.5, -0.5, 1.0])
        hi = img.affine @ np.array([*(np.array(img.shape[:3]) - 0.5), 1.0])
        return np.sort(np.stack([lo[:3], hi[:3]]), axis=0)

    np.testing.assert_allclose(box(out), box(src), atol=1e-3)
    a, b = np.asarray(src.dataobj, dtype=float), np.asarray(out.dataobj, dtype=float)
    assert abs(a.mean() - b.mean()) < 10 and b.min() >= a.min() - 1 and b.max() <= a.max() + 1
    with pytest.raises(VolumeBenchmarkError, match="three positive"):
        full_size_ct(SAMPLE_CT, (512, 512), tmp_path / "bad.nii")


def test_a_512x512x64_volume_runs_with_progress_and_bounded_memory(tmp_path):
    bundle = BUNDLES / "covid19_lesion_ct_rcbunetpp_segmentation"
    res = subprocess.run([sys.executable, "-m", "tools", "benchmark", str(bundle), "--volume_shape", "512,512,64",
                          "--output_json", str(tmp_path / "r.json")], cwd=REPO, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "100%|" in res.stderr and ("it/s]" in res.stderr or "s/it]" in res.stderr)  # tqdm's bar with its rate/ETA
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["volume_shape"] == result["mask_shape"] == [512, 512, 64]
    assert 0 < result["peak_memory_mib"] < 8192


def test_a_bundle_without_volumes_is_refused():
    with pytest.raises(VolumeBenchmarkError, match="takes no CT volumes"):
        benchmark_volume(BUNDLES / "polyp_endoscopy_iacnn_segmentation", (64, 64, 8))
