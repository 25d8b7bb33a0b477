"""Input checks and the lung region of interest used to crop CT volumes."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from tools.transforms import CheckInputd, LungRegiond


def _phantom():
    """(1, 40, 40, 6) HU: air, a soft-tissue body with two lung cavities, a separate 'table' below it."""
    hu = np.full((40, 40, 6), -1000.0, np.float32)
    hu[5:30, 5:35] = 40.0  # body
    hu[8:27, 8:18] = -850.0  # right lung
    hu[8:27, 22:32] = -850.0  # left lung
    hu[33:36, 2:38] = 200.0  # table, not touching the body
    return torch.as_tensor(hu[None])


def test_lung_region_is_the_air_inside_the_body_not_outside_or_table():
    roi = LungRegiond("image", min_voxels=10)({"image": _phantom()})["lung_roi"][0].numpy()
    assert roi[8:27, 8:18].all() and roi[8:27, 22:32].all()
    assert roi.sum() == 2 * 19 * 10 * 6


def test_lung_region_falls_back_to_whole_volume_without_lung(caplog):
    hu = torch.full((1, 10, 10, 3), 40.0)
    roi = LungRegiond("image")({"image": hu})["lung_roi"]
    assert bool(roi.all())
    assert "no lung region found" in caplog.text


def test_check_input_names_file_and_problem():
    img = MetaTensor(torch.zeros(3, 8, 8), meta={"filename_or_obj": "/data/x.png"})
    with pytest.raises(ValueError, match=r"/data/x.png: 'image' has 3 channels"):
        CheckInputd("image", spatial_dims=2, channels={"image": (1,)})({"image": img})
    with pytest.raises(ValueError, match="expects 3D input"):
        CheckInputd("image", spatial_dims=3)({"image": img})
    empty = MetaTensor(torch.zeros(1, 8, 8), meta={"filename_or_obj": "/data/m.png"})
    with pytest.raises(ValueError, match="m.png: mask 'label' is empty"):
        CheckInputd("label", spatial_dims=2, label_keys="label")({"label": empty})
    assert CheckInputd("label", spatial_dims=2, label_keys="label", allow_empty_label=True)({"label": empty})
