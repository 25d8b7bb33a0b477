"""What the bundles accept as input, and the rules that refuse the rest before the network sees it.

Each rule exists because the input it refuses used to give a wrong mask without a word:

- **16-bit grey images** (PNG/TIFF, PIL modes ``I;16*`` and ``I``): PIL's ``convert("L")`` saturates them (every
  value above 255 becomes white), so a 16-bit slice gave an empty mask. Rule (:func:`grey_converter`): a 16-bit
  image is mapped to 8 bits by ``round(v / 257)``, the inverse of the usual 8-to-16-bit expansion ``v * 257``
  (ImageJ, ``skimage.img_as_uint``), so an 8-bit slice saved at 16 bits gives back its own values. It is refused when
  its values span less than 1/16 of the 16-bit range (``max - min < 4096``): such a file holds raw numbers (a
  12-bit CT stored in 16 bits, HU + 1024, a 0/1 mask), not a display-windowed slice, and the mapping would make it
  near-black. Floating-point images (mode ``F``) and values outside 0..65535 are refused.
- **Grey images given to an RGB bundle** (:func:`rgb_converter`): the polyp and skin-lesion networks learnt colour;
  on a grey picture they give near-empty masks. Refused: files whose PIL mode is grey (``1``, ``L``, ``LA``, ``I``,
  ``I;16*``, ``F``), and colour files whose three channels are equal within 8 levels on at least 99 % of the
  pixels (a grey picture saved as RGB; the most grey-looking CVC-ClinicDB frame, with its black border, has 57 %)
  unless the image is blank (all values within 16 levels: a black frame has nothing to segment).
- **Masks that are not binary** (:func:`check_binary_mask`): masks are 0 (background) and 255 (lesion), binarised at
  128. JPEG compression and anti-aliased edges leave grey values near 0 and 255 and a thin band of intermediate
  ones along the border, so a mask is refused only when it is clearly not a 0/255 mask: it has non-zero pixels but
  none at or above 128 (a 0/1 or 0/1/2 label map, which binarising at 128 would make empty), or more than 10 % of
  its pixels above 32 lie in 33..222 (a graded or soft mask, a probability map). Measured: the CVC-ClinicDB
  masks have at most 0.4 %, PH2 and MedSeg masks 0 %, the same masks re-encoded as JPEG at quality 75 at most
  0.4 % (quality 50: 8.9 %); a mask blurred by a 2-pixel Gaussian has 18 %.
- **CT volumes not in Hounsfield units** (:func:`check_hu_range`): the lung window and lung mask assume HU; a volume
  scaled to 0..1, an MRI, or a CT stored without its rescale intercept (air at 0) gives an all-zero mask. Rule: the
  1st percentile must be at most -500 HU (air, about -1000 HU, surrounds the body and fills the lungs of every chest
  CT) and the 99th percentile at least -200 HU (soft tissue and bone are there too). TotalSegmentator's reference
  CTs have 1st/99th percentiles of -1013/188 and -1012/307 HU; the MyoSegmenTUM spine MRIs 0/162.
- **Incomplete DICOM series** (:func:`check_dicom_series`): ITK reads a series with a truncated file as a shorter
  volume, with only a warning. Rule: every DICOM file of the folder must be readable with its pixel data complete
  (pydicom), all of one series, and the slice positions along the slice normal must be evenly spaced (within
  1 % or 0.01 mm) with no two at the same place.

Every refusal raises :class:`tools.errors.InputError` with the values found.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from tools.errors import InputError

__all__ = [
    "GREY_MODES",
    "grey_converter",
    "rgb_converter",
    "is_grey_rgb",
    "check_binary_mask",
    "check_label_map",
    "check_hu_range",
    "check_dicom_series",
]

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
GREY_MODES = ("1", "L", "LA", "F", *_SIXTEEN_BIT_MODES)
"""PIL modes of grey images."""
MIN_16BIT_SPAN = 4096
"""A 16-bit image whose values span less than this is raw numbers, not a display image (1/16 of 0..65535)."""
GREY_CHANNEL_TOLERANCE = 8
GREY_PIXEL_FRACTION = 0.99
MASK_NEAR = 32
"""Grey levels within this of 0 or 255 count as 0 or 255 in a mask (JPEG and anti-aliasing noise)."""
MAX_GRADED_FRACTION = 0.10
AIR_MAX_P1_HU = -500.0
TISSUE_MIN_P99_HU = -200.0


def _values(a: np.ndarray, limit: int = 8) -> str:
    """The distinct values of ``a``, or its range when there are many."""
    u = np.unique(a)
    if len(u) <= limit:
        return ", ".join(f"{v:g}" for v in u.tolist())
    return f"{u[0]:g}..{u[-1]:g} ({len(u)} distinct values)"


def _to_8bit(image: Image.Image) -> Image.Image:
    """A 16-bit grey image as 8 bits by ``round(v / 257)``; refused if it holds raw numbers (see module docstring)."""
    a = np.asarray(image)
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi > 65535:
        raise InputError(f"a {image.mode} image with values {lo}..{hi}, outside 0..65535; save the slice as 8-bit.")
    if hi - lo < MIN_16BIT_SPAN:
        raise InputError(
            f"a 16-bit image whose values span only {lo}..{hi} (less than {MIN_16BIT_SPAN} of 0..65535): raw numbers "
            "(e.g. CT values or a label map), not a display-windowed slice; window it into an 8-bit image "
            "(lung window -1100..250 HU) or give the CT volume itself."
        )
    return Image.fromarray(np.rint(a.astype(np.float64) / 257.0).astype(np.uint8), mode="L")


def grey_converter(image: Image.Image) -> Image.Image:
    """PIL converter of the grey bundles (slices, masks): one 8-bit grey channel.

    8-bit grey, palette, RGB(A) (screenshots of slices) and bilevel images become ``"L"`` as PIL converts them;
    16-bit images are mapped by ``round(v / 257)`` or refused (module docstring); floating-point images are refused.

    Raises:
        InputError: without the file name (the loader adds it).
    """
    if image.mode in _SIXTEEN_BIT_MODES:
        return _to_8bit(image)
    if image.mode == "F":
        raise InputError("a floating-point image (PIL mode F); save the slice as an 8-bit image.")
    return image.convert("L")


def is_grey_rgb(rgb: np.ndarray) -> bool:
    """Whether an ``(H, W, 3)`` image is a grey picture: equal channels (within 8 levels) on at least 99 % of its
    pixels, and not uniform (a blank frame, black or white, has no content to segment and is not refused)."""
    a = rgb.astype(np.int16)
    spread = np.maximum(np.abs(a[..., 0] - a[..., 1]), np.abs(a[..., 1] - a[..., 2]))
    if float((spread <= GREY_CHANNEL_TOLERANCE).mean()) < GREY_PIXEL_FRACTION:
        return False
    return int(a.max()) - int(a.min()) > 2 * GREY_CHANNEL_TOLERANCE


def rgb_converter(image: Image.Image) -> Image.Image:
    """PIL converter of the RGB bundles: three 8-bit channels; grey pictures refused (module docstring).

    Palette and RGBA images are converted to RGB (the alpha channel is dropped).

    Raises:
        InputError: without the file name (the loader adds it).
    """
    reason = "this bundle's network segments colour (RGB) photographs and gives near-empty masks on grey ones"
    if image.mode in GREY_MODES:
        raise InputError(f"a greyscale image (PIL mode {image.mode}); {reason}. Give the colour original.")
    rgb = image.convert("RGB")
    if is_grey_rgb(np.asarray(rgb)):
        raise InputError(
            f"an RGB image whose three channels are equal on {GREY_PIXEL_FRACTION:.0%} or more of its pixels "
            f"(a grey picture saved as colour); {reason}. Give the colour original."
        )
    return rgb


def check_binary_mask(values: np.ndarray) -> None:
    """Refuse a mask (grey levels 0..255) that is not a 0/255 mask with some JPEG or edge noise.

    Raises:
        InputError: with the values found (without the file name; the caller adds it).
    """
    v = np.asarray(values)
    if bool((v > 0).any()) and not bool((v >= 128).any()):
        raise InputError(
            f"a mask with values {_values(v)} and none at or above 128: a label map (0/1?), not a 0/255 mask; "
            "binarised at 128 it would be empty. Save it with 255 for the lesion."
        )
    foreground = v > MASK_NEAR
    n = int(foreground.sum())
    if n:
        graded = int((foreground & (v < 255 - MASK_NEAR)).sum())
        if graded > MAX_GRADED_FRACTION * n:
            raise InputError(
                f"a graded mask: {graded / n:.0%} of its non-background pixels lie between {MASK_NEAR + 1} and "
                f"{254 - MASK_NEAR} (values {_values(v)}); masks must be 0/255 (at most "
                f"{MAX_GRADED_FRACTION:.0%} grey edge pixels, as JPEG leaves). Threshold it yourself at the level "
                "you mean."
            )


def check_hu_range(volume: np.ndarray, max_voxels: int = 2_000_000) -> tuple[float, float]:
    """Refuse a volume whose intensities are not plausibly Hounsfield units of a chest CT (module docstring).

    Args:
        volume: the volume's values, any shape.
        max_voxels: percentiles are computed on an even subsample of at most this many voxels.

    Returns:
        ``(p1, p99)``, the 1st and 99th percentiles.

    Raises:
        InputError: naming the percentiles found (without the file name; the caller adds it).
    """
    flat = np.asarray(volume).reshape(-1)
    step = max(1, flat.size // max_voxels)
    p1, p99 = (float(p) for p in np.percentile(flat[::step], [1, 99]))
    if p1 > AIR_MAX_P1_HU or p99 < TISSUE_MIN_P99_HU:
        raise InputError(
            f"intensities are not Hounsfield units of a CT: 1st-99th percentile {p1:.4g}..{p99:.4g}, but a CT in HU has "
            f"air near -1000 HU (1st percentile at most {AIR_MAX_P1_HU:g}) and tissue (99th percentile at least "
            f"{TISSUE_MIN_P99_HU:g}). A volume scaled to 0..1, an MRI, or a CT without its rescale slope/intercept "
            "gives an empty mask; give the CT in HU."
        )
    return p1, p99


_NATIVE_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99")


def _read_dicom(path: Path):
    """One DICOM file with its pixel data checked complete; returns the dataset or raises InputError."""
    import pydicom

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(path)
        except Exception as e:  # pydicom raises many types for a broken file
            raise InputError(f"{path}: cannot be read as DICOM ({type(e).__name__}: {e}).") from e
    eof = [str(w.message) for w in caught if "end of file" in str(w.message).lower()]
    if eof or "PixelData" not in ds:
        raise InputError(f"{path}: the file is truncated (its pixel data is incomplete or missing): "
                         f"{eof[0] if eof else 'no PixelData element'}.")
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "1.2.840.10008.1.2"))
    if syntax in _NATIVE_SYNTAXES:
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        expected = int(ds.Rows) * int(ds.Columns) * int(getattr(ds, "SamplesPerPixel", 1)) * frames
        expected = expected * int(ds.BitsAllocated) // 8
        if len(ds.PixelData) < expected:
            raise InputError(f"{path}: the file is truncated: {len(ds.PixelData)} bytes of pixel data, "
                             f"{expected} expected for {ds.Rows}x{ds.Columns}x{frames}.")
    return ds


def check_dicom_series(folder: str | Path, files: Sequence[str | Path] | None = None) -> int:
    """Refuse a DICOM series folder with an unreadable or truncated file, two series, or uneven slice spacing.

    Args:
        folder: the series folder (as given to the bundle).
        files: its DICOM files (default: every visible file of ``folder`` that :func:`tools.data.is_dicom` accepts,
            but a ``DICOMDIR`` index).

    Returns:
        the number of slices.

    Raises:
        InputError: naming the file (or the two files around a gap) and the problem.
    """
    from tools.data import is_dicom

    folder = Path(folder)
    paths = [Path(f) for f in files] if files is not None else sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name.upper() != "DICOMDIR" and is_dicom(p))
    if not paths:
        raise InputError(f"{folder}: holds no DICOM file.")
    slices = [(p, _read_dicom(p)) for p in paths]
    series = {str(getattr(ds, "SeriesInstanceUID", "")) for _, ds in slices}
    if len(series) > 1:
        raise InputError(f"{folder}: holds {len(series)} DICOM series ({', '.join(sorted(series))}); give a folder "
                         "with one series.")
    if len(slices) == 1:
        return 1
    positions = []
    for p, ds in slices:
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            raise InputError(f"{p}: has no ImagePositionPatient/ImageOrientationPatient; the slice order and spacing "
                             "of the series cannot be known.")
        row, col = np.asarray(ds.ImageOrientationPatient[:3], float), np.asarray(ds.ImageOrientationPatient[3:], float)
        positions.append((float(np.dot(np.cross(row, col), np.asarray(ds.ImagePositionPatient, float))), p))
    positions.sort()
    gaps = np.diff([z for z, _ in positions])
    for i, gap in enumerate(gaps):
        if abs(gap) < 1e-3:
            raise InputError(f"{positions[i][1]} and {positions[i + 1][1]} are at the same slice position "
                             f"({positions[i][0]:g} mm): a duplicate file, or two acquisitions mixed.")
    spacing = float(np.median(gaps))
    tolerance = max(0.01, 0.01 * spacing)
    for i, gap in enumerate(gaps):
        if abs(gap - spacing) > tolerance:
            raise InputError(
                f"{folder}: uneven slice spacing: {gap:g} mm between {positions[i][1].name} and "
                f"{positions[i + 1][1].name}, {spacing:g} mm between the others (a missing file?)."
            )
    return len(slices)


def check_label_map(values: np.ndarray, max_label: int) -> None:
    """Refuse a label volume that is not a map of integer labels ``0..max_label`` (0 = background).

    The spine bundle reads MyoSegmenTUM's label maps (0 = background, 1..5 = L1..L5) and takes every label above 0 as
    vertebra; a probability map, a mask scaled to 0..255, negative or fractional values would be turned into a wrong
    foreground without a word. A binary 0/1 mask is a label map and is accepted.

    Raises:
        InputError: with the values found (without the file name; the caller adds it).
    """
    v = np.asarray(values)
    if v.dtype.kind == "f" and not bool(np.isfinite(v).all()):
        raise InputError("a label map holding NaN or infinite values; labels must be integers "
                         f"0..{max_label} (0 = background).")
    if v.dtype.kind == "f" and bool((v != np.round(v)).any()):
        raise InputError(f"a label map with fractional values ({_values(v)}): a probability or resampled map, not "
                         f"integer labels 0..{max_label} (0 = background).")
    if v.size and (float(v.min()) < 0 or float(v.max()) > max_label):
        raise InputError(f"a label map with values {_values(v)}, outside 0..{max_label} (0 = background, 1..{max_label} "
                         "the structures taken as foreground); convert it to those labels (a 0/255 mask: divide by "
                         "255).")

