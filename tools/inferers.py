"""Test-time flip augmentation as a MONAI inferer (``FlipTTAInferer``).

Why our own: MONAI's ``monai.data.TestTimeAugmentation`` draws *random* transforms per item and inverts them through
the data's metadata to estimate uncertainty (a mode/mean/std of many samples); it runs outside the inferer, on a
dataset, so it cannot sit in a bundle's ``inferer`` slot, and random draws would make the masks irreproducible.
Deterministic flips of the batch, undone on the output and averaged, are a few lines and fit the slot: the
evaluator, ``SliceInferer``/``SlidingWindowInferer`` and ``MixedPrecisionInferer`` wrap or are wrapped unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import Inferer, SimpleInferer

__all__ = ["FlipTTAInferer"]


class FlipTTAInferer(Inferer):
    """Average a network's outputs over the identity and flipped copies of the input (test-time augmentation).

    For each entry of ``flips`` (a list of spatial axes of the batch ``(B, C, H, W[, D])``: 2 = H, 3 = W, 4 = D) the
    input is flipped on those axes, run through ``inferer``, and the output flipped back; the identity is always
    included. The result is the mean of the outputs, which for the bundles' networks are logits (the sigmoid comes
    after, in post-processing). ``flips=[]`` is the plain inferer (one pass), so configs carry the option switched
    off.

    Args:
        inferer: the inferer to wrap (default ``SimpleInferer()``).
        flips: lists of spatial axes to flip, e.g. ``[[2], [3], [2, 3]]`` for the four flips of a 2D image.

    Returns (``__call__``): a tensor of the wrapped inferer's output shape, or for networks returning a list/tuple of
    tensors (deep supervision heads) the element-wise mean.

    Raises:
        ValueError: at construction for an axis below 2 (the batch and channel axes), and on call for an axis the
            input does not have.
    """

    def __init__(self, inferer: Inferer | None = None, flips: Sequence[Sequence[int]] = ()) -> None:
        self.inferer = inferer if inferer is not None else SimpleInferer()
        self.flips = [tuple(int(a) for a in f) for f in flips]
        for f in self.flips:
            if not f or min(f) < 2:
                raise ValueError(f"flips are lists of spatial axes (>= 2) of a (B, C, H, W[, D]) batch, got {list(f)}.")

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        out = self.inferer(inputs, network, *args, **kwargs)
        if not self.flips:
            return out
        total = _apply(out, lambda t: t.float())
        for axes in self.flips:
            if max(axes) >= inputs.ndim:
                raise ValueError(f"flip axes {list(axes)} do not exist in an input of shape {tuple(inputs.shape)}.")
            flipped = self.inferer(torch.flip(inputs, axes), network, *args, **kwargs)
            total = _combine(total, _apply(flipped, lambda t, a=axes: torch.flip(t.float(), a)))
        n = len(self.flips) + 1
        return _apply(total, lambda t: t / n)


def _apply(out: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(out, torch.Tensor):
        return fn(out)
    if isinstance(out, (list, tuple)):
        return type(out)(_apply(o, fn) for o in out)
    raise TypeError(f"FlipTTAInferer averages tensors or lists of tensors, got {type(out).__name__}.")


def _combine(a: Any, b: Any) -> Any:
    if isinstance(a, torch.Tensor):
        return a + b
    return type(a)(_combine(x, y) for x, y in zip(a, b))
