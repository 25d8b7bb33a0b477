"""Properties on random inputs (hypothesis): the CT-volume chain and its inversion give back any input's grid, and
the binary metrics keep their definitions. A few dozen examples each, so that they stay fast."""

from __future__ import annotations

import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from monai.data import MetaTensor
from monai.transforms import Invertd

from tools.evaluation import binary_metrics
from tools.pipelines.ct import LUNG_REGION_KEY, ct_volume_preprocessing


@st.composite
def ct_grids(draw):
    """A small CT-like volume (air around a body with two lungs) on a random grid: shape, spacing, axis order and
    directions, origin."""
    shape = tuple(draw(st.integers(12, 28)) for _ in range(3))
    spacing = [draw(st.floats(0.5, 5.0)) for _ in range(3)]
    order = draw(st.permutations([0, 1, 2]))
    signs = [draw(st.sampled_from([-1.0, 1.0])) for _ in range(3)]
    affine = np.eye(4)
    for voxel_axis, world_axis in enumerate(order):
        affine[world_axis, voxel_axis] = signs[voxel_axis] * spacing[voxel_axis]
    affine[:3, 3] = [draw(st.floats(-300.0, 300.0)) for _ in range(3)]
    hu = np.full(shape, -1000.0, np.float32)
    x, y, z = (s // 6 for s in shape)
    hu[x:-x, y:-y, :] = 40.0  # body
    hu[x + 1 : shape[0] // 2 - 1, y + 1 : -y - 1, 1:-1] = -850.0  # lungs
    hu[shape[0] // 2 + 1 : -x - 1, y + 1 : -y - 1, 1:-1] = -850.0
    return hu, affine, draw(st.booleans())


@settings(max_examples=20, deadline=None)
@given(ct_grids())
def test_the_ct_volume_chain_inverts_to_the_inputs_shape_and_affine(case):
    hu, affine, lung_crop = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ct.nii.gz"
        nib.save(nib.Nifti1Image(hu, affine), path)
        pre = ct_volume_preprocessing([16, 16], [-1100, 250], "PLS", lung_crop=lung_crop)
        d = pre({"image": str(path)})
        d["pred"] = MetaTensor(torch.rand_like(d["image"]), meta=d["image"].meta)
        d = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False, to_tensor=True)(d)
    pred = d["pred"]
    assert tuple(pred.shape) == (1, *hu.shape)
    np.testing.assert_allclose(np.asarray(pred.affine), affine, atol=1e-4)
    if lung_crop:
        assert LUNG_REGION_KEY in d


masks = arrays(bool, st.tuples(st.integers(1, 12), st.integers(1, 12)))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_binary_metrics_keep_their_definitions_on_random_masks(data):
    pred = data.draw(masks)
    gt = data.draw(arrays(bool, pred.shape))
    m, swapped = binary_metrics(pred, gt), binary_metrics(gt, pred)
    tp, fp, fn = int((pred & gt).sum()), int((pred & ~gt).sum()), int((~pred & gt).sum())
    dice = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    assert np.isclose(m["dice"], dice)
    assert np.isclose(m["iou"], m["dice"] / (2 - m["dice"]))
    assert np.isclose(m["dice"], swapped["dice"]) and np.isclose(m["iou"], swapped["iou"])
    assert np.isclose(m["accuracy"], swapped["accuracy"])
    if tp + fp and tp + fn:  # precision and sensitivity trade places when prediction and truth do
        assert np.isclose(m["precision"], swapped["sensitivity"])
    for name, value in m.items():
        assert np.isnan(value) or 0.0 <= value <= 1.0, name
