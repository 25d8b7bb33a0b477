"""Running a bundle's workflow from its config: checks before the model runs, one bad input costs that input and
not the run, and the user reads the cause.

The configs' run ids call these functions instead of ``@evaluator.run()``:

- **Before the model runs**: :func:`check_output_dir` (the output folder is creatable, writable and not a file) and,
  for inference, :func:`check_mask_outputs` (no two inputs write the same mask file; no mask of an earlier run is
  replaced unless ``--overwrite true``). Nothing is written when they refuse.
- **While it runs**: :class:`TolerantDataset` loads each input through the bundle's chain, where every input check
  lives (:mod:`tools.input_checks`). An input the chain refuses (:class:`tools.errors.InputError` anywhere in the
  chain of causes) is logged and replaced by a marker item ``{SKIPPED_KEY: reason}``; :func:`skip_failed_items`, the
  evaluator's ``iteration_update``, records the reason and passes the marker by without running the network, so the
  post-processing (mask writing) and the metrics never see it. Any other error (a bug) still stops the run.
- **After**: :func:`run_inference` and :func:`run_evaluation` raise :class:`tools.errors.InputsFailed` listing
  every input that failed, after the others were processed, so the process exits non-zero.
- **Printing**: :func:`report_errors_clearly`, called by the configs' ``initialize``, makes an uncaught error of the
  project (:func:`clear_message`) print its message alone as the last lines instead of a traceback that ends in
  MONAI's ``RuntimeError: Failed to evaluate ConfigExpression``; other errors keep their traceback, followed by
  their innermost message. Exceptions still propagate (exit status 1): code that runs a bundle in-process (MONAI
  Label, ``tools.commands.compare``, the tests) catches them as before.

Why a marker rather than validating the datalist first: the checks that matter need the pixels (a truncated JPEG has
a valid header; bit depth, graded masks and HU range are in the data), so validating first would read every input
twice, while the marker costs nothing for good inputs and keeps the checks in the one chain that also runs in
training. It needs a batch size of 1 (a marker cannot be collated with images); inference and evaluation use 1.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.data import Dataset

from tools.errors import BundleError, InputError, InputsFailed, OutputError, cause_chain, find_cause
from tools.options import as_flag

__all__ = [
    "SKIPPED_KEY",
    "TolerantDataset",
    "skip_failed_items",
    "check_output_dir",
    "check_mask_outputs",
    "run_inference",
    "run_evaluation",
    "as_flag",
    "clear_message",
    "report_errors_clearly",
]

logger = logging.getLogger(__name__)

SKIPPED_KEY = "skipped_input"
"""Key of the marker item :class:`TolerantDataset` yields for an input that failed; its value is the reason."""


class TolerantDataset(Dataset):
    """``monai.data.Dataset`` that yields a marker in place of an input its transform refuses.

    An error with a :class:`tools.errors.InputError` in its chain of causes (every check of the bundles' chains raises
    one, naming the file) is logged as a warning and the item becomes ``{SKIPPED_KEY: reason}``, which
    :func:`skip_failed_items` records and passes by. Other errors propagate.

    Args:
        data: the datalist.
        transform: the bundle's preprocessing chain.
    """

    def _transform(self, index: int) -> Any:
        try:
            return super()._transform(index)
        except Exception as e:
            refusal = find_cause(e, InputError)
            if refusal is None:
                raise
            reason = str(refusal)
            logger.warning("skipped: %s", reason)
            return {SKIPPED_KEY: reason}


SKIPPED_STATE = "skipped_inputs"
"""Attribute of ``engine.state`` where :func:`skip_failed_items` collects the reasons of the inputs it skipped."""


def skip_failed_items(engine: Any, batch: Any) -> Any:
    """``iteration_update`` of a MONAI ``SupervisedEvaluator``: a marker batch of :class:`TolerantDataset` becomes the
    output ``{SKIPPED_KEY: [reason]}`` without running the network or the post-processing, and its reasons are added
    to ``engine.state.skipped_inputs`` (here, in the main process, so that they are also collected when data loader
    workers load the inputs); any other batch runs the evaluator's own iteration."""
    if isinstance(batch, Mapping) and SKIPPED_KEY in batch:
        reasons = batch[SKIPPED_KEY]
        reasons = list(reasons) if isinstance(reasons, (list, tuple)) else [reasons]
        if getattr(engine.state, SKIPPED_STATE, None) is None:
            setattr(engine.state, SKIPPED_STATE, [])
        getattr(engine.state, SKIPPED_STATE).extend(reasons)
        return {SKIPPED_KEY: reasons}
    return engine._iteration(engine, batch)


def check_output_dir(path: str | Path) -> Path:
    """Create the output folder if needed and check that files can be written in it, before anything runs.

    Raises:
        OutputError: if ``path`` (or a folder above it) is a file, or the folder cannot be created or written.
    """
    p = Path(path).expanduser()
    for q in (p, *p.parents):
        if q.exists() and not q.is_dir():
            what = f"output folder {p}" if q == p else f"output folder {p}: {q}"
            raise OutputError(f"{what} is a file, not a folder; give a folder (it is created if missing).")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"output folder {p} cannot be created: {e.strerror or e}.") from e
    probe = p / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OutputError(f"output folder {p} is not writable: {e.strerror or e}.") from e
    return p


def check_mask_outputs(inputs: Sequence[str | Path], output_dir: str | Path, volume: bool,
                       overwrite: bool = False) -> list[Path]:
    """The mask files the inputs will be written to (:func:`tools.masks.mask_path`), refused before the run when
    two inputs would write the same file (``7.jpg`` and ``7.png`` both give ``7_mask.png``; names compared
    case-insensitively, as some file systems do), or when a mask file exists and ``overwrite`` is false.

    Raises:
        OutputError: naming the inputs that clash, or the existing files.
    """
    from tools.masks import mask_path

    seen: dict[str, tuple[str, Path]] = {}
    clashes = []
    for src in inputs:
        out = mask_path(src, output_dir, volume)
        key = str(out).casefold()
        if key in seen:
            clashes.append(f"{seen[key][0]} and {src} -> {out}")
        else:
            seen[key] = (str(src), out)
    if clashes:
        raise OutputError(
            f"{len(clashes)} mask file name(s) would be written twice: {'; '.join(clashes[:5])}"
            f"{' ...' if len(clashes) > 5 else ''}. Rename one input of each pair or run them into different output "
            "folders; nothing was written."
        )
    outputs = [out for _, out in seen.values()]
    existing = [str(out) for out in outputs if out.exists()]
    if existing and not overwrite:
        raise OutputError(
            f"{len(existing)} of {len(outputs)} mask file(s) exist already (an earlier run?): "
            f"{', '.join(existing[:5])}{' ...' if len(existing) > 5 else ''}. Pass --overwrite true to replace them, "
            "or give another --output_dir; nothing was written."
        )
    return outputs


def _check_batch_size(engine: Any) -> None:
    loader = getattr(engine, "data_loader", None)
    if isinstance(getattr(loader, "dataset", None), TolerantDataset) and getattr(loader, "batch_size", 1) != 1:
        raise ValueError(f"a TolerantDataset needs batch_size 1 (a failed input's marker cannot be batched with "
                         f"images); the data loader has {loader.batch_size}.")


def _run_reporting_skips(engine: Any, what: str) -> None:
    """Run ``engine``; then raise InputsFailed if :func:`skip_failed_items` skipped some inputs."""
    _check_batch_size(engine)
    setattr(engine.state, SKIPPED_STATE, [])
    engine.run()
    reasons = list(getattr(engine.state, SKIPPED_STATE, None) or [])
    if not reasons:
        return
    total = len(engine.data_loader.dataset)
    if total == 1:
        raise InputsFailed(f"{reasons[0]} Nothing was written.", reasons, total)
    done = total - len(reasons)
    head = (f"{len(reasons)} of {total} input(s) could not be used and were skipped; "
            + (f"the other {done} were processed ({what}):" if done else "nothing was written:"))
    raise InputsFailed("\n".join([head, *(f"  {reason}" for reason in reasons)]), reasons, total)


def _no_seg_note(reasons: Sequence[str], total: int, output_dir: str | Path) -> str:
    """The message naming the inputs that got a mask but no DICOM SEG (at most 10 listed), or "" when none."""
    if not reasons:
        return ""
    more = f"\n  ... and {len(reasons) - 10} more" if len(reasons) > 10 else ""
    return (f"--output_format dicom_seg: {len(reasons)} of {total} input(s) got no DICOM SEG (their masks in "
            f"{output_dir} were written):\n" + "\n".join(f"  {r}" for r in reasons[:10]) + more)


def run_inference(evaluator: Any, datalist: Sequence[Mapping], output_dir: str | Path, volume: bool = False,
                  overwrite: Any = False, output_format: Any = "nifti") -> None:
    """The inference run: check the output folder and the masks' names, run ``evaluator``, then raise
    :class:`~tools.errors.InputsFailed` if some inputs were skipped (their masks are not written, the others are).

    Args:
        evaluator: the bundle's ``SupervisedEvaluator`` (its data loader's dataset a :class:`TolerantDataset`, its
            post-processing writing the masks with :func:`tools.pipelines.mask_saver`).
        datalist: the inputs, ``[{"image": path}, ...]``.
        output_dir: the masks' folder.
        volume: the inputs are CT volumes (masks ``.nii.gz``), else 2D images (``.png``).
        overwrite: replace masks that exist (``--overwrite true``); accepts booleans and ``"true"``/``"false"``.
        output_format: ``"nifti"`` or ``"dicom_seg"`` (a DICOM SEG beside the mask of each DICOM series input,
            :mod:`tools.dicom_seg`). Inputs that cannot have a SEG (a NIfTI file, 2D images, a series without its
            Study Instance UID) still get their mask, and are named by an :class:`~tools.errors.InputError` after the
            run.

    Raises:
        ValueError: for an unknown ``output_format``.
        OutputError: before the model runs (:func:`check_output_dir`, :func:`check_mask_outputs`, existing SEGs).
        InputsFailed: after the run, listing each skipped input and why.
        InputError: after the run, with ``output_format`` ``"dicom_seg"``, naming the inputs without a SEG and why.
    """
    from tools.dicom_seg import check_output_format, check_seg_outputs

    fmt, overwrite = check_output_format(output_format), as_flag(overwrite, "overwrite")
    check_output_dir(output_dir)
    inputs = [d["image"] for d in datalist]
    check_mask_outputs(inputs, output_dir, volume, overwrite)
    no_seg = check_seg_outputs(inputs, output_dir, overwrite) if fmt == "dicom_seg" else []
    for reason in no_seg:
        logger.warning(reason)
    note = _no_seg_note(no_seg, len(inputs), output_dir)
    try:
        _run_reporting_skips(evaluator, f"masks in {output_dir}")
    except InputsFailed as e:
        if not note:
            raise
        raise InputsFailed(f"{e}\n{note}", e.reasons + no_seg, e.total) from e
    if note:
        raise InputError(note)


def run_evaluation(evaluator: Any, output_dir: str | Path) -> None:
    """The evaluation run: check the output folder, run ``evaluator`` (its metrics handler writes ``metrics.json``
    over the images that could be read, naming the others), then raise :class:`~tools.errors.InputsFailed` if some
    image or mask was skipped.

    Raises:
        OutputError: before the model runs.
        InputsFailed: after the run, listing each skipped pair and why.
    """
    check_output_dir(output_dir)
    _run_reporting_skips(evaluator, f"metrics in {Path(output_dir) / 'metrics.json'}")


_PROJECT_PACKAGES = ("tools", "custom_networks")


def _raised_in_project(exc: BaseException) -> bool:
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = str(tb.tb_frame.f_globals.get("__name__", ""))
    return module.split(".")[0] in _PROJECT_PACKAGES


def clear_message(exc: BaseException) -> tuple[str, bool]:
    """The message a user needs from ``exc``, and whether it is an expected error of the project.

    Expected: a :class:`tools.errors.BundleError` anywhere in the chain of causes (its message), an ``OSError`` with
    a file name at the end of the chain (``[Errno 2] No such file or directory: '...'``), or any error raised by the
    project's own code (``tools``, ``custom_networks``; e.g. a dataset folder without its mask folder). Otherwise
    (an error inside a library: a bug or a case no check foresaw) the innermost exception as ``Type: message``.
    """
    chain = cause_chain(exc)
    project = next((e for e in chain if isinstance(e, BundleError)), None)
    if project is not None:
        return str(project), True
    inner = chain[-1]
    if (isinstance(inner, OSError) and inner.filename) or _raised_in_project(inner):
        return str(inner), True
    return f"{type(inner).__name__}: {inner}", False


def report_errors_clearly() -> None:
    """Install a ``sys.excepthook`` that ends an uncaught error with its cause as the last lines printed.

    For an expected error (:func:`clear_message`) it prints ``ERROR: <message>`` alone (set
    ``SEG_BUNDLES_TRACEBACK=1`` to see the traceback too); for others the usual traceback, then that line. The
    process still exits with status 1. Idempotent; a no-op for callers that catch their exceptions (tests, MONAI
    Label), since only uncaught errors reach the hook.
    """
    if getattr(sys.excepthook, "_seg_bundles", False):
        return
    previous = sys.excepthook

    def hook(exc_type, exc, tb):  # type: ignore[no-untyped-def]
        if issubclass(exc_type, KeyboardInterrupt):
            return previous(exc_type, exc, tb)
        try:
            message, expected = clear_message(exc)
        except Exception:  # never lose the original error to a bug here
            return previous(exc_type, exc, tb)
        if not expected or os.environ.get("SEG_BUNDLES_TRACEBACK"):
            previous(exc_type, exc, tb)
        sys.stderr.write(f"ERROR: {message}\n")
        sys.stderr.flush()

    hook._seg_bundles = True  # type: ignore[attr-defined]
    sys.excepthook = hook

