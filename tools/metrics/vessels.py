"""Retinal vessel segmentation metrics inside the field of view (FOV), and the handler that writes them.

The DRIVE protocol (Staal et al., "Ridge-based vessel segmentation in color images of the retina", IEEE TMI 23(4),
2004, doi:10.1109/TMI.2004.825627; the DRIVE site's evaluation rules) scores only the pixels inside each image's FOV
mask: the black border outside the camera aperture would otherwise add about 30% of easy true negatives to
specificity, accuracy and AUC. The first observer's manual segmentation (``1st_manual``) is the ground truth.
The metrics the literature reports (e.g. Fraz et al., "Blood vessel segmentation methodologies in retinal images -
a survey", Comput. Methods Programs Biomed. 108(1), 2012, doi:10.1016/j.cmpb.2012.03.009; Azad et al., "Medical
image segmentation review: the success of U-Net", IEEE TPAMI 2024, arXiv:2211.14830), over FOV pixels:

- sensitivity ``TP / (TP + FN)``, specificity ``TN / (TN + FP)``, accuracy ``(TP + TN) / N_fov`` and F1
  ``2 TP / (2 TP + FP + FN)`` (written ``dice``: for binary masks the F1 score is the Dice coefficient) of the
  probability map thresholded at ``prob >= threshold`` (0.5);
- AUC, the area under the ROC curve of the probability map (threshold-free), computed exactly with the
  Mann-Whitney rank statistic, ties counted one half (the trapezoidal ROC area, as ``sklearn.metrics.roc_auc_score``
  and MONAI's ``compute_roc_auc`` give).

Papers differ in one choice, named here: most report the metrics of all test pixels pooled (one confusion matrix and
one ROC over the 20 test images), some the mean over images. ``metrics.json`` holds the mean over images with a
bootstrap interval over images (:mod:`tools.metrics.bootstrap`), and the pooled values as ``pooled_<metric>``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from monai.utils import CommonKeys
from scipy.stats import rankdata

from tools.evaluation import SegmentationMetricsSaver

__all__ = ["VESSEL_METRICS", "roc_auc", "confusion_counts", "vessel_metrics", "pooled_vessel_metrics",
           "VesselMetricsSaver"]

VESSEL_METRICS = ("dice", "auc", "sensitivity", "specificity", "accuracy")


def _inside(prob: np.ndarray, gt: np.ndarray, fov: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The probabilities and ground truth of the FOV pixels, flattened (all pixels without ``fov``)."""
    p = np.asarray(prob, dtype=np.float64)
    g = np.asarray(gt) > 0
    if p.shape != g.shape:
        raise ValueError(f"probability map shape {p.shape} differs from ground-truth shape {g.shape}.")
    if fov is None:
        return p.ravel(), g.ravel()
    f = np.asarray(fov) > 0
    if f.shape != p.shape:
        raise ValueError(f"FOV mask shape {f.shape} differs from probability map shape {p.shape}.")
    return p[f], g[f]


def roc_auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the binary ``truth`` (same number of elements).

    ``(R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)`` with ``R_pos`` the sum of the positives' ranks among all
    scores (average ranks for ties): the probability that a random vessel pixel scores higher than a random
    background pixel, ties counted one half. NaN when either class is absent (undefined).
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    t = np.asarray(truth).ravel() > 0
    n_pos = int(t.sum())
    n_neg = t.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(s)  # average ranks of ties
    return float((ranks[t].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def confusion_counts(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int, int]:
    """``(TP, FP, TN, FN)`` of two binary arrays of the same number of elements (non-zero is vessel)."""
    p = np.asarray(pred).ravel() > 0
    t = np.asarray(truth).ravel() > 0
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p & ~t))
    fn = int(np.count_nonzero(~p & t))
    return tp, fp, p.size - tp - fp - fn, fn


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def _from_counts(tp: int, fp: int, tn: int, fn: int) -> dict[str, float]:
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn) if tp + fp + fn else 1.0,  # both empty: a perfect answer
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "accuracy": _ratio(tp + tn, tp + fp + tn + fn),
    }


def vessel_metrics(prob: np.ndarray, gt: np.ndarray, fov: np.ndarray | None = None,
                   threshold: float = 0.5) -> dict[str, float]:
    """F1 (``dice``), AUC, sensitivity, specificity and accuracy of one image, over the pixels inside ``fov``.

    Args:
        prob: vessel probability ``(H, W)`` in [0, 1].
        gt: manual vessel mask ``(H, W)``, non-zero is vessel.
        fov: FOV mask ``(H, W)``, non-zero is inside; ``None`` scores every pixel.
        threshold: the binary metrics use ``prob >= threshold``.

    Returns:
        ``{"dice", "auc", "sensitivity", "specificity", "accuracy"}`` (:data:`VESSEL_METRICS`); a ratio that is 0/0
        is NaN (undefined; left out of the means), except ``dice`` = 1 when both masks are empty in the FOV.

    Raises:
        ValueError: if the shapes differ.
    """
    p, g = _inside(prob, gt, fov)
    out = _from_counts(*confusion_counts(p >= threshold, g))
    out["auc"] = roc_auc(p, g)
    return {name: out[name] for name in VESSEL_METRICS}


def pooled_vessel_metrics(probs: Sequence[np.ndarray], gts: Sequence[np.ndarray],
                          fovs: Sequence[np.ndarray | None] | None = None, threshold: float = 0.5) -> dict[str, float]:
    """:func:`vessel_metrics` of all images' FOV pixels pooled (one confusion matrix, one ROC curve), the other way
    DRIVE results are reported."""
    fovs = list(fovs) if fovs is not None else [None] * len(probs)
    parts = [_inside(p, g, f) for p, g, f in zip(probs, gts, fovs)]
    p = np.concatenate([x for x, _ in parts]) if parts else np.zeros(0)
    g = np.concatenate([y for _, y in parts]) if parts else np.zeros(0, dtype=bool)
    return vessel_metrics(p, g, None, threshold)


def _one_channel(x, name: str, source: str) -> np.ndarray:
    """``x`` as a 2D NumPy array: ``(H, W)`` or ``(1, H, W)``."""
    arr = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    arr = arr[0] if arr.ndim == 3 and arr.shape[0] == 1 else arr
    if arr.ndim != 2:
        raise ValueError(f"{source}: {name} must be one 2D channel, got shape {arr.shape}.")
    return arr


class VesselMetricsSaver(SegmentationMetricsSaver):
    """:class:`tools.evaluation.SegmentationMetricsSaver` for vessels: per-image :func:`vessel_metrics` inside each
    image's FOV mask, written as ``per_image.csv`` and ``metrics.json`` (means over images with their bootstrap 95%
    intervals ``<metric>_ci95``, ``n_images``, ``ci_method``), followed by ``threshold``, ``fov`` (how the FOV was
    applied) and the pooled metrics ``pooled_<metric>`` (every FOV pixel of every image together).

    Each evaluator output item must hold ``pred`` (vessel probability ``(1, H, W)``), ``label`` and ``fov_key``
    (``(1, H, W)``, the FOV mask; copy it into the output in the post-processing, e.g. ``CopyItemsd(keys="fov",
    names="pred_fov")``, since MONAI's evaluators keep only new keys in their output).

    Args:
        output_dir: folder of the two files.
        threshold: probability threshold of the binary metrics (0.5).
        fov_key: key of the FOV mask in the output items.
        confidence, n_resamples, seed: of the bootstrap intervals.

    Raises:
        ValueError: at an iteration whose prediction, label or FOV mask is not one 2D channel, or whose sizes differ,
            naming the image; if an item has no FOV mask.
    """

    def __init__(self, output_dir, threshold: float = 0.5, fov_key: str = "pred_fov", confidence: float = 0.95,
                 n_resamples: int = 10000, seed: int = 0) -> None:
        super().__init__(output_dir, threshold, metrics_fn=lambda p, g: {}, confidence=confidence,
                         n_resamples=n_resamples, seed=seed)
        self.fov_key = fov_key
        self.pooled: list[tuple[np.ndarray, np.ndarray]] = []

    def attach(self, engine) -> None:
        from ignite.engine import Events

        super().attach(engine)
        engine.add_event_handler(Events.STARTED, lambda e: self.pooled.clear())

    def case_metrics(self, item: dict, source: str) -> dict[str, float]:
        """The FOV-masked metrics of one image (errors name the image, not its vessel mask); its FOV pixels are kept
        for the pooled metrics."""
        image = item.get(CommonKeys.IMAGE)
        source = str(getattr(image, "meta", {}).get("filename_or_obj", source)) if image is not None else source
        if self.fov_key not in item:
            raise ValueError(f"{source}: the evaluator's output has no FOV mask '{self.fov_key}'.")
        prob = _one_channel(item[self.pred_key], "prediction", source)
        gt = _one_channel(item[self.label_key], "label", source) > 0
        fov = _one_channel(item[self.fov_key], "FOV mask", source) > 0
        if not prob.shape == gt.shape == fov.shape:
            raise ValueError(f"{source}: prediction {prob.shape}, label {gt.shape} and FOV mask {fov.shape} "
                             "differ in size.")
        self.pooled.append((prob[fov].astype(np.float32), gt[fov]))
        return vessel_metrics(prob, gt, fov, self.threshold)

    def summary(self) -> dict:
        out = super().summary()
        out["threshold"] = self.threshold
        out["fov"] = "metrics over the pixels inside each image's FOV mask (DRIVE protocol)"
        if self.pooled:
            pooled = vessel_metrics(np.concatenate([p for p, _ in self.pooled]),
                                    np.concatenate([g for _, g in self.pooled]), None, self.threshold)
            out.update({f"pooled_{k}": (v if math.isfinite(v) else None) for k, v in pooled.items()})
        return out
