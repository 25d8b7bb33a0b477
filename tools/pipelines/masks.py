"""Deprecated import path: :mod:`tools.pipelines.masks` moved to :mod:`tools.masks` (seg-bundles 0.2.0); this alias goes in
the next release. Configs and MONAI Label apps that name the old path keep working meanwhile, with a DeprecationWarning."""

import sys
import warnings

import tools as _package  # noqa: F401  (binds the moved module's package)
from tools import masks as _moved

warnings.warn("tools.pipelines.masks moved to tools.masks; the old path is removed in the next release.",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
