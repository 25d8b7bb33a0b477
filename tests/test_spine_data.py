"""The spine bundle's data rules: the datalist pairs images and labels by name, the split is by subject and
reproducible, the inference datalist takes volumes, DICOM series and folders of them; label maps other than 0..5 are
refused; Dice, IoU and HD95 per volume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import pytest

from conftest import BUNDLES
from tools.data.spine import (default_eval_split, spine_datalist, spine_inference_datalist, split_by_subject,
                              subject_id)
from tools.errors import InputError
from tools.metrics.volumes import volume_metrics
from tools.input_checks import check_label_map

BUNDLE = BUNDLES / "spine_vertebra_msrunet_segmentation"


def _dataset(root: Path, names, labels=None) -> Path:
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for n in names:
        (root / "images" / n).write_bytes(b"")
    for n in names if labels is None else labels:
        (root / "labels" / n).write_bytes(b"")
    return root


def _items(names):
    return [{"image": f"/d/images/{n}", "label": f"/d/labels/{n}"} for n in names]


def test_datalist_pairs_images_and_labels_by_name_in_natural_order(tmp_path):
    root = _dataset(tmp_path, ["10.nii.gz", "2.nii.gz", "1.nii.gz", "notes.txt"], labels=["10.nii.gz", "2.nii.gz",
                                                                                            "1.nii.gz"])
    dl = spine_datalist(root)
    assert [Path(d["image"]).name for d in dl] == ["1.nii.gz", "2.nii.gz", "10.nii.gz"]
    assert all(Path(d["label"]).parent.name == "labels" and Path(d["label"]).name == Path(d["image"]).name for d in dl)


def test_datalist_names_an_image_without_its_label(tmp_path):
    root = _dataset(tmp_path, ["01.nii.gz", "02.nii.gz"], labels=["01.nii.gz"])
    with pytest.raises(ValueError, match=r"02\.nii\.gz: no label of the same name"):
        spine_datalist(root)


def test_datalist_names_a_missing_labels_folder(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match="labels does not exist"):
        spine_datalist(tmp_path)


def test_twenty_subjects_split_16_4_disjoint_and_reproducible():
    dl = _items([f"{i:02d}.nii.gz" for i in range(1, 21)])
    train, val = split_by_subject(dl, n_val=4, seed=0)
    assert (len(train), len(val)) == (16, 4)
    assert not {subject_id(d) for d in train} & {subject_id(d) for d in val}
    assert split_by_subject(list(reversed(dl)), 4, 0)[1] == sorted(val, key=lambda d: d["image"], reverse=True)
    assert split_by_subject(dl, 4, 1)[1] != val  # the seed matters


def test_the_bundle_validates_on_subjects_11_15_17_19():
    # the split the docs and metadata.json name (seed 0 on subjects 01-20)
    _, val = split_by_subject(_items([f"{i:02d}.nii.gz" for i in range(1, 21)]), 4, 0)
    assert [subject_id(d) for d in val] == ["11", "15", "17", "19"]


def test_every_scan_of_a_subject_lands_on_the_same_side():
    dl = _items(["01.nii.gz", "01_followup.nii.gz", "02.nii.gz", "03.nii.gz", "03_b.nii.gz", "04.nii.gz"])
    for seed in range(10):
        train, val = split_by_subject(dl, 2, seed)
        assert not {subject_id(d) for d in train} & {subject_id(d) for d in val}
        assert len({subject_id(d) for d in val}) == 2


def test_one_subject_trains_and_validates_on_itself_with_a_warning(caplog):
    dl = _items(["17.nii.gz"])
    with caplog.at_level("WARNING"):
        assert split_by_subject(dl, 4, 0) == (dl, dl)
    assert "only one subject (17)" in caplog.text


def test_fewer_subjects_than_n_val_plus_one_keep_one_for_training(caplog):
    train, val = split_by_subject(_items(["a.nii.gz", "b.nii.gz", "c.nii.gz"]), 4, 0)
    assert (len(train), len(val)) == (1, 2)
    assert "2 validate instead of 4" in caplog.text


def test_an_empty_datalist_or_no_validation_is_refused():
    with pytest.raises(ValueError, match="empty"):
        split_by_subject([], 4, 0)
    with pytest.raises(ValueError, match="n_val"):
        split_by_subject(_items(["a.nii.gz", "b.nii.gz"]), 0, 0)


def test_evaluation_defaults_to_the_validation_split_only_on_the_training_data(tmp_path):
    assert default_eval_split(tmp_path / "spine", tmp_path / "spine") == "validation"
    assert default_eval_split(tmp_path / "mine", tmp_path / "spine") == "all"


def test_inference_datalist_takes_a_file_a_series_and_a_folder_of_both(tmp_path):
    series = tmp_path / "in" / "ct_series"
    series.mkdir(parents=True)
    for i in range(2):
        (series / f"{i}.dcm").write_bytes(b"")
    (tmp_path / "in" / "b.nii.gz").write_bytes(b"")
    (tmp_path / "in" / "a.nii").write_bytes(b"")
    (tmp_path / "in" / "readme.txt").write_bytes(b"")
    assert [Path(d["image"]).name for d in spine_inference_datalist(tmp_path / "in")] == ["a.nii", "b.nii.gz",
                                                                                           "ct_series"]
    assert spine_inference_datalist(series) == [{"image": str(series)}]
    assert spine_inference_datalist(tmp_path / "in" / "a.nii") == [{"image": str(tmp_path / "in" / "a.nii")}]


def test_inference_datalist_refuses_a_2d_image_and_an_empty_folder(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"x\.png: not a volume"):
        spine_inference_datalist(tmp_path / "x.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no volume"):
        spine_inference_datalist(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        spine_inference_datalist(tmp_path / "missing.nii.gz")


@pytest.mark.parametrize("values", [np.array([0, 1, 5], np.uint8), np.array([0.0, 1.0], np.float32)])
def test_label_maps_of_integers_0_to_5_are_accepted(values):
    check_label_map(values, 5)


@pytest.mark.parametrize("values, message", [
    (np.array([0, 255], np.uint8), "outside 0..5"),
    (np.array([0, -1], np.int16), "outside 0..5"),
    (np.array([0.0, 0.4, 1.0], np.float32), "fractional"),
    (np.array([0.0, np.nan], np.float32), "NaN"),
])
def test_other_label_values_are_refused(values, message):
    with pytest.raises(InputError, match=message):
        check_label_map(values, 5)


def test_volume_metrics_measure_hd95_in_millimetres():
    gt = np.zeros((20, 20, 10), np.uint8)
    gt[5:10, 5:10, 2:6] = 1
    pred = np.roll(gt, 2, axis=2)  # shifted by 2 voxels along the third axis
    one = volume_metrics(pred, gt, spacing=(1.0, 1.0, 1.0))
    three = volume_metrics(pred, gt, spacing=(1.0, 1.0, 3.0))
    assert one["dice"] == pytest.approx(0.5) and one["iou"] == pytest.approx(1 / 3)
    assert one["hd95"] == pytest.approx(2.0) and three["hd95"] == pytest.approx(6.0)


def test_volume_metrics_of_empty_masks():
    gt = np.zeros((8, 8, 8), np.uint8)
    assert volume_metrics(gt, gt) == {"dice": 1.0, "iou": 1.0, "hd95": 0.0}
    pred = gt.copy()
    pred[2, 2, 2] = 1
    m = volume_metrics(pred, gt)
    assert m["dice"] == 0.0 and math.isnan(m["hd95"])


def test_paper_tables_grid_files_match_their_overlays():
    configs = BUNDLE / "configs"
    for table in ("losses", "ablation"):
        grid = json.loads((configs / "grids" / f"{table}.json").read_text())["variants"]
        overlays = {p.stem: json.loads(p.read_text()) for p in (configs / table).glob("*.json")}
        assert grid == overlays, f"configs/grids/{table}.json differs from configs/{table}/*.json"
    assert set(overlays) == {f"{u}{ca}" for u in ("plain", "residual", "multiscale") for ca in ("", "_ca")}


def _blobs(spacing: float = 1.0):
    from monai.data import MetaTensor

    prob = torch.zeros(1, 40, 40, 60)
    for k in range(5):  # five "vertebrae", 6x6x6 voxels each, separated along the last axis
        prob[0, 10:16, 10:16, 2 + 10 * k: 8 + 10 * k] = 0.9
    prob[0, 35:37, 35:37, 55:57] = 0.8  # a distant false positive of 8 voxels
    return MetaTensor(prob, affine=torch.diag(torch.tensor([spacing, spacing, spacing, 1.0])))


@pytest.mark.parametrize("kwargs", [{"min_component_mm3": 50}, {"keep_largest": 5}])
def test_component_filter_drops_a_small_distant_false_positive_and_keeps_probabilities(kwargs):
    from tools.pipelines.spine import FilterComponentsd

    prob = _blobs()
    out = FilterComponentsd("pred", **kwargs)({"pred": prob})["pred"]
    assert float(out[0, 35:37, 35:37, 55:57].sum()) == 0
    assert torch.equal(out[0, :, :, :50], prob[0, :, :, :50])  # the vertebrae, values as they were


def test_component_filter_measures_in_mm3_from_the_affine_and_is_off_at_zero():
    from tools.pipelines.spine import FilterComponentsd

    coarse = _blobs(spacing=2.0)  # the 8-voxel blob is 64 mm3 at 2 mm
    kept = FilterComponentsd("pred", min_component_mm3=50)({"pred": coarse})["pred"]
    assert float(kept[0, 35:37, 35:37, 55:57].sum()) > 0
    assert torch.equal(FilterComponentsd("pred")({"pred": coarse})["pred"], coarse)
    with pytest.raises(ValueError):
        FilterComponentsd("pred", keep_largest=-1)


def test_part_dice_gives_each_vertebra_its_own_dice_and_blames_the_nearest_for_a_false_positive():
    from tools.metrics.volumes import part_dice

    label = np.zeros((20, 20, 30), dtype=np.uint8)
    label[5:10, 5:10, 2:8] = 1
    label[5:10, 5:10, 12:18] = 2
    parts = {"L1": 1, "L2": 2, "L3": 3}
    perfect = part_dice(label > 0, label, parts)
    assert perfect["dice_L1"] == perfect["dice_L2"] == 1.0 and math.isnan(perfect["dice_L3"])
    pred = label > 0
    pred[5:10, 5:10, 25:28] = True  # a false positive beyond L2
    d = part_dice(pred, label, parts)
    assert d["dice_L1"] == 1.0 and d["dice_L2"] == pytest.approx(2 * 150 / (150 + 225))
    with pytest.raises(ValueError, match="differ in size"):
        part_dice(pred[:, :, :10], label, parts)


def test_component_parts_names_a_fused_neighbour_and_a_missed_vertebra():
    from tools.metrics.volumes import component_parts

    label = np.zeros((20, 20, 40), dtype=np.uint8)
    label[5:10, 5:10, 10:16] = 1
    label[5:10, 5:10, 20:26] = 2
    label[5:10, 5:10, 30:36] = 3
    pred = label > 0
    pred[5:10, 5:10, 4:10] = True  # the vertebra above L1 (unlabelled), fused with L1 into one component
    pred[5:10, 5:10, 30:36] = False
    pred[6:8, 6:8, 31:33] = True  # L3 mostly missed: a small piece
    rows = component_parts(pred, label, {"L1": 1, "L2": 2, "L3": 3})
    assert [r["voxels"] for r in rows] == [300, 150, 8]  # largest first
    fused, l2, piece = rows
    assert (fused["L1"], fused["background"], fused["axis2"]) == (150, 150, (4, 15))
    assert (l2["L2"], l2["L1"], l2["background"]) == (150, 0, 0)
    assert (piece["L3"], piece["axis0"], piece["axis1"]) == (8, (6, 7), (6, 7))
    assert component_parts(np.zeros_like(pred), label, {"L1": 1}) == []
    with pytest.raises(ValueError, match="3D"):
        component_parts(pred[:, :, :10], label, {"L1": 1})


def test_component_filter_keeps_a_split_vertebras_piece_within_the_margin_but_not_a_distant_component():
    from tools.pipelines.spine import FilterComponentsd

    prob = _blobs()
    prob[0, 10:16, 10:16, 45] = 0.0  # split the last vertebra (slices 42-47) at 45: pieces 42-44 and 46-47
    out = FilterComponentsd("pred", keep_largest=5, fragment_margin_mm=2)({"pred": prob})["pred"]
    assert float(out[0, 10:16, 10:16, 46:48].sum()) > 0  # the split piece, 2 mm away, kept
    assert float(out[0, 35:37, 35:37, 55:57].sum()) == 0  # the distant false positive still removed
    without = FilterComponentsd("pred", keep_largest=5)({"pred": prob})["pred"]
    assert float(without[0, 10:16, 10:16, 46:48].sum()) == 0  # without the margin the smaller piece goes


def test_neighbour_slices_stack_a_slab_as_channels_with_the_edges_repeated_and_the_geometry_kept():
    from monai.data import MetaTensor

    from tools.pipelines.spine import NeighbourSlicesd

    volume = MetaTensor(torch.arange(2 * 3 * 6, dtype=torch.float32).reshape(1, 2, 3, 6),
                        affine=torch.diag(torch.tensor([2.0, 1.0, 3.0, 1.0])))
    out = NeighbourSlicesd("image", neighbours=2, step=2)({"image": volume, "label": volume})
    slab = out["image"]
    assert slab.shape == (5, 2, 3, 6) and torch.equal(slab[2], volume[0])  # the middle channel is the volume
    assert slab[:, 0, 0, :].tolist() == [[0, 0, 0, 0, 0, 1], [0, 0, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5],
                                         [2, 3, 4, 5, 5, 5], [4, 5, 5, 5, 5, 5]]
    assert torch.equal(slab.affine, volume.affine) and out["label"] is volume  # geometry kept, label untouched
    assert torch.equal(NeighbourSlicesd("image", neighbours=0)({"image": volume})["image"], volume)
    with pytest.raises(ValueError, match=r"\(1, H, W, D\)"):
        NeighbourSlicesd("image")({"image": torch.zeros(2, 2, 3, 6)})
    with pytest.raises(ValueError, match="step"):
        NeighbourSlicesd("image", step=0)
