"""File names shared by the datalists: the image and volume extensions, natural order."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["IMAGE_EXTENSIONS", "VOLUME_EXTENSIONS", "has_ext", "natural_key", "natural_name_key"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
VOLUME_EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")


def has_ext(path: Path, exts: tuple[str, ...]) -> bool:
    """Whether ``path``'s name ends in one of ``exts`` (case-insensitively)."""
    return path.name.lower().endswith(exts)


def natural_name_key(name: str) -> tuple:
    """Natural sort key of a file name: digit runs compare as numbers (``img2`` < ``img10``, ``2`` < ``10``)."""
    parts = re.split(r"(\d+)", name)
    return tuple(int(t) if i % 2 else t.lower() for i, t in enumerate(parts)) + (name,)


def natural_key(path: Path) -> tuple:
    """:func:`natural_name_key` of a path's file name."""
    return natural_name_key(path.name)
