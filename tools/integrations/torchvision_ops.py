"""Let PyPI's torchvision import beside a CPU-only torch (MONAI Label needs ``import torchvision`` to succeed).

The torchvision wheel on PyPI that matches torch 2.13.0 (0.28.0) is built for CUDA; beside the CPU build of torch its
C++ extension (``torchvision/_C``) does not load, which torchvision tolerates, except that its
``_meta_registrations`` module registers fake (meta) kernels for ``torchvision::nms`` and ``torchvision::qnms``
unconditionally, and that raises ``RuntimeError: operator torchvision::nms does not exist`` at ``import
torchvision`` (so ``import monailabel.app`` fails). A CPU build of torchvision would be the clean answer, but PyPI
has none for this torch. :func:`ensure_torchvision_imports` defines the schemas of those two operators (without any
kernel) before torchvision is imported, when and only when the extension does not load: ``import torchvision``
then succeeds, the Python parts (transforms, models) work, and calling a C++ operator (``torchvision.ops.nms``,
``roi_align``, ...) raises torchvision's own "Couldn't load custom C++ ops" error instead of computing anything.
None of our bundles or the MONAI Label tasks we serve use those operators.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

__all__ = ["UNCONDITIONAL_FAKE_OPS", "ensure_torchvision_imports"]

# operator schemas of torchvision 0.28 (csrc/ops/nms.cpp) whose fake kernels are registered unconditionally
UNCONDITIONAL_FAKE_OPS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}

_LIBRARY = None  # kept alive: the definitions vanish when the Library object is collected


def ensure_torchvision_imports() -> str:
    """Make ``import torchvision`` succeed beside a CPU torch (module docstring); call it before torchvision is
    first imported.

    Returns:
        ``"absent"`` (torchvision is not installed), ``"imported"`` (it was imported already; nothing done),
        ``"native"`` (its C++ extension loads; nothing done) or ``"stubbed"`` (the operator schemas were defined).
    """
    global _LIBRARY
    if "torchvision" in sys.modules:
        return "imported"
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return "absent"
    folder = Path(list(spec.submodule_search_locations)[0])
    for lib in sorted(folder.glob("_C*.so")) + sorted(folder.glob("_C*.pyd")):
        try:
            torch.ops.load_library(str(lib))
            return "native"
        except (OSError, RuntimeError):
            pass
    if _LIBRARY is None:
        _LIBRARY = torch.library.Library("torchvision", "DEF")
        for schema in UNCONDITIONAL_FAKE_OPS.values():
            _LIBRARY.define(schema)
    return "stubbed"
