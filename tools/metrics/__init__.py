"""Evaluation metrics: ``tools.metrics.infnet`` (Inf-Net's MATLAB toolbox in NumPy) and ``tools.metrics.bootstrap``
(bootstrap intervals of means over cases and the strict-JSON summary)."""
