"""Shared tools of the bundles: data preparation, input checks, metrics, evaluation, verification, export.

The command line is ``python -m tools`` (see ``tools.cli``). Bundle configs use ``$import tools`` and call
``tools.data`` (datalists and splits), ``tools.pipelines`` (transform chains), ``tools.transforms``,
``tools.evaluation``, ``tools.runner`` (how a run starts, skips bad inputs and reports) and ``tools.checkpoints`` by
``_target_``.
"""

from . import (
    checkpoints,
    data,
    errors,
    evaluation,
    input_checks,
    io,
    metrics,
    pipelines,
    runner,
    training,
    transforms,
)

__all__ = ["checkpoints", "data", "errors", "evaluation", "input_checks", "io", "metrics", "pipelines", "runner",
           "training", "transforms"]
