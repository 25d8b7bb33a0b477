"""The errors the project raises for a user's input, output folder or checkpoint: each message names the file and
the problem, so that it is all a user needs to read (:func:`tools.runner.report_errors_clearly` prints it alone).

They subclass the built-in types callers already catch (``ValueError``, ``OSError``), so ``except ValueError``
around a transform, or ``pytest.raises(ValueError)``, keeps working.
"""

from __future__ import annotations

__all__ = ["BundleError", "InputError", "OutputError", "CheckpointError", "InputsFailed", "cause_chain", "find_cause"]


class BundleError(Exception):
    """Base of the project's errors about what a user gave it; the message names the file and the problem."""


class InputError(BundleError, ValueError):
    """An input (image, mask, volume, DICOM series) that the bundle cannot use as it is."""


class OutputError(BundleError, OSError):
    """An output folder or file that cannot be written, or would overwrite something."""


class CheckpointError(BundleError, OSError):
    """A checkpoint or weights file that cannot be read, is truncated, or does not fit the network."""


class InputsFailed(BundleError):
    """Some inputs of a run could not be used (the others were processed); the message lists each with its reason.

    Attributes:
        reasons: one message per input that failed, each starting with the file's name.
        total: how many inputs the run had.
    """

    def __init__(self, message: str, reasons: list[str], total: int) -> None:
        super().__init__(message)
        self.reasons = reasons
        self.total = total


def cause_chain(exc: BaseException | None) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or during, outermost first (MONAI wraps a transform's error in
    ``RuntimeError("applying transform ...")`` and a config expression's in ``RuntimeError("Failed to evaluate
    ...")``)."""
    out: list[BaseException] = []
    while exc is not None and all(exc is not e for e in out):
        out.append(exc)
        exc = exc.__cause__ if exc.__cause__ is not None else (None if exc.__suppress_context__ else exc.__context__)
    return out


def find_cause(exc: BaseException | None, kind: type) -> BaseException | None:
    """The outermost exception of type ``kind`` in :func:`cause_chain`, or None."""
    return next((e for e in cause_chain(exc) if isinstance(e, kind)), None)
