"""Controlling long trainings: early stopping on the validation metric, and progress lines with an ETA.

Both attach to MONAI's engines (``SupervisedTrainer`` / ``SupervisedEvaluator``) from outside the config, so a bundle's
``train.json`` stays as it is and a command (``tools crossval``) or a workflow (``tools.semi_supervised``) adds them:

- :func:`attach_early_stopping`: ignite's ``EarlyStopping`` on the evaluator's key metric, stopping the trainer.
  MONAI's ``EarlyStopHandler`` wraps the same class, but it must be given the trainer when it is built, and in a
  bundle config the trainer already refers to the evaluator (``ValidationHandler``): the reference would be circular.
  Attaching here, after both exist, avoids that; :func:`reset_early_stopping` restarts its count for a new round.
- :class:`ProgressLog`: one log line per epoch, ``[fold 2/5, round 1/2] epoch 7/40, 11.8 s/epoch, ETA 6 min``.
- :class:`RunState`: what a resume checkpoint must hold besides the model, optimiser and trainer (``train.json``'s
  ``resume_handlers`` save and load it as ``run_state``) for a resumed run to go on as the interrupted one would have:
  the evaluator's best key metric and its epoch, the best-model saver's record of what it saved (ignite
  ``Checkpoint.state_dict``), and early stopping's count and best score. Without it a resumed run began its best
  metric and its patience again: the first validation after the resume overwrote ``models/model.pt`` even when it
  was worse than the best before the interruption (a cross-validation fold resumed at epoch 27 did so, from 0.563 to
  0.509 validation IoU), and early stopping waited its whole patience again.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ignite.engine import Events
from ignite.handlers import EarlyStopping

__all__ = ["key_metric_score", "attach_early_stopping", "reset_early_stopping", "ProgressLog", "RunState",
           "event_handlers"]

logger = logging.getLogger(__name__)


def event_handlers(engine: Any) -> list:
    """The objects behind an ignite engine's event handlers (bound methods' ``__self__``), once each."""
    found: list = []
    for handlers in engine._event_handlers.values():
        for h, _, _ in handlers:
            obj = getattr(h, "__self__", h)
            if all(obj is not f for f in found):
                found.append(obj)
    return found


class RunState:
    """The validation side of a training run, as one object with ``state_dict`` / ``load_state_dict`` for a resume
    checkpoint (module docstring): ``{"best_metric", "best_metric_epoch", "key_metric_checkpoint",
    "early_stopping"}`` of ``evaluator`` (a MONAI ``SupervisedEvaluator``). The best-model saver is the evaluator's
    MONAI ``CheckpointSaver`` with a key metric; early stopping is ignite's ``EarlyStopping`` on the evaluator
    (:func:`attach_early_stopping`); either is left out when the evaluator has none. Both are looked up when the
    state is saved or loaded, so early stopping attached after the config was built (``tools crossval``) is included.

    Args:
        evaluator: the run's validation engine (``@validate#evaluator``).
    """

    def __init__(self, evaluator: Any) -> None:
        self.evaluator = evaluator

    def _parts(self) -> tuple[Any, Any]:
        from monai.handlers import CheckpointSaver

        handlers = event_handlers(self.evaluator)
        saver = next((h._key_metric_checkpoint for h in handlers if isinstance(h, CheckpointSaver)
                      and getattr(h, "_key_metric_checkpoint", None) is not None), None)
        return saver, next((h for h in handlers if isinstance(h, EarlyStopping)), None)

    def state_dict(self) -> dict:
        saver, stop = self._parts()
        state = self.evaluator.state
        return {"best_metric": float(state.best_metric), "best_metric_epoch": int(state.best_metric_epoch),
                "key_metric_checkpoint": ({"_saved": [(float(p), str(f)) for p, f in saver.state_dict()["_saved"]]}
                                          if saver is not None else None),
                "early_stopping": dict(stop.state_dict()) if stop is not None else None}

    def load_state_dict(self, state: dict) -> None:
        """Restore the state; the best score and the saver's record only where the best model they describe is in
        the saver's folder (a run resumed into another folder starts its best-model tracking afresh, with a
        warning, so that it still saves one)."""
        saver, stop = self._parts()
        saved = (state.get("key_metric_checkpoint") or {}).get("_saved") or []
        handler = getattr(saver, "save_handler", None)
        folder, fixed = getattr(handler, "dirname", None), getattr(handler, "filename", None)  # MONAI: model.pt
        if saver is None or all(Path(folder or ".", fixed or f).is_file() for _, f in saved):
            self.evaluator.state.best_metric = float(state["best_metric"])
            self.evaluator.state.best_metric_epoch = int(state["best_metric_epoch"])
            if saver is not None:
                saver.load_state_dict({"_saved": saved})
        else:
            logger.warning("resumed run: the best model of the interrupted run (%s, %s %.4f at epoch %d) is not in %s; "
                           "best-model tracking starts again", ", ".join(fixed or f for _, f in saved),
                           self.evaluator.state.key_metric_name, state["best_metric"], state["best_metric_epoch"],
                           folder)
        if stop is not None and state.get("early_stopping") is not None:
            stop.load_state_dict(state["early_stopping"])


def key_metric_score(engine: Any) -> float:
    """The evaluator's key metric of its last run (``engine.state.metrics[engine.state.key_metric_name]``)."""
    return float(engine.state.metrics[engine.state.key_metric_name])


def attach_early_stopping(trainer: Any, evaluator: Any, patience: int | None, min_delta: float = 0.0
                          ) -> EarlyStopping | None:
    """Stop ``trainer`` when the evaluator's key metric has not improved for ``patience`` validations.

    Args:
        trainer: the training engine to stop.
        evaluator: the validation engine (its key metric, higher is better, is read at each of its completions).
        patience: validations without improvement before stopping; ``None`` or 0: no early stopping.
        min_delta: the least change that counts as an improvement.

    Returns:
        the attached handler (``None`` when disabled).

    Raises:
        ValueError: for a negative ``patience``.
    """
    if not patience:
        return None
    if int(patience) < 0:
        raise ValueError(f"early-stopping patience must be at least 1 (or null to disable), got {patience}.")
    extra = {"min_delta": min_delta} if min_delta else {}  # passing the default warns in ignite 0.5
    handler = EarlyStopping(patience=int(patience), score_function=key_metric_score, trainer=trainer, **extra)
    evaluator.add_event_handler(Events.COMPLETED, handler)
    return handler


def reset_early_stopping(handler: EarlyStopping | None) -> None:
    """Forget the best score and the count of ``handler`` (a new round of training starts its own count)."""
    if handler is not None:
        handler.counter = 0
        handler.best_score = None


class ProgressLog:
    """Log one line per training epoch: the run's place (e.g. ``fold 2/5``, ``round 1/2``), epoch, speed and ETA.

    The ETA is the mean epoch time so far times the epochs left of ``max_epochs`` (an upper bound under early
    stopping). ``prefix`` can be changed between runs of the same engine (``log.prefix = "round 2/2"``).
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self._start = time.perf_counter()
        self._start_epoch: int | None = None

    def attach(self, engine: Any) -> "ProgressLog":
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        return self

    def _started(self, engine: Any) -> None:
        self._start_epoch = None

    def _epoch_started(self, engine: Any) -> None:
        # taken at the first epoch, not at STARTED: a resume checkpoint is loaded by another STARTED handler, which
        # may run after this one, and the epochs before the resume must not count as run in this time
        if self._start_epoch is None:
            self._start = time.perf_counter()
            self._start_epoch = int(engine.state.epoch) - 1

    def _epoch_completed(self, engine: Any) -> None:
        done = int(engine.state.epoch) - (self._start_epoch or 0)
        per_epoch = (time.perf_counter() - self._start) / max(done, 1)
        left = max(int(engine.state.max_epochs or 0) - int(engine.state.epoch), 0)
        where = f"[{self.prefix}] " if self.prefix else ""
        logger.info("%sepoch %d/%s, %.1f s/epoch, ETA %.1f min (at most; early stopping may end it sooner)", where,
                    engine.state.epoch, engine.state.max_epochs, per_epoch, per_epoch * left / 60.0)
