"""Deprecated import path: :mod:`tools.monailabel_app` moved to :mod:`tools.integrations.monailabel_app` (seg-bundles 0.2.0); this alias goes in the next
release. Configs and MONAI Label apps that name the old path keep working meanwhile, with a DeprecationWarning."""

import sys
import warnings

import tools.integrations as _package  # noqa: F401  (binds the moved module's package)
from tools.integrations import monailabel_app as _moved

warnings.warn("tools.monailabel_app moved to tools.integrations.monailabel_app; the old path is removed in the next release.", DeprecationWarning,
              stacklevel=2)
sys.modules[__name__] = _moved
