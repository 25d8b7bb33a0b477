"""Input checks that MONAI's transforms do not make: they give a clear error naming the file."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import LoadImaged, MapTransform

__all__ = ["CheckInputd", "CheckedLoadImaged"]


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

    Raises:
        ValueError: naming the file and what is wrong.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_dims: int,
        channels: Mapping[str, tuple[int, ...]] | None = None,
        label_keys: KeysCollection = (),
        allow_empty_label: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spatial_dims = spatial_dims
        self.channels = dict(channels or {})
        self.label_keys = {label_keys} if isinstance(label_keys, str) else set(label_keys)
        self.allow_empty_label = allow_empty_label

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            x, src = d[key], _source(d, key)
            if x.ndim != self.spatial_dims + 1:
                raise ValueError(
                    f"{src}: '{key}' has {x.ndim - 1} spatial dimensions (shape {tuple(x.shape)} channel-first); "
                    f"this bundle expects {self.spatial_dims}D input."
                )
            allowed = self.channels.get(str(key))
            if allowed is not None and x.shape[0] not in allowed:
                raise ValueError(f"{src}: '{key}' has {x.shape[0]} channels; expected one of {tuple(allowed)}.")
            xt = torch.as_tensor(x)
            if xt.is_floating_point() and not bool(torch.isfinite(xt).all()):
                raise ValueError(f"{src}: '{key}' holds NaN or infinite values.")
            if key in self.label_keys and not self.allow_empty_label and not bool((xt > 0).any()):
                raise ValueError(f"{src}: mask '{key}' is empty (no foreground pixel); a training mask must not be.")
        return d


class CheckedLoadImaged(LoadImaged):
    """``monai.transforms.LoadImaged`` whose read errors name the file and say what is wrong.

    MONAI passes reader errors through as they come: a truncated JPEG raises ``OSError: image file is truncated``
    without the file's name, and a file no reader accepts raises "cannot find a suitable reader ... please install
    the reader libraries", which sends users looking for a missing package when the file is corrupt. This
    subclass re-raises both as ``ValueError("<file>: cannot be read ...")`` (the original error chained).
    Arguments are those of ``LoadImaged``.
    """

    def __call__(self, data, reader=None):  # type: ignore[no-untyped-def]
        try:
            return super().__call__(data, reader)
        except Exception as e:
            names = [str(data[k]) for k in self.key_iterator(dict(data))]
            raise ValueError(
                f"{', '.join(names)}: cannot be read as an image or volume; the file may be corrupt, truncated or of "
                f"an unsupported format ({type(e).__name__}: {str(e).splitlines()[0]})"
            ) from e
