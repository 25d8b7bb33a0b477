"""Per-image segmentation metrics and the handler that writes ``metrics.json`` and ``per_image.csv``.

Threshold metrics (Dice, IoU, precision, sensitivity, specificity, accuracy at one threshold) come from MONAI's
confusion-matrix functions; Inf-Net's threshold-averaged metrics from :mod:`tools.metrics.infnet`; the means'
bootstrap intervals from :mod:`tools.metrics.bootstrap`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
from monai.metrics import compute_confusion_matrix_metric, get_confusion_matrix
from monai.utils import CommonKeys

from tools.io import atomic_write_text
from tools.runner import SKIPPED_KEY
from tools.metrics.bootstrap import check_ci_settings, ci_key, summarise_with_ci
from tools.metrics.infnet import EMEASURE_OPS, infnet_image_metrics

__all__ = ["BINARY_METRICS", "binary_metrics", "thresholded_binary_metrics", "image_metrics", "SegmentationMetricsSaver"]

# metric name in metrics.json -> name in monai.metrics.compute_confusion_matrix_metric
BINARY_METRICS = {
    "dice": "f1 score",
    "iou": "threat score",
    "precision": "precision",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "accuracy": "accuracy",
}


def binary_metrics(pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor) -> dict[str, float]:
    """Dice, IoU, precision, sensitivity, specificity and accuracy of one binary mask against its ground truth.

    Args:
        pred: binary prediction, any shape (e.g. ``(H, W[, D])``), non-zero is foreground.
        gt: binary ground truth of the same shape.

    Returns:
        ``{name: value}`` for the names of :data:`BINARY_METRICS`. Where a ratio is 0/0 it follows the usual
        convention: Dice and IoU are 1 when both masks are empty (MONAI's ``DiceMetric(ignore_empty=False)``
        does the same), precision is 1 when nothing is predicted and nothing is there, sensitivity is NaN when
        the ground truth is empty (undefined; left out of the dataset mean), specificity is NaN when the
        ground truth is full.

    Raises:
        ValueError: if the shapes differ.
    """
    p = torch.as_tensor(np.asarray(pred) if not isinstance(pred, torch.Tensor) else pred).bool()
    g = torch.as_tensor(np.asarray(gt) if not isinstance(gt, torch.Tensor) else gt).bool()
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {tuple(p.shape)} differs from ground-truth shape {tuple(g.shape)}.")
    # get_confusion_matrix takes one-hot (B, C, ...) tensors; one channel = the foreground class.
    cm = get_confusion_matrix(p.reshape(1, 1, -1).double(), g.reshape(1, 1, -1).double(), include_background=True)
    tp, fp, tn, fn = (float(v) for v in cm.reshape(4))
    out = {name: float(compute_confusion_matrix_metric(monai_name, cm).reshape(-1)[0])
           for name, monai_name in BINARY_METRICS.items()}
    if tp + fp + fn == 0:  # both masks empty: a perfect answer
        out["dice"] = out["iou"] = out["precision"] = 1.0
    if tp + fn == 0:
        out["sensitivity"] = math.nan
    if tn + fp == 0:
        out["specificity"] = math.nan
    return out


def thresholded_binary_metrics(prob: np.ndarray, gt: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """:func:`binary_metrics` of the probability map ``prob`` binarised at ``prob >= threshold`` (the RGB
    bundles' per-image metrics; configs bind ``threshold`` with ``"_mode_": "callable"``)."""
    return binary_metrics(prob >= threshold, gt)


def image_metrics(
    prob: np.ndarray,
    gt: np.ndarray,
    threshold: float = 0.5,
    infnet_quantise_8bit: bool = True,
    infnet_emeasure_op: str = "gt",
) -> dict[str, float]:
    """All metrics of one 2D image: :func:`binary_metrics` of ``prob >= threshold`` and Inf-Net's metrics.

    Args:
        prob: foreground probability ``(H, W)`` in [0, 1], at the ground truth's size.
        gt: ground truth ``(H, W)``, non-zero is foreground.
        threshold: probability threshold of the binary metrics.
        infnet_quantise_8bit, infnet_emeasure_op: ``quantise_8bit`` and ``emeasure_threshold_op`` of
            :func:`tools.metrics.infnet.infnet_image_metrics` (defaults: the 8-bit round trip and ``>``, as the
            published Inf-Net table); the binary metrics always use the float map.
    """
    prob = np.asarray(prob, dtype=np.float64)
    gt = np.asarray(gt) > 0
    out = binary_metrics(prob >= threshold, gt)
    out.update(infnet_image_metrics(prob, gt, infnet_quantise_8bit, infnet_emeasure_op))
    return out


def _squeeze2d(x, name: str, source: str) -> np.ndarray:
    arr = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    arr = arr.reshape(arr.shape[-2:]) if arr.ndim == 3 and arr.shape[0] == 1 else arr
    if arr.ndim != 2:
        raise ValueError(f"{source}: {name} must be one 2D channel, got shape {arr.shape}.")
    return arr


def _json_one_key_a_line(summary: dict) -> str:
    """``summary`` as a strict-JSON object (``allow_nan=False``: a NaN raises ValueError) with one key a line,
    so that ``"dice_ci95": [0.52, 0.8]`` stays on the line below ``"dice"``."""
    lines = [f"  {json.dumps(key)}: {json.dumps(value, allow_nan=False)}" for key, value in summary.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


class SegmentationMetricsSaver:
    """Ignite handler: per-image metrics of an evaluator's output, written as ``metrics.json`` + ``per_image.csv``.

    At every iteration it reads the decollated ``engine.state.output`` items: ``pred`` is the foreground
    probability ``(1, H, W)`` at the ground truth's size (invert the resizing first, e.g. with ``Invertd``),
    ``label`` the mask ``(1, H, W)``. At completion it writes, each file whole or not at all:

    - ``per_image.csv``: one row per image (``image`` = the image's file name, else the label's), every metric of
      :func:`image_metrics` (or ``metrics_fn``); an undefined value is written ``nan`` (``float("nan")`` and
      pandas read it back as NaN);
    - ``metrics.json``, strict JSON (written with ``allow_nan=False``), in this order:

      - for every metric, ``"<metric>": mean over images`` (NaNs, i.e. undefined values, left out; ``null``
        when the metric is undefined for every image) followed by ``"<metric>_ci95": [low, high]``, its
        bootstrap interval (``null`` with fewer than 2 defined values; ``_ci90`` at ``confidence=0.9``), see
        :func:`tools.metrics.bootstrap.summarise_with_ci`;
      - ``"n_images"``;
      - ``"ci_method"``: how the intervals were computed, e.g. ``"95% percentile bootstrap
        (scipy.stats.bootstrap) of the mean over images, 10000 resamples, seed 0; ..."``;
      - with the default ``metrics_fn`` only (it computes Inf-Net's metrics), the Inf-Net protocol choices:
        ``"infnet_emeasure_op"`` (``">"`` or ``">="``) and ``"infnet_quantised_8bit"`` (``true``/``false``);
      - only when some images were skipped (an output item ``{SKIPPED_KEY: reason}`` of
        :class:`tools.runner.TolerantDataset`: an unreadable image, a graded mask): ``"skipped_images"``, the
        reasons, each naming its file; the means are then over the other images only.

      The keys of the means are those of earlier versions, so ``metrics["dice"]`` reads as before; a reader
      that iterates over the file must skip the ``*_ci95`` lists and the text and boolean settings.

    Args:
        output_dir: folder of the two files (created).
        threshold: probability threshold of the binary metrics (0.5).
        metrics_fn: per-image metric function ``(prob, gt) -> dict``; defaults to :func:`image_metrics` with
            ``threshold`` and the two ``infnet_*`` settings.
        pred_key, label_key: keys of the prediction and the label in each output item.
        infnet_quantise_8bit: evaluate Inf-Net's metrics on the 8-bit map Inf-Net's own test script would
            have saved (default ``True``); see :func:`tools.metrics.infnet.infnet_png_roundtrip`.
        infnet_emeasure_op: ``"gt"`` (``>``, the published Inf-Net table, default) or ``"ge"`` (``>=``, Inf-Net's
            ``main.m`` since 2020-11-21).
        confidence, n_resamples, seed: of the bootstrap intervals (0.95, 10000, 0).

    Raises:
        ValueError: at an iteration whose prediction or label is not one 2D channel or whose sizes differ,
            naming the image; at construction for an unknown ``infnet_emeasure_op`` or invalid bootstrap settings.
    """

    CASES = "images"
    """What one row is, plural: names ``n_<CASES>``, ``per_<case>.csv`` and the bootstrap unit (``"volumes"`` in
    :class:`tools.metrics.volumes.VolumeMetricsSaver`)."""

    def __init__(
        self,
        output_dir: str | Path,
        threshold: float = 0.5,
        metrics_fn: Callable[[np.ndarray, np.ndarray], dict[str, float]] | None = None,
        pred_key: str = CommonKeys.PRED,
        label_key: str = CommonKeys.LABEL,
        infnet_quantise_8bit: bool = True,
        infnet_emeasure_op: str = "gt",
        confidence: float = 0.95,
        n_resamples: int = 10000,
        seed: int = 0,
    ) -> None:
        if infnet_emeasure_op not in EMEASURE_OPS:
            raise ValueError(f"infnet_emeasure_op must be one of {sorted(EMEASURE_OPS)}, got {infnet_emeasure_op!r}")
        check_ci_settings(confidence, n_resamples)
        self.output_dir = Path(output_dir)
        self.threshold = threshold
        self.settings: dict[str, str | bool] = {}
        if metrics_fn is None:
            self.settings = {
                "infnet_emeasure_op": EMEASURE_OPS[infnet_emeasure_op],
                "infnet_quantised_8bit": bool(infnet_quantise_8bit),
            }
            metrics_fn = partial(
                image_metrics,
                threshold=threshold,
                infnet_quantise_8bit=infnet_quantise_8bit,
                infnet_emeasure_op=infnet_emeasure_op,
            )
        self.metrics_fn = metrics_fn
        self.pred_key, self.label_key = pred_key, label_key
        self.confidence, self.n_resamples, self.seed = confidence, n_resamples, seed
        self.rows: list[dict] = []
        self.skipped: list[str] = []
        self.logger = logging.getLogger(__name__)

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, lambda e: (self.rows.clear(), self.skipped.clear()))
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def iteration_completed(self, engine) -> None:
        items: Sequence[dict] = engine.state.output
        for item in items if isinstance(items, (list, tuple)) else [items]:
            if SKIPPED_KEY in item:
                self.skipped.extend(item[SKIPPED_KEY])
                continue
            label = item[self.label_key]
            source = str(getattr(label, "meta", {}).get("filename_or_obj", f"item {len(self.rows)}"))
            metrics = self.case_metrics(item, source)
            image = item.get(CommonKeys.IMAGE)  # the row names the image, not its mask (e.g. Imgs/1.jpg, not GT/1.png)
            name = str(getattr(image, "meta", {}).get("filename_or_obj", source))
            self.rows.append({"image": Path(name).name, **metrics})

    def case_metrics(self, item: dict, source: str) -> dict[str, float]:
        """The metrics of one decollated output item (``source`` names its file in errors): here a 2D probability map
        against its mask; subclasses for other cases (volumes, FOV-masked images) override this alone."""
        prob = _squeeze2d(item[self.pred_key], "prediction", source)
        gt = _squeeze2d(item[self.label_key], "label", source)
        if prob.shape != gt.shape:
            raise ValueError(f"{source}: prediction {prob.shape} and label {gt.shape} differ in size.")
        return self.metrics_fn(prob, gt > 0)

    def metric_names(self) -> list[str]:
        """The metric columns of the images seen so far (the CSV columns without ``image``)."""
        return [k for k in self.rows[0] if k != "image"] if self.rows else []

    def summary(self) -> dict:
        """The content of ``metrics.json`` for the images seen so far (see the class docstring)."""
        columns = {name: [r[name] for r in self.rows] for name in self.metric_names()}
        out = summarise_with_ci(columns, self.CASES, self.confidence, self.n_resamples, self.seed)
        method = out.pop("ci_method")
        out[f"n_{self.CASES}"] = len(self.rows)
        out["ci_method"] = method
        out.update(self.settings)
        if self.skipped:
            out["skipped_images"] = list(self.skipped)
        return out

    def completed(self, engine) -> None:
        if not self.rows:
            if self.skipped:  # every image failed: the run reports them (tools.runner.run_evaluation)
                return
            raise ValueError(f"the evaluator saw no {self.CASES[:-1]}: nothing to write.")
        summary = self.summary()
        atomic_write_text(self.output_dir / "metrics.json", _json_one_key_a_line(summary))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(self.rows[0]))
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.output_dir / f"per_{self.CASES[:-1]}.csv", buffer.getvalue())
        self.logger.info(
            "metrics of %d %s written to %s: %s",
            len(self.rows),
            self.CASES,
            self.output_dir / "metrics.json",
            ", ".join(self._format(name, summary) for name in self.metric_names()),
        )

    def _format(self, name: str, summary: dict) -> str:
        mean, interval = summary[name], summary[ci_key(name, self.confidence)]
        text = f"{name} {mean:.4f}" if mean is not None else f"{name} undefined"
        return text + (f" [{interval[0]:.4f}, {interval[1]:.4f}]" if interval is not None else "")
