"""Input checks that name the file (the lung mask of CT volumes is tested in test_lung_mask.py)."""

import pytest
import torch
from monai.data import MetaTensor

from tools.transforms import CheckInputd


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
