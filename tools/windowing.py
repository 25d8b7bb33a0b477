"""The window of 8-bit, already-windowed CT slices: the HU window they were made with, and matching one set of slices
to another's window.

The COVID-19 training slices (MedSeg / Inf-Net release) are JPEGs whose HU window is not published. Volumes
must be windowed to match them. In each slice the grey-level histogram has two peaks: aerated lung parenchyma
and soft tissue (mediastinum, chest wall). Taking their typical attenuations (``lung_hu``, default -850 HU,
and ``tissue_hu``, default +40 HU) and the median peak grey levels over the slices, the linear map
``grey = 255 * (HU - low) / (high - low)`` gives ``low`` and ``high``.

:func:`harmonise_window` uses the same two peaks to bring slices made with another window (the 1600 unlabelled
COVID-19-CT-Seg slices: aerated lung at grey 13-22 and soft tissue at 84-104 in the coronacases volumes, against
45 and 214 in the labelled MedSeg slices) onto the labelled slices' grey scale, one linear map per volume.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.filters import threshold_otsu

from tools.io import atomic_path, atomic_write_text

__all__ = ["histogram_peaks", "estimate_hu_window", "median_peaks", "volume_of", "harmonise_window"]


def histogram_peaks(gray: np.ndarray, split: int | str = 128, smooth: int = 9) -> tuple[int, int]:
    """Grey levels of the dark (lung) and bright (soft tissue) histogram peaks of an 8-bit slice ``(H, W)``.

    The bright peak is searched below 250 so that saturated bone/air-window clipping at 255 does not count.
    ``split`` is the grey level between the two searches: a fixed level (128 suits slices windowed like the MedSeg
    ones, whose tissue peak is near 214), or ``"otsu"``: Otsu's threshold of the slice's histogram
    (``skimage.filters.threshold_otsu``), for slices of unknown window (the coronacases slices' tissue peak is near
    95, below 128). Black padding (grey < 3) is left out of the histogram then.
    """
    hist = np.bincount(np.asarray(gray, dtype=np.uint8).ravel(), minlength=256).astype(float)
    hist = np.convolve(hist, np.ones(smooth) / smooth, mode="same")
    if split == "otsu":
        hist[:3] = 0.0
        hist[250:] = 0.0
        split = int(threshold_otsu(hist=hist))
    split = int(split)
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




def median_peaks(files: Sequence[str | Path], split: int | str = "otsu") -> tuple[float, float]:
    """Median (lung, tissue) peak grey levels over the slices ``files`` (:func:`histogram_peaks`)."""
    peaks = np.array([histogram_peaks(np.asarray(Image.open(f).convert("L")), split=split) for f in files], dtype=float)
    lung, tissue = np.median(peaks, axis=0)
    return float(lung), float(tissue)


def volume_of(path: str | Path) -> str:
    """The volume a slice file comes from, by Inf-Net's naming ``<dataset>_<case>_<slice>.jpg``: the name up to its
    last underscore (``Data-1_coronacases_org_001_15.jpg`` -> ``Data-1_coronacases_org_001``)."""
    return Path(path).name.split(".")[0].rsplit("_", 1)[0]


def harmonise_window(images: Sequence[str | Path], reference: Sequence[str | Path], out_dir: str | Path,
                     group: Callable[[str | Path], str] = volume_of, min_separation: float = 40.0) -> tuple[list[str], dict]:
    """Bring 8-bit slices made with another window onto the grey scale of ``reference`` slices.

    For each volume of ``images`` (``group``), the median lung and tissue peaks ``(l, t)`` (:func:`median_peaks`,
    Otsu split) are mapped linearly onto the reference slices' ``(L, T)``: ``grey' = L + (grey - l) (T - L) / (t - l)``,
    rounded and clipped to 0..255, and written as ``out_dir/<name>.png`` (whole or not at all). Two windows that are
    linear maps of HU differ by exactly such a map, so this recovers the reference window wherever neither clips.
    A volume whose peaks are less than ``min_separation`` grey levels apart (no clear lung and tissue: too few
    slices, or slices without lung) is left out, and named in the report. A finished ``out_dir`` (its
    ``window.json`` with the same inputs) is reused.

    Returns:
        the written slice paths (in the order of ``images``, the left-out volumes' slices missing) and the report
        ``{"reference": [L, T], "volumes": {name: {"peaks": [l, t], "slices": n, "used": bool}}}`` (also written
        to ``out_dir/window.json``).

    Raises:
        FileNotFoundError: if ``images`` or ``reference`` is empty.
    """
    if not images or not reference:
        raise FileNotFoundError("harmonise_window needs unlabelled images and reference slices; got "
                                f"{len(images)} and {len(reference)}.")
    out = Path(out_dir)
    key = {"reference_files": sorted(Path(r).name for r in reference), "images": [str(i) for i in images],
           "min_separation": min_separation}
    summary = out / "window.json"
    if summary.is_file():
        done = json.loads(summary.read_text())
        if done.get("key") == key:
            return done["written"], done["report"]
    out.mkdir(parents=True, exist_ok=True)
    ref = median_peaks(reference)
    by_volume: dict[str, list[Path]] = {}
    for path in images:
        by_volume.setdefault(group(path), []).append(Path(path))
    report: dict = {"reference": [round(ref[0], 1), round(ref[1], 1)], "volumes": {}}
    written: list[str] = []
    for name, files in by_volume.items():
        lung, tissue = median_peaks(files)
        used = tissue - lung >= min_separation
        report["volumes"][name] = {"peaks": [lung, tissue], "slices": len(files), "used": bool(used)}
        if not used:
            continue
        scale = (ref[1] - ref[0]) / (tissue - lung)
        lut = np.clip(np.rint(ref[0] + (np.arange(256) - lung) * scale), 0, 255).astype(np.uint8)
        for f in files:
            target = out / (f.name.split(".")[0] + ".png")
            with Image.open(f) as im, atomic_path(target) as tmp:
                Image.fromarray(lut[np.asarray(im.convert("L"))]).save(tmp, format="PNG")
            written.append(str(target))
    order = {str(out / (Path(p).name.split(".")[0] + ".png")): i for i, p in enumerate(images)}
    written.sort(key=order.__getitem__)
    atomic_write_text(summary, json.dumps({"key": key, "written": written, "report": report}) + "\n")
    return written, report
