"""Deprecated import path: :mod:`tools.torchvision_ops` moved to :mod:`tools.integrations.torchvision_ops` (seg-bundles 0.2.0); this alias goes in the next
release. Configs and MONAI Label apps that name the old path keep working meanwhile, with a DeprecationWarning."""

import sys
import warnings

import tools.integrations as _package  # noqa: F401  (binds the moved module's package)
from tools.integrations import torchvision_ops as _moved

warnings.warn("tools.torchvision_ops moved to tools.integrations.torchvision_ops; the old path is removed in the next release.", DeprecationWarning,
              stacklevel=2)
sys.modules[__name__] = _moved
