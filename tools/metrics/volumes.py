"""Dice, IoU and the 95th-percentile Hausdorff distance (mm) per 3D volume, and the evaluation handler that writes them
(``metrics.json`` with bootstrap 95% intervals over volumes, ``per_volume.csv``): the spine bundle's evaluation.

The per-image machinery (``SegmentationMetricsSaver``: skipped inputs, strict JSON, bootstrap summaries) is
``tools.evaluation``'s; this module adds what volumes need: the voxel spacing read from each label's affine and the
surface distance metric, MONAI's ``compute_hausdorff_distance``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
from monai.utils import CommonKeys

from tools.evaluation import SegmentationMetricsSaver, binary_metrics

__all__ = ["VOLUME_METRICS", "volume_metrics", "part_dice", "VolumeMetricsSaver"]

logger = logging.getLogger(__name__)

VOLUME_METRICS = ("dice", "iou", "hd95")
"""The per-volume metrics of :func:`volume_metrics`, in the order ``metrics.json`` and ``per_volume.csv`` list them."""


def volume_metrics(
    prob: np.ndarray | torch.Tensor,
    gt: np.ndarray | torch.Tensor,
    spacing: Sequence[float] | None = None,
    threshold: float = 0.5,
) -> dict[str, float]:
    """Dice, IoU and the 95th-percentile Hausdorff distance of one 3D mask against its ground truth.

    Args:
        prob: foreground probability (or a binary mask) ``(H, W, D)``; foreground is ``prob >= threshold``.
        gt: ground truth of the same shape, non-zero is foreground.
        spacing: voxel size in mm along the three axes (default 1 mm): HD95 is in mm.
        threshold: probability threshold.

    Returns:
        ``{"dice", "iou", "hd95"}``. Dice and IoU as :func:`binary_metrics` (1 when both masks are empty). HD95 is
        MONAI's ``compute_hausdorff_distance(percentile=95, spacing=spacing)`` (symmetric: the larger of the two
        directed 95th percentiles of surface-to-surface distances): 0 when both masks are empty, NaN (undefined, left
        out of the means) when exactly one is.

    Raises:
        ValueError: if the shapes differ or are not 3D.
    """
    from monai.metrics import compute_hausdorff_distance

    p = torch.as_tensor(np.asarray(prob) if not isinstance(prob, torch.Tensor) else prob.detach().cpu()).float()
    g = torch.as_tensor(np.asarray(gt) if not isinstance(gt, torch.Tensor) else gt.detach().cpu()) > 0
    if p.shape != g.shape or p.ndim != 3:
        raise ValueError(f"prediction {tuple(p.shape)} and ground truth {tuple(g.shape)} must be the same 3D shape.")
    b = p >= threshold
    out = {k: v for k, v in binary_metrics(b, g).items() if k in ("dice", "iou")}
    has_p, has_g = bool(b.any()), bool(g.any())
    if not has_p and not has_g:
        out["hd95"] = 0.0
    elif has_p != has_g:
        out["hd95"] = math.nan
    else:
        sp = [float(s) for s in spacing] if spacing is not None else [1.0, 1.0, 1.0]
        hd = compute_hausdorff_distance(b[None, None].float(), g[None, None].float(), include_background=True,
                                        percentile=95, spacing=sp)
        out["hd95"] = float(hd.reshape(-1)[0])
    return out


def _squeeze3d(x, name: str, source: str) -> torch.Tensor:
    t = torch.as_tensor(x.detach().cpu() if isinstance(x, torch.Tensor) else np.asarray(x)).float()
    t = t[0] if t.ndim == 4 and t.shape[0] == 1 else t
    if t.ndim != 3:
        raise ValueError(f"{source}: {name} must be one 3D channel, got shape {tuple(t.shape)}.")
    return t


def _voxel_spacing(label) -> list[float]:
    """Voxel size (mm) of a channel-first MetaTensor from its affine (1 mm when it carries none)."""
    from monai.data.utils import affine_to_spacing

    affine = getattr(label, "affine", None)
    if affine is None:
        return [1.0, 1.0, 1.0]
    return [float(s) for s in affine_to_spacing(torch.as_tensor(affine).double(), r=3)]


def part_dice(pred: np.ndarray, label_map: np.ndarray, parts: Mapping[str, int]) -> dict[str, float]:
    """Dice of each labelled part (e.g. vertebra L1..L5) of a binary prediction against a label map ``(H, W, D)``.

    A binary network does not say which vertebra a voxel belongs to, so each predicted voxel is given to the nearest
    labelled part (a Voronoi partition of the volume by the label map: ``scipy.ndimage.distance_transform_edt`` with
    its nearest-voxel indices); part ``j``'s Dice is then ``2 |P_j & G_j| / (|P_j| + |G_j|)``. A false positive far
    from every vertebra counts against the nearest one. Keys ``dice_<name>``; NaN for a part absent from the label
    map.

    Raises:
        ValueError: if the shapes differ.
    """
    from scipy.ndimage import distance_transform_edt

    pred, label_map = np.asarray(pred) > 0, np.asarray(label_map)
    if pred.shape != label_map.shape:
        raise ValueError(f"prediction {pred.shape} and label map {label_map.shape} differ in size.")
    if not label_map.any():
        return {f"dice_{name}": float("nan") for name in parts}
    idx = distance_transform_edt(label_map == 0, return_distances=False, return_indices=True)
    nearest = label_map[tuple(idx)]
    out = {}
    for name, value in parts.items():
        g = label_map == value
        p = pred & (nearest == value)
        total = int(g.sum()) + int(p.sum())
        out[f"dice_{name}"] = 2.0 * int((p & g).sum()) / total if g.any() else float("nan")
    return out


def component_parts(pred: np.ndarray, label_map: np.ndarray, parts: Mapping[str, int]) -> list[dict]:
    """What each connected component of a binary prediction ``(H, W, D)`` covers in a label map of the same shape:
    one row a component (26-connectivity, SciPy's ``ndimage.label``, largest first) with ``voxels``, the voxel range
    it spans on each axis (``axis<i>``: ``(first, last)``), the voxels it shares with each labelled part (``<name>``)
    and with the background (``background``: false positives).

    A diagnostic of the post-processing that keeps or drops whole components (:class:`tools.pipelines.spine.
    FilterComponentsd`): a component that covers two parts (a vertebra fused with its neighbour), or a part that no
    component covers much of (a missed vertebra), cannot be mended by choosing components.

    Raises:
        ValueError: if the shapes differ or the prediction is not 3D.
    """
    from scipy import ndimage

    pred, label_map = np.asarray(pred) > 0, np.asarray(label_map)
    if pred.shape != label_map.shape or pred.ndim != 3:
        raise ValueError(f"prediction {pred.shape} and label map {label_map.shape} must be 3D and of one size.")
    components, _ = ndimage.label(pred, structure=np.ones((3, 3, 3)))
    rows = []
    for i, box in enumerate(ndimage.find_objects(components), start=1):
        inside = components[box] == i
        labels = label_map[box][inside]
        row = {"voxels": int(inside.sum())}
        row.update({f"axis{a}": (s.start, s.stop - 1) for a, s in enumerate(box)})  # find_objects: its bounding box
        row.update({name: int((labels == value).sum()) for name, value in parts.items()})
        row["background"] = int((labels == 0).sum())
        rows.append(row)
    return sorted(rows, key=lambda r: -r["voxels"])


class VolumeMetricsSaver(SegmentationMetricsSaver):
    """Ignite handler: per-volume Dice, IoU and HD95 (mm) of an evaluator's output, written as ``metrics.json`` and
    ``per_volume.csv`` (the spine bundle's ``evaluate.json``).

    Each decollated output item holds ``pred``, the foreground probability ``(1, H, W, D)`` on the label's grid, and
    ``label`` ``(1, H, W, D)``, whose affine gives the voxel spacing of HD95. ``metrics.json`` has, as
    :class:`SegmentationMetricsSaver` writes it: for each of :data:`VOLUME_METRICS` the mean over volumes (undefined
    values left out; ``null`` when undefined for every volume) followed by ``<metric>_ci95`` (bootstrap interval over
    volumes, :func:`tools.metrics.bootstrap.summarise_with_ci`; ``null`` with fewer than 2 defined values), then
    ``n_volumes``, ``ci_method``, ``hd95_unit`` (``"mm"``) and, when some inputs were skipped, ``skipped_images``.
    ``per_volume.csv`` has one row a volume (``image`` = the image's file name).

    Args:
        output_dir: folder of the two files (created).
        threshold: probability threshold (0.5).
        pred_key, label_key: keys of the prediction and the label.
        confidence, n_resamples, seed: of the bootstrap intervals (0.95, 10000, 0).
        parts: part name -> value in the label file (e.g. ``{"L1": 1, ..., "L5": 5}``): also each part's Dice
            (:func:`part_dice`, columns ``dice_<name>``), from the label file that the label item names
            (``filename_or_obj``; the evaluation chain takes every label above 0 as foreground, so the map is read
            again; it must have the prediction's grid, as the spine evaluation's unresampled chain keeps it).
    """

    CASES = "volumes"

    def __init__(
        self,
        output_dir: str | Path,
        threshold: float = 0.5,
        pred_key: str = CommonKeys.PRED,
        label_key: str = CommonKeys.LABEL,
        confidence: float = 0.95,
        n_resamples: int = 10000,
        seed: int = 0,
        parts: Mapping[str, int] | None = None,
    ) -> None:
        self.parts = dict(parts or {})
        super().__init__(output_dir, threshold, metrics_fn=partial(volume_metrics, threshold=threshold),
                         pred_key=pred_key, label_key=label_key, confidence=confidence, n_resamples=n_resamples,
                         seed=seed)
        self.settings = {"hd95_unit": "mm"}

    def case_metrics(self, item: dict, source: str) -> dict[str, float]:
        """Dice, IoU and HD95 of one volume, the spacing read from the label's affine."""
        label = item[self.label_key]
        prob = _squeeze3d(item[self.pred_key], "prediction", source)
        gt = _squeeze3d(label, "label", source)
        if prob.shape != gt.shape:
            raise ValueError(f"{source}: prediction {tuple(prob.shape)} and label {tuple(gt.shape)} differ in size.")
        out = self.metrics_fn(prob, gt, _voxel_spacing(label))
        if self.parts:
            import nibabel as nib

            label_map = np.asarray(nib.load(source).dataobj).reshape(gt.shape)
            out.update(part_dice(np.asarray(prob) >= self.threshold, label_map, self.parts))
        return out
