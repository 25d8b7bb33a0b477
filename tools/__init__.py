"""Shared tools of the bundles, in three rooms (``tools/README.md``): the runtime that bundle configs use (this
package's top level, ``data``, ``pipelines``, ``metrics``), the commands of ``python -m tools`` (``tools.commands``,
wired by ``tools.cli``) and the adapters to other systems (``tools.integrations``).

Bundle configs use ``$import tools`` and call
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
    run_control,
    runner,
    training,
    transforms,
)

__all__ = ["checkpoints", "data", "errors", "evaluation", "input_checks", "io", "metrics", "pipelines", "run_control",
           "runner", "training", "transforms"]
