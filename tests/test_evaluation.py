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


def test_metrics_saver_writes_flat_means_and_one_row_per_image(tmp_path):
    saver = SegmentationMetricsSaver(tmp_path)
    for name, pred in (("a.png", PRED), ("b.png", GT)):
        label = MetaTensor(torch.as_tensor(GT[None]).float(), meta={"filename_or_obj": f"/x/{name}"})
        saver.iteration_completed(_engine([{"pred": torch.as_tensor(pred[None]).float(), "label": label}]))
    saver.completed(None)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n_images"] == 2
    assert metrics["dice"] == pytest.approx((0.75 + 1.0) / 2)
    assert all(isinstance(v, (int, float)) for v in metrics.values())
    rows = list(csv.DictReader((tmp_path / "per_image.csv").open()))
    assert [r["image"] for r in rows] == ["a.png", "b.png"]
    assert float(rows[0]["iou"]) == pytest.approx(0.6)


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
