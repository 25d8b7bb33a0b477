"""Vessel metrics inside the field of view (``tools.metrics.vessels``): each agrees with a naive computation (a
pixel loop over the FOV, an all-pairs AUC, MONAI's ROC AUC), pixels outside the FOV never count, and the handler
writes the five metrics with their intervals."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from monai.metrics import compute_roc_auc

from tools.metrics.vessels import (VESSEL_METRICS, VesselMetricsSaver, pooled_vessel_metrics, roc_auc,
                                   vessel_metrics)


def _case(seed: int, shape=(23, 19)):
    rng = np.random.default_rng(seed)
    gt = rng.random(shape) < 0.2
    prob = np.clip(0.35 * gt + 0.65 * rng.random(shape), 0, 1)
    prob[rng.random(shape) < 0.2] = 0.5  # ties, and pixels exactly at the threshold
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    fov = (yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2 < (min(shape) / 2.2) ** 2
    return prob, gt, fov


def _naive(prob, gt, fov, threshold=0.5):
    tp = fp = tn = fn = 0
    pos, neg = [], []
    for p, g, f in zip(prob.ravel(), gt.ravel(), fov.ravel()):
        if not f:
            continue
        (pos if g else neg).append(p)
        if p >= threshold:
            tp, fp = tp + g, fp + (not g)
        else:
            fn, tn = fn + g, tn + (not g)
    pairs = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return {"dice": 2 * tp / (2 * tp + fp + fn), "auc": pairs / (len(pos) * len(neg)),
            "sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp), "accuracy": (tp + tn) / (tp + fp + tn + fn)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_metric_equals_a_pixel_loop_over_the_fov(seed):
    prob, gt, fov = _case(seed)
    got, want = vessel_metrics(prob, gt, fov), _naive(prob, gt, fov)
    assert list(got) == list(VESSEL_METRICS)
    for name in VESSEL_METRICS:
        assert got[name] == pytest.approx(want[name], abs=1e-12), name


def test_auc_equals_monai_roc_auc():
    prob, gt, _ = _case(3, (40, 40))
    want = float(compute_roc_auc(torch.as_tensor(prob.ravel()), torch.as_tensor(gt.ravel().astype(np.float32))))
    assert roc_auc(prob, gt) == pytest.approx(want, abs=1e-6)  # MONAI computes in float32


def test_pixels_outside_the_fov_do_not_count():
    prob, gt, fov = _case(4)
    before = vessel_metrics(prob, gt, fov)
    wrong = prob.copy()
    wrong[~fov] = np.where(gt[~fov], 0.0, 1.0)  # every outside pixel wrong
    assert vessel_metrics(wrong, gt, fov) == before
    assert vessel_metrics(wrong, gt, None)["accuracy"] < before["accuracy"]


def test_black_border_would_inflate_specificity_and_accuracy_without_the_fov():
    prob, gt, fov = _case(5)
    gt = gt & fov
    prob = np.where(fov, prob, 0.0)  # outside the aperture: background, predicted background
    inside, everywhere = vessel_metrics(prob, gt, fov), vessel_metrics(prob, gt, None)
    assert everywhere["specificity"] > inside["specificity"] and everywhere["accuracy"] > inside["accuracy"]
    assert everywhere["dice"] == inside["dice"] and everywhere["sensitivity"] == inside["sensitivity"]


def test_undefined_ratios_are_nan_and_an_empty_pair_is_a_perfect_dice():
    prob, fov = np.zeros((4, 4)), np.ones((4, 4), bool)
    out = vessel_metrics(prob, np.zeros((4, 4), bool), fov)
    assert out["dice"] == 1.0 and math.isnan(out["sensitivity"]) and math.isnan(out["auc"])
    assert out["specificity"] == 1.0


def test_shapes_must_agree():
    with pytest.raises(ValueError, match="FOV mask shape"):
        vessel_metrics(np.zeros((4, 4)), np.zeros((4, 4)), np.ones((4, 5)))


def test_pooled_metrics_are_those_of_the_concatenated_fov_pixels():
    cases = [_case(s) for s in (6, 7)]
    pooled = pooled_vessel_metrics([c[0] for c in cases], [c[1] for c in cases], [c[2] for c in cases])
    flat = [np.concatenate([c[i][c[2]] for c in cases]) for i in (0, 1)]
    assert pooled == pytest.approx(_naive(flat[0], flat[1], np.ones_like(flat[1], bool)))


def test_handler_writes_the_five_metrics_with_intervals_and_per_image_rows(tmp_path):
    from monai.data import MetaTensor

    saver = VesselMetricsSaver(tmp_path, n_resamples=200)
    items = []
    for seed in (8, 9, 10):
        prob, gt, fov = _case(seed)
        meta = {"filename_or_obj": f"/d/images/{seed:02d}_test.tif"}
        items.append({"image": MetaTensor(torch.zeros(1, *prob.shape), meta=meta),
                      "pred": torch.as_tensor(prob[None]), "label": torch.as_tensor(gt[None]),
                      "pred_fov": torch.as_tensor(fov[None].astype(np.float32))})
    engine = SimpleNamespace(state=SimpleNamespace(output=items))
    saver.iteration_completed(engine)
    saver.completed(engine)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for name in VESSEL_METRICS:
        assert len(metrics[f"{name}_ci95"]) == 2 and f"pooled_{name}" in metrics
    assert metrics["n_images"] == 3 and "bootstrap" in metrics["ci_method"]
    want = np.mean([_naive(*_case(s))["auc"] for s in (8, 9, 10)])
    assert metrics["auc"] == pytest.approx(want)
    rows = (tmp_path / "per_image.csv").read_text().splitlines()
    assert rows[0] == "image,dice,auc,sensitivity,specificity,accuracy" and rows[1].startswith("08_test.tif,")


def test_handler_names_the_image_whose_output_has_no_fov(tmp_path):
    from monai.data import MetaTensor

    item = {"image": MetaTensor(torch.zeros(1, 4, 4), meta={"filename_or_obj": "/d/01_test.tif"}),
            "pred": torch.zeros(1, 4, 4), "label": torch.zeros(1, 4, 4)}
    with pytest.raises(ValueError, match=r"01_test\.tif: the evaluator's output has no FOV mask"):
        VesselMetricsSaver(tmp_path).iteration_completed(SimpleNamespace(state=SimpleNamespace(output=[item])))
