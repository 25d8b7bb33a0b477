"""Pictures of the worst cases of an evaluation: image, ground truth, prediction side by side, with the failure kind.

For the 2D RGB bundles' ``evaluate.json`` (``gallery_worst``: how many, 0 = none): the polyp issue asks whether the
errors on unseen clips are missed polyps, false positives (specular highlights, folds) or boundary errors, and the
per-image table says which kind each frame is, but not what the network saw. The kinds, by the per-image metrics at
the threshold: **missed** (sensitivity < 0.1), **false positives** (precision < 0.3 with sensitivity >= 0.5),
**boundary** (Dice < 0.7 with precision and sensitivity >= 0.5), else **other**.
"""

from __future__ import annotations

import heapq
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from tools.evaluation import binary_metrics
from tools.io import atomic_path

__all__ = ["failure_kind", "WorstCasesGallery"]


def failure_kind(dice: float, precision: float, sensitivity: float) -> str:
    """``"missed"``, ``"false_positives"``, ``"boundary"`` or ``"other"`` (module docstring)."""
    if sensitivity < 0.1:
        return "missed"
    if precision < 0.3 and sensitivity >= 0.5:
        return "false_positives"
    if dice < 0.7 and precision >= 0.5 and sensitivity >= 0.5:
        return "boundary"
    return "other"


def _as_2d(x) -> np.ndarray:
    arr = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float32)
    return arr.reshape(arr.shape[-2:])


def _overlay(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> Image.Image:
    out = rgb.astype(np.float32).copy()
    out[mask] = 0.55 * out[mask] + 0.45 * np.array(colour, dtype=np.float32)
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


class WorstCasesGallery:
    """Ignite handler: keep the ``n`` output items with the lowest Dice; at completion write one PNG each,
    ``<output_dir>/worst_cases/<rank>_<image name>_<kind>_dice<d>.png``: the image as read from its file, the truth
    (green) and the prediction (red) over it, side by side, with the Dice, precision and sensitivity written on top.

    Each decollated item holds ``pred`` (foreground probability ``(1, H, W)`` at the truth's size) and ``label``
    ``(1, H, W)``; the image is read again from ``image``'s ``filename_or_obj`` (the evaluated tensor is the
    resized, normalised network input). MONAI's PIL reader gives arrays indexed (W, H); they are turned to the
    file's (H, W) by comparing them with the image's size (and, for square images, with the truth file).

    Args:
        output_dir: the evaluation's output folder.
        n: how many cases (0: the handler does nothing).
        threshold: probability threshold of the prediction.
    """

    def __init__(self, output_dir: str | Path, n: int = 0, threshold: float = 0.5) -> None:
        if int(n) < 0:
            raise ValueError(f"n must be >= 0, got {n}.")
        self.folder, self.n, self.threshold = Path(output_dir) / "worst_cases", int(n), float(threshold)
        self._heap: list[tuple[float, int, dict]] = []
        self._count = 0

    def attach(self, engine) -> None:
        from ignite.engine import Events

        if self.n:
            engine.add_event_handler(Events.STARTED, lambda e: self._heap.clear())
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
            engine.add_event_handler(Events.COMPLETED, self.completed)

    def iteration_completed(self, engine) -> None:
        items = engine.state.output
        for item in items if isinstance(items, (list, tuple)) else [items]:
            if "pred" not in item or "label" not in item:
                continue  # a skipped input (tools.runner.TolerantDataset)
            pred, gt = _as_2d(item["pred"]) >= self.threshold, _as_2d(item["label"]) > 0
            m = binary_metrics(pred, gt)  # the per_image.csv figures (tools.evaluation)
            case = {"pred": pred, "gt": gt, "dice": m["dice"], "precision": m["precision"],
                    "sensitivity": m["sensitivity"],
                    "image": str(getattr(item.get("image"), "meta", {}).get("filename_or_obj", "")),
                    "label": str(getattr(item["label"], "meta", {}).get("filename_or_obj", ""))}
            self._count += 1
            entry = (-case["dice"], self._count, case)  # a max-heap of the n lowest Dice
            if len(self._heap) < self.n:
                heapq.heappush(self._heap, entry)
            elif entry > self._heap[0]:
                heapq.heapreplace(self._heap, entry)

    def completed(self, engine) -> None:
        cases = [c for _, _, c in sorted(self._heap, key=lambda e: (-e[0], e[1]))]
        self.folder.mkdir(parents=True, exist_ok=True)
        for rank, case in enumerate(cases, 1):
            self._write(rank, case)

    def _write(self, rank: int, case: dict) -> None:
        with Image.open(case["image"]) as im:
            rgb = np.asarray(im.convert("RGB"))
        pred, gt = case["pred"], case["gt"]
        if gt.shape != rgb.shape[:2] or (gt.shape[0] == gt.shape[1] and self._transposed(gt, case["label"])):
            pred, gt = pred.T, gt.T
        kind = failure_kind(case["dice"], case["precision"], case["sensitivity"])
        panels = [Image.fromarray(rgb), _overlay(rgb, gt, (0, 255, 0)), _overlay(rgb, pred, (255, 0, 0))]
        w, h = panels[0].size
        sheet = Image.new("RGB", (3 * w, h + 18), "white")
        for i, p in enumerate(panels):
            sheet.paste(p, (i * w, 18))
        ImageDraw.Draw(sheet).text(
            (4, 3), f"{Path(case['image']).name}: {kind}, Dice {case['dice']:.3f}, precision {case['precision']:.3f}, "
                    f"sensitivity {case['sensitivity']:.3f} | image | truth (green) | prediction (red)", fill="black")
        name = f"{rank:02d}_{Path(case['image']).stem}_{kind}_dice{case['dice']:.2f}.png"
        with atomic_path(self.folder / name) as tmp:
            sheet.save(tmp, format="PNG")

    @staticmethod
    def _transposed(gt: np.ndarray, label_file: str) -> bool:
        try:
            with Image.open(label_file) as m:
                truth = np.asarray(m.convert("L")) >= 128
        except OSError:
            return True  # MONAI's PIL reader: (W, H)
        return (truth == gt.T).mean() > (truth == gt).mean()
