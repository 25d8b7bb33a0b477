"""Estimate the HU window that 8-bit, already-windowed CT slices were made with.

The COVID-19 training slices (MedSeg / Inf-Net release) are JPEGs whose HU window is not published. Volumes
must be windowed to match them. In each slice the grey-level histogram has two peaks: aerated lung parenchyma
and soft tissue (mediastinum, chest wall). Taking their typical attenuations (``lung_hu``, default -850 HU,
and ``tissue_hu``, default +40 HU) and the median peak grey levels over the slices, the linear map
``grey = 255 * (HU - low) / (high - low)`` gives ``low`` and ``high``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["histogram_peaks", "estimate_hu_window"]


def histogram_peaks(gray: np.ndarray, split: int = 128, smooth: int = 9) -> tuple[int, int]:
    """Grey levels of the dark (lung) and bright (soft tissue) histogram peaks of an 8-bit slice ``(H, W)``.

    The bright peak is searched below 250 so that saturated bone/air-window clipping at 255 does not count.
    """
    hist = np.bincount(np.asarray(gray, dtype=np.uint8).ravel(), minlength=256).astype(float)
    hist = np.convolve(hist, np.ones(smooth) / smooth, mode="same")
    return int(hist[:split].argmax()), int(split + hist[split:250].argmax())


def estimate_hu_window(image_dir: str | Path, lung_hu: float = -850.0, tissue_hu: float = 40.0) -> dict:
    """Estimate ``[low, high]`` (HU) of the window that made the 8-bit slices in ``image_dir``.

    Returns:
        ``{"low_hu", "high_hu", "lung_grey", "tissue_grey", "n_images"}`` (median peaks over the slices).

    Raises:
        FileNotFoundError: if the folder holds no JPEG/PNG slice.
    """
    files = sorted(p for p in Path(image_dir).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise FileNotFoundError(f"{image_dir} holds no .jpg/.png slices.")
    peaks = np.array([histogram_peaks(np.asarray(Image.open(f).convert("L"))) for f in files], dtype=float)
    lung_grey, tissue_grey = np.median(peaks, axis=0)
    width = 255.0 * (tissue_hu - lung_hu) / (tissue_grey - lung_grey)
    low = lung_hu - lung_grey * width / 255.0
    return {
        "low_hu": round(float(low), 1),
        "high_hu": round(float(low + width), 1),
        "lung_grey": float(lung_grey),
        "tissue_grey": float(tissue_grey),
        "n_images": len(files),
    }
