"""Writing files whole or not at all: :func:`atomic_path`, and the text and image writers built on it.

MONAI's writers (``NibabelWriter``, ``PILWriter``) write straight to the destination, so a crash or a full disk
mid-write leaves a truncated mask that looks like a result. These subclasses write to a hidden temporary file
in the same folder (same extension, so the format is chosen the same way) and ``os.replace`` it into place; with
``overwrite=False`` the file is put in place only if none is there (``os.link``, which fails on an existing name,
so that two runs writing the same name at the same time cannot both succeed).
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from monai.data import NibabelWriter, PILWriter

from tools.errors import OutputError

__all__ = ["atomic_path", "atomic_write_text", "AtomicNibabelWriter", "AtomicPILWriter"]

logger = logging.getLogger(__name__)


def _refuse_existing(path: Path) -> OutputError:
    return OutputError(f"{path} exists (from an earlier run?); it is not replaced without --overwrite true.")


def _place_new(tmp: Path, path: Path) -> None:
    """Move ``tmp`` to ``path`` only if ``path`` does not exist (atomically where the file system has hard links)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _refuse_existing(path) from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if path.exists():  # no hard links here (e.g. some network or FAT file systems): check, then rename
            raise _refuse_existing(path) from None
        os.replace(tmp, path)
        return
    tmp.unlink()


@contextmanager
def atomic_path(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a hidden temporary path beside ``path`` (same name and extension) to write to; on success it is moved
    onto ``path``, on any error it is removed and ``path`` is left as it was.

    Args:
        path: the file to write.
        overwrite: replace an existing ``path`` (``os.replace``); if False, an existing ``path`` is left alone and
            :class:`tools.errors.OutputError` is raised after the write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".partial-{os.getpid()}-{path.name}")
    try:
        yield tmp
        if overwrite:
            os.replace(tmp, path)
        else:
            _place_new(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, newline="")


class _AtomicWriteMixin:
    def write(self, filename, verbose: bool = True, overwrite: bool = True, **kwargs):  # type: ignore[no-untyped-def]
        with atomic_path(filename, overwrite=overwrite) as tmp:
            super().write(str(tmp), verbose=False, **kwargs)  # type: ignore[misc]
        if verbose:
            logger.info("wrote %s", filename)


class AtomicNibabelWriter(_AtomicWriteMixin, NibabelWriter):
    """``monai.data.NibabelWriter`` (NIfTI) writing whole or not at all."""


class AtomicPILWriter(_AtomicWriteMixin, PILWriter):
    """``monai.data.PILWriter`` (PNG/JPEG) writing whole or not at all."""
