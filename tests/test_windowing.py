"""The window of 8-bit slices: histogram peaks, and :func:`tools.windowing.harmonise_window` recovering one window's
grey scale from slices made with another (synthetic HU slices, so the truth is known)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tools.windowing import harmonise_window, histogram_peaks, volume_of


def _hu_slice(seed: int) -> np.ndarray:
    """A (96, 96) HU slice: aerated lung (-850 HU) on the left, soft tissue (+40 HU) on the right, a lesion (-300)."""
    rng = np.random.default_rng(seed)
    hu = np.where(np.arange(96)[None, :] < 48, -850.0, 40.0) + rng.normal(0, 25, (96, 96))
    hu[30:40, 10:25] = -300.0
    return hu


def _window(hu: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip(np.rint(255 * (hu - low) / (high - low)), 0, 255).astype(np.uint8)


def _write(folder, name, grey):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grey).save(folder / name)
    return str(folder / name)


def test_peaks_find_lung_and_tissue_with_a_fixed_or_otsu_split():
    grey = _window(_hu_slice(0), -1083, 252)  # the MedSeg window: lung ~44, tissue ~214
    assert histogram_peaks(grey) == pytest.approx((44, 214), abs=3)
    wide = _window(_hu_slice(0), -1440, 1508)  # a wide window: tissue ~128 - 41 = below 128
    lung, tissue = histogram_peaks(wide, split="otsu")
    assert lung == pytest.approx(255 * (-850 + 1440) / 2948, abs=3) and tissue == pytest.approx(127, abs=3)


def test_harmonise_window_maps_another_window_onto_the_reference_grey_scale(tmp_path):
    reference = [_write(tmp_path / "labelled", f"{i}.png", _window(_hu_slice(i), -1083, 252)) for i in range(3)]
    hu = {f"Data-1_case_a_{i}.jpg": _hu_slice(10 + i) for i in range(3)}
    images = [_write(tmp_path / "unlabelled", n, _window(h, -1440, 1508)) for n, h in hu.items()]
    written, report = harmonise_window(images, reference, tmp_path / "out")
    assert [p.rsplit("/", 1)[1] for p in written] == [n.replace(".jpg", ".png") for n in hu]
    for path, h in zip(written, hu.values()):
        got = np.asarray(Image.open(path)).astype(int)
        want = _window(h, -1083, 252).astype(int)
        inside = (want > 5) & (want < 250)  # where neither window clips
        before = np.asarray(Image.open(images[written.index(path)])).astype(int)
        assert np.abs(before - want)[inside].mean() > 40  # the two windows differ by far more ...
        assert np.abs(got - want)[inside].mean() < 6.0  # ... than what is left: the peaks' and 8 bits' rounding
    assert report["volumes"]["Data-1_case_a"]["used"] and report["reference"] == pytest.approx([44, 214], abs=3)
    again, _ = harmonise_window(images, reference, tmp_path / "out")  # a finished folder is reused
    assert again == written and json.loads((tmp_path / "out" / "window.json").read_text())["written"] == written


def test_a_volume_without_clear_peaks_is_left_out_and_reported(tmp_path):
    reference = [_write(tmp_path / "labelled", "0.png", _window(_hu_slice(0), -1083, 252))]
    flat = [_write(tmp_path / "u", "Data-1_flat_0.jpg", np.full((64, 64), 120, np.uint8))]
    good = [_write(tmp_path / "u", "Data-1_good_0.jpg", _window(_hu_slice(1), -1440, 1508))]
    written, report = harmonise_window(flat + good, reference, tmp_path / "out")
    assert len(written) == 1 and "good" in written[0]
    assert report["volumes"]["Data-1_flat"]["used"] is False
    with pytest.raises(FileNotFoundError):
        harmonise_window([], reference, tmp_path / "o2")


def test_volume_of_follows_inf_nets_slice_names():
    assert volume_of("/x/Data-1_coronacases_org_001_15.jpg") == "Data-1_coronacases_org_001"
    assert volume_of("u0.jpg") == "u0"
