"""Image writers that write a file whole or not at all.

MONAI's writers (``NibabelWriter``, ``PILWriter``) write straight to the destination, so a crash or a full disk
mid-write leaves a truncated mask that looks like a result. These subclasses write to a hidden temporary file
in the same folder (same extension, so the format is chosen the same way) and ``os.replace`` it into place.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from monai.data import NibabelWriter, PILWriter

__all__ = ["AtomicNibabelWriter", "AtomicPILWriter"]

logger = logging.getLogger(__name__)


class _AtomicWriteMixin:
    def write(self, filename, verbose: bool = True, **kwargs):  # type: ignore[no-untyped-def]
        path = Path(filename)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".partial-{os.getpid()}-{path.name}")
        try:
            super().write(str(tmp), verbose=False, **kwargs)  # type: ignore[misc]
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if verbose:
            logger.info("wrote %s", path)


class AtomicNibabelWriter(_AtomicWriteMixin, NibabelWriter):
    """``monai.data.NibabelWriter`` (NIfTI) writing whole or not at all."""


class AtomicPILWriter(_AtomicWriteMixin, PILWriter):
    """``monai.data.PILWriter`` (PNG/JPEG) writing whole or not at all."""
