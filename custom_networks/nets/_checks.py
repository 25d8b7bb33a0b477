"""Input checks shared by the networks' ``forward`` (TorchScript-compatible: a scripted network raises
``torch.jit.Error`` carrying the same message)."""

from __future__ import annotations

import torch

__all__ = ["check_input_dims", "check_input_divisible"]


def check_input_dims(x: torch.Tensor, spatial_dims: int, name: str) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, C, *spatial)`` with ``spatial_dims`` spatial dimensions.

    The message names the network (``name``), the expected dimensionality and the shape received, e.g.
    ``"IACNN: expected a 4D input (B, C, 2 spatial dims), got shape [1, 3, 32, 32, 32]."``.
    """
    if x.dim() != spatial_dims + 2:
        raise ValueError(
            f"{name}: expected a {spatial_dims + 2}D input (B, C, {spatial_dims} spatial dims), "
            f"got shape {list(x.shape)}."
        )


def check_input_divisible(x: torch.Tensor, spatial_dims: int, downsamplings: int, name: str) -> None:
    """:func:`check_input_dims`, then raise ``ValueError`` unless every spatial size of ``x`` is divisible by
    ``2**downsamplings`` (a network that halves its features ``downsamplings`` times and up-samples them back by
    exact doubling, so that skips and up-sampled features line up without padding or cropping).

    The message gives the divisor and the shape received, e.g. ``"IACNN: every spatial size must be divisible by
    2**5 = 32 (5 2x down-samplings), got shape [1, 3, 48, 64]."``.
    """
    check_input_dims(x, spatial_dims, name)
    divisor = 1 << downsamplings
    for size in x.shape[2:]:
        if size % divisor != 0:
            raise ValueError(
                f"{name}: every spatial size must be divisible by 2**{downsamplings} = {divisor} "
                f"({downsamplings} 2x down-samplings), got shape {list(x.shape)}."
            )
