"""Checkpoints that survive interruption, resumed runs that keep ``n_saved``, load errors that name the file, and
the explicit step that ships a run's best model.

MONAI's ``CheckpointSaver`` writes with ignite's ``DiskSaver(atomic=False)`` (MONAI turns atomic writing off
because ignite's temporary file is created without group/other read permission), and ignite's ``Checkpoint``
(0.5.5, ``Checkpoint.__call__``) removes the file it replaces *before* writing the new one; so a kill during a
write left no loadable checkpoint at all, and a fixed-name best model (``model.pt``) was deleted, then rewritten in
place. :class:`CheckpointSaver` keeps MONAI's handler and its arguments and swaps each of its ignite savers for one
that writes to a temporary file in the same folder (:func:`tools.io.atomic_path`, normal permissions) and
``os.replace``-s it, and removes a superseded file only after the new one is complete.

A resumed run starts with an empty list of saved files, so ignite never removed the previous run's
``resume_checkpoint_epoch=N.pt`` files and they piled up (300 MB each for ResAttUNet). At the start of a run the
saver adopts the files of its own name pattern already in its folder, up to the epoch the run resumes from; the
newest ``n_saved`` count towards ``n_saved`` as if this run had written them, and the older ones are removed once the
run has written its first checkpoint.

:class:`CheckpointLoader` (MONAI's, for the same arguments) names the file when it cannot load it, and refuses a
truncated file already when the workflow is built (before any model runs). :func:`promote` is the one step that
writes a bundle's shipped ``models/model.pt``: training writes only to its own output folder.
"""

from __future__ import annotations

import logging
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from ignite.handlers.checkpoint import BaseSaveHandler
from monai.handlers import CheckpointLoader as _MonaiCheckpointLoader
from monai.handlers import CheckpointSaver as _MonaiCheckpointSaver

from tools.errors import CheckpointError
from tools.io import atomic_path

__all__ = ["AtomicDiskSaver", "CheckpointSaver", "CheckpointLoader", "check_checkpoint_file", "resume_weights", "promote"]

logger = logging.getLogger(__name__)

_ZIP_MAGIC = b"PK\x03\x04"


def check_checkpoint_file(path: str | Path | None) -> None:
    """Refuse a checkpoint that is empty or truncated, cheaply (torch saves zip archives, whose directory is at the
    end: a cut file has none). A missing file or ``None`` passes (the loader reports a missing file itself).

    Raises:
        CheckpointError: naming the file.
    """
    if not path:
        return
    p = Path(path)
    if not p.is_file():
        return
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p}: the checkpoint file is empty (an interrupted write?).")
    with open(p, "rb") as f:
        magic = f.read(4)
    if magic == _ZIP_MAGIC:
        try:
            with zipfile.ZipFile(p) as z:
                z.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise CheckpointError(
                f"{p}: the checkpoint file is truncated or corrupt ({e}); an interrupted copy or write? Resume from "
                "another checkpoint of the run."
            ) from e


class AtomicDiskSaver(BaseSaveHandler):
    """ignite save handler: ``torch.save`` to a temporary file in ``dirname``, ``os.replace`` onto the name; files
    that ignite asks to remove are removed only after the next save is complete.

    Args:
        dirname: the folder (created).
        filename: a fixed file name for every save (MONAI's ``key_metric_filename``/``final_filename``), or None.
    """

    def __init__(self, dirname: str | Path, filename: str | None = None) -> None:
        self.dirname = Path(dirname)
        self.dirname.mkdir(parents=True, exist_ok=True)
        self.filename = filename
        self.pending_removal: list[str] = []

    def __call__(self, checkpoint: Any, filename: str, metadata: Any = None) -> None:
        name = self.filename or filename
        with atomic_path(self.dirname / name) as tmp:
            torch.save(checkpoint, tmp)
        for old in self.pending_removal:
            if old != name:
                (self.dirname / old).unlink(missing_ok=True)
        self.pending_removal.clear()

    def remove(self, filename: str) -> None:
        self.pending_removal.append(self.filename or filename)


def _pattern(ckpt: Checkpoint) -> re.Pattern:
    """The file names ``ckpt`` gives its saves, the score (epoch or iteration) as group 1."""
    name = "checkpoint" if len(ckpt.to_save) != 1 else next(iter(ckpt.to_save))
    template = ckpt.filename_pattern or Checkpoint.setup_filename_pattern(
        with_prefix=bool(ckpt.filename_prefix), with_score=True, with_score_name=ckpt.score_name is not None,
        with_global_step=False)
    marker = "\0"
    text = template.format(filename_prefix=ckpt.filename_prefix, ext=ckpt.ext, name=name, score_name=ckpt.score_name,
                           score=marker, global_step="")
    return re.compile(re.escape(text).replace(re.escape(marker), r"(\d+)"))


class CheckpointSaver(_MonaiCheckpointSaver):
    """MONAI's ``CheckpointSaver`` (same arguments) writing atomically, removing old files only after the new one is
    complete, and honouring ``n_saved`` across resumed runs (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for ckpt in self._checkpoints():
            ckpt.save_handler = AtomicDiskSaver(self.save_dir, getattr(ckpt.save_handler, "filename", None))

    def _checkpoints(self) -> list[Checkpoint]:
        return [c for c in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint)
                if c is not None]

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        if self._interval_checkpoint is not None:
            engine.add_event_handler(Events.STARTED, self._adopt_previous_saves)

    def _adopt_previous_saves(self, engine: Engine) -> None:
        """Count the interval checkpoints already in the folder, up to where this run starts, as this run's own."""
        ckpt = self._interval_checkpoint
        start = engine.state.epoch if self.epoch_level else engine.state.iteration
        pattern, known = _pattern(ckpt), {item.filename for item in ckpt._saved}
        found = sorted((int(m[1]), p.name) for p in Path(self.save_dir).iterdir()
                       if (m := pattern.fullmatch(p.name)) and int(m[1]) <= start and p.name not in known)
        if not found:
            return
        keep = found if ckpt.n_saved is None else found[-ckpt.n_saved:]
        ckpt._saved.extend(Checkpoint.Item(score, name) for score, name in keep)
        ckpt._saved.sort(key=lambda item: item.priority)
        surplus = [name for _, name in found[: len(found) - len(keep)]]
        ckpt.save_handler.pending_removal.extend(surplus)
        logger.info("resumed run: %d earlier checkpoint(s) in %s count towards n_saved=%s%s", len(keep), self.save_dir,
                    ckpt.n_saved, f"; {len(surplus)} older removed after the next save" if surplus else "")


class CheckpointLoader(_MonaiCheckpointLoader):
    """MONAI's ``CheckpointLoader`` (same arguments) whose errors name the file.

    A truncated or empty file is refused when the handler is built (:func:`check_checkpoint_file`), i.e. when the
    workflow is set up, before any model runs; any other failure to load (unreadable file, weights that do not fit
    the network) is re-raised as :class:`tools.errors.CheckpointError` naming the file, the original chained.
    """

    def __init__(self, load_path: str, load_dict: dict, *args: Any, **kwargs: Any) -> None:
        check_checkpoint_file(load_path)
        super().__init__(load_path, load_dict, *args, **kwargs)

    def __call__(self, engine: Engine) -> None:
        try:
            super().__call__(engine)
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise CheckpointError(f"{self.load_path}: cannot be loaded as a checkpoint of this network "
                                  f"({type(e).__name__}: {first})") from e


def resume_weights(resume: str | Path, target: str | Path) -> int:
    """Write the network weights of a resume checkpoint (``train.json``'s ``resume_handlers``: ``{"model",
    "optimizer", "trainer", ...}``) to ``target`` as a weights-only state dict, whole or not at all.

    Returns:
        the epoch the checkpoint was saved at (ignite keeps the iteration and the epoch length, not the epoch).

    Raises:
        CheckpointError: if the file is not a resume checkpoint (no ``model`` and ``trainer`` entries).
    """
    check_checkpoint_file(resume)
    state = torch.load(resume, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "model" not in state or "trainer" not in state:
        raise CheckpointError(f"{resume}: not a resume checkpoint (no 'model' and 'trainer' entries).")
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        torch.save(state["model"], tmp)
    trainer = state["trainer"]
    return int(trainer["iteration"]) // max(int(trainer["epoch_length"]), 1)


def promote(run_dir: str | Path, bundle_dir: str | Path, dtype: str = "float16",
            destination: str = "models/model.pt") -> dict:
    """Make a training run's best model the bundle's shipped weights: ``RUN/models/model.pt`` ->
    ``BUNDLE/models/model.pt``, compact (weights only, ``dtype``; :func:`tools.weights.compact_weights`) and written
    whole or not at all.

    The weights are first loaded, strictly, into the network of the bundle's ``configs/inference.json``, so a model
    of another size or network (a test run's tiny network, a baseline) is refused before anything is written.

    Args:
        run_dir: a training run's output folder (its ``models/model.pt`` is the best validation model, or the last
            epoch's weights of a run without validation: a bundle's ``recipes/all_clips.json``), or a checkpoint file.
        bundle_dir: the bundle folder.
        dtype: ``"float16"`` (as shipped), ``"bfloat16"`` or ``"float32"``.
        destination: where in the bundle the weights go (``models/fold<k>/model.pt`` for a fold ensemble's members).

    Returns:
        :func:`tools.weights.compact_weights`'s summary, with ``"source"`` and ``"destination"``.

    Raises:
        CheckpointError: if there is no best model, it is truncated, or it does not fit the bundle's network.
    """
    from monai.bundle import ConfigParser

    from tools.weights import compact_weights

    src = Path(run_dir)
    if src.is_dir():
        src = src / "models" / "model.pt"
    if not src.is_file():
        raise CheckpointError(f"{src}: no best model to promote (did the run's validation run at least once?).")
    check_checkpoint_file(src)
    bundle = Path(bundle_dir).resolve()
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    network = parser.get_parsed_content("network_def")
    try:
        state = torch.load(src, map_location="cpu", weights_only=True)
        state = state["model"] if isinstance(state, dict) and isinstance(state.get("model"), dict) else state
        network.load_state_dict(state, strict=True)
    except Exception as e:
        raise CheckpointError(f"{src}: does not fit the network of {bundle / 'configs' / 'inference.json'} "
                              f"({type(e).__name__}: {str(e).strip().splitlines()[0]}); nothing was written.") from e
    dst = bundle / destination
    dst.parent.mkdir(parents=True, exist_ok=True)
    summary = compact_weights(src, dst, dtype)
    logger.info("promoted %s to %s", src, dst)
    return {**summary, "source": str(src), "destination": str(dst)}
