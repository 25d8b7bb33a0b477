"""The decisions the bundle configs used to make in ``$`` expressions, now named functions."""

from __future__ import annotations

import pytest
import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss

from custom_networks.nets.rcb_unetplusplus import StackedHeadsLoss, mean_of_heads
from tools.data import by_input_kind, evaluation_items, split_fraction
from tools.evaluation import binary_metrics, thresholded_binary_metrics

ITEMS = [{"image": f"{i}.png", "label": f"{i}_mask.png"} for i in range(10)]


def test_evaluation_items_are_the_folder_or_the_training_validation_split():
    calls = []

    def make_split():
        calls.append(1)
        return ITEMS[3:], ITEMS[:3]

    assert evaluation_items(ITEMS, make_split, "all") == ITEMS and not calls  # a folder too small to split works
    assert evaluation_items(ITEMS, make_split, "validation") == ITEMS[:3]
    with pytest.raises(ValueError, match="eval_split must be 'all' or 'validation'"):
        evaluation_items(ITEMS, make_split, "test")


def test_split_fraction_rounds_and_keeps_at_least_one_validation_item():
    train, val = split_fraction(ITEMS, 0.25, seed=0)
    assert len(val) == 2 and len(train) == 8 and not {d["image"] for d in val} & {d["image"] for d in train}
    assert len(split_fraction(ITEMS[:3], 0.01)[1]) == 1
    with pytest.raises(ValueError, match="val_fraction"):
        split_fraction(ITEMS, 1.0)


def test_by_input_kind_chooses_the_volume_path_for_nifti_and_dicom_folders(tmp_path):
    (tmp_path / "ct.nii.gz").write_bytes(b"")
    (tmp_path / "slice.png").write_bytes(b"")
    assert by_input_kind(tmp_path / "ct.nii.gz", slices="2d", volume="3d") == "3d"
    assert by_input_kind(tmp_path / "slice.png", slices="2d", volume="3d") == "2d"


def test_thresholded_binary_metrics_binarise_at_the_threshold():
    prob = torch.tensor([[0.2, 0.6], [0.5, 0.9]]).numpy()
    gt = torch.tensor([[0, 1], [1, 1]]).numpy().astype(bool)
    assert thresholded_binary_metrics(prob, gt, 0.5) == binary_metrics(prob >= 0.5, gt)
    assert thresholded_binary_metrics(prob, gt, 0.7)["sensitivity"] == pytest.approx(1 / 3)


def test_stacked_heads_loss_equals_deep_supervision_loss_on_the_list_of_heads():
    torch.manual_seed(0)
    pred, label = torch.randn(2, 4, 1, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).float()
    ds = DeepSupervisionLoss(DiceCELoss(sigmoid=True), weight_mode="equal")
    assert torch.allclose(StackedHeadsLoss(ds)(pred, label), ds(list(pred.unbind(1)), label))


def test_mean_of_heads_averages_stacked_heads_and_leaves_one_head_alone():
    heads = torch.randn(4, 1, 8, 8)
    assert torch.allclose(mean_of_heads(heads), heads.mean(0))
    one = heads[0]
    assert mean_of_heads(one) is one
    assert mean_of_heads(torch.randn(4, 1, 8, 8, 8), spatial_dims=3).shape == (1, 8, 8, 8)
