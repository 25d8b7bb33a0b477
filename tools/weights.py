"""Ship weights compactly: the network's state dict alone, floating-point tensors stored in half precision.

A training checkpoint (``CheckpointSaver``) holds float32 weights and, for resuming, the optimiser's state. The
shipped ``models/model.pt`` needs neither: float16 storage halves the file, and ``load_state_dict`` casts the
values back to the network's float32 parameters on loading (``Tensor.copy_``), so configs load it unchanged.
Rounding to float16 changes a weight by at most 2**-11 of its value; the bundles' reported metrics are computed
with the shipped (rounded) weights.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tools.errors import CheckpointError
from tools.io import atomic_path

__all__ = ["compact_weights"]


def compact_weights(src: str | Path, dst: str | Path, dtype: str = "float16", key: str = "model") -> dict:
    """Write ``src``'s network weights to ``dst`` (weights only, floating tensors cast to ``dtype``).

    Args:
        src: a state dict file, or a checkpoint dict holding it under ``key`` (e.g. a resume checkpoint).
        dst: output file (written whole: temporary file, then rename).
        dtype: ``"float16"``, ``"bfloat16"`` or ``"float32"``.
        key: the network's key in a checkpoint dict.

    Returns:
        ``{"tensors": n, "parameters": n, "bytes": size of dst}``.

    Raises:
        CheckpointError: if ``src`` cannot be read (truncated, corrupt), naming it.
        ValueError: if ``src`` holds no state dict of tensors.
    """
    try:
        state = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{src}: cannot be read as a checkpoint ({type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}).") from e
    if isinstance(state, dict) and key in state and isinstance(state[key], dict):
        state = state[key]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{src}: not a state dict of tensors (nor a checkpoint with one under '{key}').")
    target = getattr(torch, dtype)
    out = {k: v.to(target) if v.is_floating_point() else v for k, v in state.items()}
    dst = Path(dst)
    with atomic_path(dst) as tmp:
        torch.save(out, tmp)
    return {"tensors": len(out), "parameters": sum(v.numel() for v in out.values() if v.is_floating_point()),
            "bytes": dst.stat().st_size}
