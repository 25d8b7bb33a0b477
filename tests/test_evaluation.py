"""Threshold metrics against hand-computed values, and the handler that writes metrics.json / per_image.csv."""

import csv
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from tools.evaluation import SegmentationMetricsSaver, binary_metrics, image_metrics
from tools.io import atomic_write_text

# 4x4 ground truth with 4 foreground pixels; prediction hits 3, adds 1 false positive: TP 3, FP 1, FN 1, TN 11.
GT = np.zeros((4, 4), bool)
GT[0, :4] = True
PRED = np.zeros((4, 4), bool)
PRED[0, :3] = True
PRED[3, 3] = True


def test_binary_metrics_hand_computed():
    m = binary_metrics(PRED, GT)
    assert m["dice"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert m["iou"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["sensitivity"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(11 / 12)
    assert m["accuracy"] == pytest.approx(14 / 16)


def test_binary_metrics_of_two_empty_masks_is_perfect_and_sensitivity_undefined():
    m = binary_metrics(np.zeros((3, 3)), np.zeros((3, 3)))
    assert m["dice"] == m["iou"] == m["precision"] == m["specificity"] == m["accuracy"] == 1.0
    assert math.isnan(m["sensitivity"])


def test_binary_metrics_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="differs"):
        binary_metrics(np.zeros((3, 3)), np.zeros((3, 4)))


def test_image_metrics_thresholds_probabilities_at_half():
    prob = np.where(PRED, 0.5, 0.49)
    assert image_metrics(prob, GT)["dice"] == pytest.approx(0.75)
    assert {"mean_dice_256", "s_measure", "mae"} <= set(image_metrics(prob, GT))


def _engine(items):
    return SimpleNamespace(state=SimpleNamespace(output=items))


def _item(pred, gt, name):
    label = MetaTensor(torch.as_tensor(gt[None]).float(), meta={"filename_or_obj": f"/x/{name}"})
    return {"pred": torch.as_tensor(pred[None]).float(), "label": label}


def _strict_loads(text: str):
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def _saved(tmp_path, pairs, **kwargs) -> dict:
    saver = SegmentationMetricsSaver(tmp_path, **kwargs)
    for name, pred, gt in pairs:
        saver.iteration_completed(_engine([_item(pred, gt, name)]))
    saver.completed(None)
    return _strict_loads((tmp_path / "metrics.json").read_text())


def test_metrics_saver_writes_flat_means_and_one_row_per_image(tmp_path):
    metrics = _saved(tmp_path, [("a.png", PRED, GT), ("b.png", GT, GT)])
    assert metrics["n_images"] == 2
    assert metrics["dice"] == pytest.approx((0.75 + 1.0) / 2)
    rows = list(csv.DictReader((tmp_path / "per_image.csv").open()))
    assert [r["image"] for r in rows] == ["a.png", "b.png"]
    assert float(rows[0]["iou"]) == pytest.approx(0.6)


def test_metrics_saver_writes_the_interval_after_every_mean_and_how_it_was_computed(tmp_path):
    metrics = _saved(tmp_path, [("a.png", PRED, GT), ("b.png", GT, GT)])
    names = [k for k in metrics if isinstance(metrics[k], float)]
    assert {"dice", "iou", "mean_dice_256", "s_measure", "mae"} <= set(names)
    keys = list(metrics)
    for name in names:
        assert keys[keys.index(name) + 1] == f"{name}_ci95"
    # two images: the resampled means are a, (a+b)/2 and b, so the 95% interval spans the two Dice values
    assert metrics["dice_ci95"] == [0.75, 1.0]
    assert '\n  "dice_ci95": [0.75, 1.0],\n' in (tmp_path / "metrics.json").read_text()  # one key a line
    assert metrics["ci_method"].startswith("95% percentile bootstrap (scipy.stats.bootstrap) of the mean over images")
    assert "10000 resamples, seed 0" in metrics["ci_method"]


def test_metrics_json_is_strict_with_null_for_a_metric_undefined_on_every_image(tmp_path):
    empty = np.zeros((4, 4), bool)  # empty ground truth: sensitivity is 0/0 on both images
    metrics = _saved(tmp_path, [("a.png", PRED, empty), ("b.png", empty, empty)])
    assert metrics["sensitivity"] is None and metrics["sensitivity_ci95"] is None
    assert metrics["specificity"] == pytest.approx((12 / 16 + 1.0) / 2)  # PRED has 4 false positives
    rows = list(csv.DictReader((tmp_path / "per_image.csv").open()))
    assert [r["sensitivity"] for r in rows] == ["nan", "nan"]  # per_image.csv keeps nan (float() reads it)


def test_metrics_saver_refuses_to_write_nan_even_from_a_custom_metric(tmp_path, monkeypatch):
    saver = SegmentationMetricsSaver(tmp_path, metrics_fn=lambda p, g: {"odd": 0.5})
    saver.iteration_completed(_engine([_item(PRED, GT, "a.png")]))
    monkeypatch.setattr(saver, "summary", lambda: {"odd": math.nan})
    with pytest.raises(ValueError, match="JSON"):
        saver.completed(None)
    assert not (tmp_path / "metrics.json").exists()


def test_metrics_saver_names_the_infnet_protocol_choices(tmp_path):
    pairs = [("a.png", PRED, GT), ("b.png", GT, GT)]
    default = _saved(tmp_path / "default", pairs)
    assert default["infnet_emeasure_op"] == ">" and default["infnet_quantised_8bit"] is True
    other = _saved(tmp_path / "other", pairs, infnet_emeasure_op="ge", infnet_quantise_8bit=False)
    assert other["infnet_emeasure_op"] == ">=" and other["infnet_quantised_8bit"] is False


def test_metrics_saver_with_custom_metrics_names_no_infnet_choice(tmp_path):
    metrics = _saved(tmp_path, [("a.png", PRED, GT)], metrics_fn=lambda p, g: binary_metrics(p >= 0.5, g))
    assert not any(k.startswith("infnet_") for k in metrics)
    assert metrics["dice"] == pytest.approx(0.75) and metrics["dice_ci95"] is None  # one image: no interval


def test_metrics_saver_rejects_unknown_emeasure_op(tmp_path):
    with pytest.raises(ValueError, match="infnet_emeasure_op"):
        SegmentationMetricsSaver(tmp_path, infnet_emeasure_op=">")


def test_image_metrics_passes_the_infnet_choices_on():
    prob = np.where(GT, 0.9, 0.1)
    prob[3, 3] = 0.3
    quantised = image_metrics(prob, GT)
    float_map = image_metrics(prob, GT, infnet_quantise_8bit=False)
    assert quantised["dice"] == float_map["dice"]  # the binary metrics always use the float map
    assert quantised["mean_dice_256"] != float_map["mean_dice_256"]


def test_metrics_saver_names_image_whose_prediction_size_differs(tmp_path):
    saver = SegmentationMetricsSaver(tmp_path)
    label = MetaTensor(torch.zeros(1, 4, 4), meta={"filename_or_obj": "/x/odd.png"})
    with pytest.raises(ValueError, match="odd.png"):
        saver.iteration_completed(_engine([{"pred": torch.zeros(1, 4, 5), "label": label}]))


def test_metrics_saver_refuses_to_write_nothing(tmp_path):
    with pytest.raises(ValueError, match="no image"):
        SegmentationMetricsSaver(tmp_path).completed(None)
    assert not (tmp_path / "metrics.json").exists()


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    target.write_text("old")

    def boom(*_):
        raise OSError("disk full")

    monkeypatch.setattr("tools.io.os.replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_per_image_csv_names_the_image_not_its_mask(tmp_path):
    item = _item(PRED, GT, "masks/7_mask.png")
    item["image"] = MetaTensor(torch.zeros(3, 4, 4), meta={"filename_or_obj": "/x/images/7.jpg"})
    saver = SegmentationMetricsSaver(tmp_path)
    saver.iteration_completed(_engine([item]))
    saver.completed(None)
    rows = list(csv.DictReader((tmp_path / "per_image.csv").open()))
    assert [r["image"] for r in rows] == ["7.jpg"]
