"""Shared tools of the bundles: data preparation, input checks, metrics, evaluation, verification, export.

The command line is ``python -m tools`` (see ``tools.cli``). Bundle configs use ``$import tools`` and call
``tools.data``, ``tools.transforms`` and ``tools.evaluation`` by ``_target_``.
"""

from . import data, evaluation, io, metrics, pipelines, rgb_pipelines, training, transforms

__all__ = ["data", "evaluation", "io", "metrics", "pipelines", "rgb_pipelines", "training", "transforms"]
