"""Input checks that MONAI's transforms do not make: they give a clear error naming the file.

The rules themselves (bit depth, binary masks, HU range, DICOM completeness) are in :mod:`tools.input_checks`; these
are the MONAI transforms that apply them in the bundles' chains. Every refusal is a :class:`tools.errors.InputError`
(a ``ValueError``) whose message starts with the file's name.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import ImageReader
from monai.transforms import LoadImaged, MapTransform

from tools.errors import InputError, find_cause
from tools.input_checks import check_binary_mask, check_dicom_series, check_hu_range

__all__ = ["CheckInputd", "CheckedLoadImaged", "CheckBinaryMaskd", "CheckHUd", "CheckDicomSeriesd"]


def _source(data: Mapping, key: Hashable) -> str:
    meta = getattr(data[key], "meta", {}) or {}
    return str(meta.get("filename_or_obj", f"<{key}>"))


class CheckInputd(MapTransform):
    """Fail early, with the file's name, on input a segmentation bundle cannot use.

    Checks, for each key, a channel-first array ``(C, H, W[, D])`` (after ``EnsureChannelFirstd``):
    the number of spatial dimensions, the channel count, finite values (no NaN/inf), and, for
    ``label_keys``, that the mask is not empty unless ``allow_empty_label``.

    Args:
        keys: keys to check.
        spatial_dims: expected number of spatial dimensions (2 for slices, 3 for volumes).
        channels: accepted channel counts per key, e.g. ``{"image": (1,)}``; keys not listed are not checked.
        label_keys: keys holding masks.
        allow_empty_label: accept an all-zero mask (evaluation sets may hold slices without a lesion; training
            masks that are empty usually mean a wrong or broken file).
        same_spatial_shape: require every checked key to have the spatial shape of the first one (an image and
            its mask must cover the same pixels; otherwise resizing would silently pair them anyway).

    Raises:
        InputError: (a ``ValueError``) naming the file and what is wrong.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_dims: int,
        channels: Mapping[str, tuple[int, ...]] | None = None,
        label_keys: KeysCollection = (),
        allow_empty_label: bool = False,
        allow_missing_keys: bool = False,
        same_spatial_shape: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.same_spatial_shape = same_spatial_shape
        self.spatial_dims = spatial_dims
        self.channels = dict(channels or {})
        self.label_keys = {label_keys} if isinstance(label_keys, str) else set(label_keys)
        self.allow_empty_label = allow_empty_label

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        first: tuple | None = None
        for key in self.key_iterator(d):
            x, src = d[key], _source(d, key)
            if self.same_spatial_shape:
                if first is None:
                    first = (key, tuple(x.shape[1:]), src)
                elif tuple(x.shape[1:]) != first[1]:
                    raise InputError(
                        f"{src}: '{key}' has spatial shape {tuple(x.shape[1:])} but '{first[0]}' ({first[2]}) has "
                        f"{first[1]}; an image and its mask must have the same size."
                    )
            if x.ndim != self.spatial_dims + 1:
                raise InputError(
                    f"{src}: '{key}' has {x.ndim - 1} spatial dimensions (shape {tuple(x.shape)} channel-first); "
                    f"this bundle expects {self.spatial_dims}D input."
                )
            allowed = self.channels.get(str(key))
            if allowed is not None and x.shape[0] not in allowed:
                raise InputError(f"{src}: '{key}' has {x.shape[0]} channels; expected one of {tuple(allowed)}.")
            xt = torch.as_tensor(x)
            if xt.is_floating_point() and not bool(torch.isfinite(xt).all()):
                raise InputError(f"{src}: '{key}' holds NaN or infinite values.")
            if key in self.label_keys and not self.allow_empty_label and not bool((xt > 0).any()):
                raise InputError(f"{src}: mask '{key}' is empty (no foreground pixel); a training mask must not be.")
        return d


class CheckedLoadImaged(LoadImaged):
    """``monai.transforms.LoadImaged`` whose read errors name the file and say what is wrong.

    MONAI passes reader errors through as they come: a truncated JPEG raises ``OSError: image file is truncated``
    without the file's name, and a file no reader accepts raises "cannot find a suitable reader ... please install
    the reader libraries", which sends users looking for a missing package when the file is corrupt. This
    subclass re-raises both as ``InputError("<file>: cannot be read ...")`` (the original error chained). A refusal
    by the reader's converter (:func:`tools.input_checks.grey_converter`, :func:`~tools.input_checks.rgb_converter`:
    bit depth, grey image for an RGB bundle) is re-raised as ``InputError("<file>: <reason>")``.
    Arguments are those of ``LoadImaged``. A reader *instance* given as ``reader`` is used alone (as MONAI's runtime
    reader), so that its errors reach this class instead of being turned into text by MONAI's search through its
    other readers.
    """

    def __init__(self, keys: KeysCollection, reader=None, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(keys, reader, *args, **kwargs)
        self._reader = reader if isinstance(reader, ImageReader) else None
        self._loader = _NamingLoader(self._loader)

    def __call__(self, data, reader=None):  # type: ignore[no-untyped-def]
        try:
            return super().__call__(data, reader if reader is not None else self._reader)
        except Exception as e:
            failed = find_cause(e, _LoadFailed)
            name = failed.filename if failed is not None else ", ".join(
                str(data[k]) for k in self.key_iterator(dict(data)))
            refusal = find_cause(e, InputError)
            if refusal is not None:
                raise InputError(f"{name}: {refusal}") from e
            cause = failed.__cause__ if failed is not None and failed.__cause__ is not None else e
            raise InputError(
                f"{name}: cannot be read as an image or volume; the file may be corrupt, truncated or of an "
                f"unsupported format ({type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''})"
            ) from e


class _LoadFailed(Exception):
    """Carries the name of the file whose loading failed (the cause is the reader's error)."""

    def __init__(self, filename: object) -> None:
        super().__init__(str(filename))
        self.filename = str(filename)


class _NamingLoader:
    """Wraps ``LoadImaged``'s ``LoadImage`` so that an error says which of the keys' files failed (thread-safe: the
    name travels with the exception)."""

    def __init__(self, loader) -> None:  # type: ignore[no-untyped-def]
        self.loader = loader

    def __call__(self, filename, reader=None):  # type: ignore[no-untyped-def]
        try:
            return self.loader(filename, reader)
        except Exception as e:
            raise _LoadFailed(filename) from e

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.loader, name)


class CheckBinaryMaskd(MapTransform):
    """Refuse a mask (grey levels 0..255, before binarising at 128) that is not a 0/255 mask: a label map (0/1) or a
    graded mask; the rule is :func:`tools.input_checks.check_binary_mask`.

    Raises:
        InputError: naming the file and the values found.
    """

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            try:
                check_binary_mask(torch.as_tensor(d[key]).detach().cpu().numpy())
            except InputError as e:
                raise InputError(f"{_source(d, key)}: {e}") from None
        return d


class CheckHUd(MapTransform):
    """Refuse a CT volume whose intensities are not plausibly Hounsfield units (0..1-scaled, MRI, no rescale
    intercept); the rule is :func:`tools.input_checks.check_hu_range`.

    Raises:
        InputError: naming the file and the 1st-99th percentile range found.
    """

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            try:
                check_hu_range(torch.as_tensor(d[key]).detach().cpu().numpy().astype(np.float32, copy=False))
            except InputError as e:
                raise InputError(f"{_source(d, key)}: {e}") from None
        return d


class CheckDicomSeriesd(MapTransform):
    """Before reading a DICOM series folder (the key holds its path), refuse it when a file is unreadable or
    truncated, it mixes series, or its slices are unevenly spaced; the rule is
    :func:`tools.input_checks.check_dicom_series` (pydicom reads each file; ITK would read a shorter volume).

    Raises:
        InputError: naming the bad file, or the two files around a gap.
    """

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path = d[key]
            if isinstance(path, (str, Path)) and Path(path).is_dir():
                check_dicom_series(path)
        return d
