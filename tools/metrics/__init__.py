"""Evaluation metrics (see the submodules, e.g. ``tools.metrics.infnet``)."""
