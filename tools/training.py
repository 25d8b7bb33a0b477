"""Training at the machine's speed: mixed precision on CPUs and CUDA, channels-last, distributed set-up.

The bundles' ``train.json`` wire these pieces (``_target_``) so that one config trains fast on whatever it finds:

- :func:`resolve_precision` turns the config's ``mixed_precision`` (``"auto"``, ``"bf16"``, ``"amp"``, ``"fp32"``)
  into what this device supports: on CUDA MONAI's own AMP (``SupervisedTrainer(amp=True)``: fp16 autocast and a
  gradient scaler), on CPUs with bf16 instructions (AVX512-BF16 or AMX, as oneDNN reports them) bf16 autocast,
  elsewhere fp32.
- :class:`MixedPrecisionInferer` wraps any MONAI inferer (``SimpleInferer``, ``SliceInferer``,
  ``SlidingWindowInferer``) and runs it under ``torch.autocast("cpu", torch.bfloat16)``, feeding channels-last
  inputs when the network is channels-last, and hands back fp32 predictions, so that losses, metrics and
  post-processing stay in fp32.
- :func:`prepare_network` moves the network to its device and memory format.
- :func:`distributed_device` and :func:`init_distributed` make ``multi_gpu_train.json`` run under ``torchrun``
  on GPUs (NCCL) and on CPUs (Gloo) alike.

Why not MONAI's own mechanism: ``SupervisedTrainer(amp=True)`` and ``SupervisedEvaluator(amp=True)`` hard-code
``torch.autocast("cuda")`` (``monai/engines/trainer.py``, ``evaluator.py``, MONAI 1.6), so on a CPU they do
nothing; and MONAI has no memory-format option. Wrapping the inferer keeps MONAI's trainer, its events and
handlers untouched: the forward pass is the only part that autocast changes, and the backward pass follows the
forward pass's dtypes by itself. bf16 needs no gradient scaler (its exponent range is fp32's).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import torch
from monai.inferers import Inferer, SimpleInferer

__all__ = [
    "PRECISIONS",
    "MEMORY_FORMATS",
    "cpu_supports_bf16",
    "resolve_precision",
    "resolve_memory_format",
    "uses_monai_amp",
    "prepare_network",
    "MixedPrecisionInferer",
    "distributed_device",
    "init_distributed",
    "distributed_network",
    "is_main_process",
    "finish_distributed",
]

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "amp", "fp32")
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (AVX512-BF16 or AMX) that oneDNN uses for bf16 convolutions.

    Without it, bf16 autocast on a CPU is emulated and slower than fp32.
    """
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def resolve_precision(mixed_precision: str = "auto", device: torch.device | str = "cpu") -> str:
    """The precision a run uses on ``device``: ``"amp"`` (CUDA: MONAI's fp16 AMP), ``"bf16"`` (CPU autocast) or
    ``"fp32"``.

    Args:
        mixed_precision: ``"auto"`` (CUDA -> ``"amp"``; a CPU with bf16 instructions -> ``"bf16"``; else
            ``"fp32"``), or one of ``"bf16"``, ``"amp"``, ``"fp32"`` to force it. ``"amp"`` on a CPU and
            ``"bf16"`` on a CPU without bf16 instructions fall back to ``"fp32"`` with a warning (the first is not
            available there, the second would be emulated and slower than fp32).
        device: the device the network runs on.

    Raises:
        ValueError: for a value not in :data:`PRECISIONS`.
    """
    if mixed_precision not in PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {PRECISIONS}, got {mixed_precision!r}.")
    kind = torch.device(device).type
    if kind == "cuda":
        return "fp32" if mixed_precision == "fp32" else "amp" if mixed_precision in ("auto", "amp") else "bf16"
    if mixed_precision == "fp32":
        return "fp32"
    if mixed_precision == "amp":
        logger.warning("mixed_precision 'amp' is CUDA's fp16 AMP; on %s it falls back to fp32.", kind)
        return "fp32"
    if cpu_supports_bf16():
        return "bf16"
    if mixed_precision == "bf16":
        logger.warning("this CPU has no bf16 instructions (AVX512-BF16 or AMX): bf16 would be emulated; using fp32.")
    return "fp32"


def resolve_memory_format(memory_format: str = "auto", spatial_dims: int = 2) -> torch.memory_format:
    """``torch.channels_last`` (2D) / ``torch.channels_last_3d`` (3D) or ``torch.contiguous_format``.

    ``"auto"`` is channels-last for 2D networks, where oneDNN's and cuDNN's convolutions are fastest in NHWC
    (measured by ``python -m tools benchmark BUNDLE --mode train``), and contiguous for 3D ones, where the
    benchmark has not shown a gain.

    Raises:
        ValueError: for a value not in :data:`MEMORY_FORMATS`, or ``spatial_dims`` not 2 or 3.
    """
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f"memory_format must be one of {MEMORY_FORMATS}, got {memory_format!r}.")
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
    if memory_format == "contiguous" or (memory_format == "auto" and spatial_dims == 3):
        return torch.contiguous_format
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d


def uses_monai_amp(precision: str) -> bool:
    """Whether MONAI's own ``amp`` flag of its trainer/evaluator is to be set (CUDA fp16 AMP)."""
    return precision == "amp"


def prepare_network(network: torch.nn.Module, device: torch.device | str = "cpu", memory_format: str = "auto",
                    spatial_dims: int = 2) -> torch.nn.Module:
    """``network`` on ``device`` in the memory format of :func:`resolve_memory_format` (its weights are then
    stored channels-last; a state dict saved from it loads into any model)."""
    fmt = resolve_memory_format(memory_format, spatial_dims)
    return network.to(device=device, memory_format=fmt)


class MixedPrecisionInferer(Inferer):
    """Run a MONAI inferer under bf16 autocast (CPU or CUDA) with channels-last inputs; return fp32 predictions.

    Args:
        inferer: the inferer to wrap (default ``SimpleInferer()``); patches of ``SliceInferer`` and
            ``SlidingWindowInferer`` then run in bf16 too, while their stitching buffers stay fp32.
        precision: a resolved precision (:func:`resolve_precision`): ``"bf16"`` autocasts on the input's device
            type; ``"amp"`` and ``"fp32"`` leave precision alone (with ``"amp"``, MONAI's trainer/evaluator
            autocasts around this inferer).
        memory_format: ``"auto"``, ``"channels_last"`` or ``"contiguous"`` (:func:`resolve_memory_format`), for
            the input batch ``(B, C, H, W[, D])``; use the network's (:func:`prepare_network`).

    Returns (``__call__``): the wrapped inferer's output, floating tensors cast to fp32 (a tuple or list of
    tensors, as for deep supervision heads, element-wise).
    """

    def __init__(self, inferer: Inferer | None = None, precision: str = "fp32", memory_format: str = "auto") -> None:
        if precision not in ("bf16", "amp", "fp32"):
            raise ValueError(f"precision must be a resolved one ('bf16', 'amp' or 'fp32'), got {precision!r}; "
                             "resolve 'auto' with tools.training.resolve_precision.")
        resolve_memory_format(memory_format)  # validates the name
        self.inferer = inferer if inferer is not None else SimpleInferer()
        self.precision = precision
        self.memory_format = memory_format

    def _format(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.ndim not in (4, 5):
            return inputs
        fmt = resolve_memory_format(self.memory_format, inputs.ndim - 2)
        return inputs.contiguous(memory_format=fmt)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        inputs = self._format(inputs)
        if self.precision != "bf16":
            return self.inferer(inputs, network, *args, **kwargs)
        with torch.autocast(device_type=inputs.device.type, dtype=torch.bfloat16):
            out = self.inferer(inputs, network, *args, **kwargs)
        return _to_fp32(out)


def _to_fp32(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (list, tuple)):
        return type(out)(_to_fp32(o) for o in out)
    if isinstance(out, dict):
        return {k: _to_fp32(v) for k, v in out.items()}
    return out


def distributed_device() -> torch.device:
    """This process's device under ``torchrun``: ``cuda:LOCAL_RANK`` when CUDA is present, else the CPU."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def init_distributed(device: torch.device | None = None) -> None:
    """Join the process group ``torchrun`` set up (``MASTER_ADDR``, ``RANK``, ``WORLD_SIZE`` in the environment):
    NCCL on GPUs, Gloo on CPUs; on a GPU, also make ``device`` the current CUDA device. A no-op when already
    initialised.

    Raises:
        RuntimeError: when not started by ``torchrun`` (no ``RANK``/``WORLD_SIZE`` in the environment).
    """
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise RuntimeError("multi_gpu_train.json runs under torchrun (e.g. `torchrun --nproc_per_node=2 -m "
                           "monai.bundle run ...`): RANK and WORLD_SIZE are not set.")
    device = device or distributed_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def distributed_network(network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``network`` wrapped in ``DistributedDataParallel`` for this process's ``device`` (``device_ids`` on a GPU
    only: on a CPU, DDP takes none)."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(network, device_ids=[device] if device.type == "cuda" else None)


def is_main_process() -> bool:
    """Rank 0, or not distributed: the process that writes checkpoints, logs and TensorBoard files."""
    import torch.distributed as dist

    return not dist.is_initialized() or dist.get_rank() == 0


def finish_distributed() -> None:
    """Leave the process group cleanly at the end of a ``torchrun`` run: wait for every rank (rank 0 may still be
    writing its checkpoint), then destroy the group. Without the barrier a rank that finishes first tears down its
    Gloo threads while the others still talk to it, and the process can abort at exit ("terminate called without
    an active exception", SIGABRT). A no-op when not distributed."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    dist.barrier()
    dist.destroy_process_group()
