"""Controlling long trainings: early stopping on the validation metric, and progress lines with an ETA.

Both attach to MONAI's engines (``SupervisedTrainer`` / ``SupervisedEvaluator``) from outside the config, so a bundle's
``train.json`` stays as it is and a command (``tools crossval``) or a workflow (``tools.semi_supervised``) adds them:

- :func:`attach_early_stopping`: ignite's ``EarlyStopping`` on the evaluator's key metric, stopping the trainer.
  MONAI's ``EarlyStopHandler`` wraps the same class, but it must be given the trainer when it is built, and in a
  bundle config the trainer already refers to the evaluator (``ValidationHandler``): the reference would be circular.
  Attaching here, after both exist, avoids that; :func:`reset_early_stopping` restarts its count for a new round.
- :class:`ProgressLog`: one log line per epoch, ``[fold 2/5, round 1/2] epoch 7/40, 11.8 s/epoch, ETA 6 min``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ignite.engine import Events
from ignite.handlers import EarlyStopping

__all__ = ["key_metric_score", "attach_early_stopping", "reset_early_stopping", "ProgressLog"]

logger = logging.getLogger(__name__)


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
        self._start_epoch = 0

    def attach(self, engine: Any) -> "ProgressLog":
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        return self

    def _started(self, engine: Any) -> None:
        self._start = time.perf_counter()
        self._start_epoch = int(engine.state.epoch)

    def _epoch_completed(self, engine: Any) -> None:
        done = int(engine.state.epoch) - self._start_epoch
        per_epoch = (time.perf_counter() - self._start) / max(done, 1)
        left = max(int(engine.state.max_epochs or 0) - int(engine.state.epoch), 0)
        where = f"[{self.prefix}] " if self.prefix else ""
        logger.info("%sepoch %d/%s, %.1f s/epoch, ETA %.1f min (at most; early stopping may end it sooner)", where,
                    engine.state.epoch, engine.state.max_epochs, per_epoch, per_epoch * left / 60.0)
