"""Writing files whole or not at all: :func:`atomic_path`, and the text and image writers built on it.

MONAI's writers (``NibabelWriter``, ``PILWriter``) write straight to the destination, so a crash or a full disk
mid-write leaves a truncated mask that looks like a result. These subclasses write to a hidden temporary file
in the same folder (same extension, so the format is chosen the same way) and ``os.replace`` it into place.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from monai.data import NibabelWriter, PILWriter

__all__ = ["atomic_path", "atomic_write_text", "AtomicNibabelWriter", "AtomicPILWriter"]

logger = logging.getLogger(__name__)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a hidden temporary path beside ``path`` (same name and extension) to write to; on success it is
    ``os.replace``-d onto ``path``, on any error it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".partial-{os.getpid()}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, newline="")


class _AtomicWriteMixin:
    def write(self, filename, verbose: bool = True, **kwargs):  # type: ignore[no-untyped-def]
        with atomic_path(filename) as tmp:
            super().write(str(tmp), verbose=False, **kwargs)  # type: ignore[misc]
        if verbose:
            logger.info("wrote %s", filename)


class AtomicNibabelWriter(_AtomicWriteMixin, NibabelWriter):
    """``monai.data.NibabelWriter`` (NIfTI) writing whole or not at all."""


class AtomicPILWriter(_AtomicWriteMixin, PILWriter):
    """``monai.data.PILWriter`` (PNG/JPEG) writing whole or not at all."""
