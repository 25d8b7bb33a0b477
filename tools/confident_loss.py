"""The loss wrapper of confident-pixel pseudo-labels (:mod:`tools.semi_supervised`, ``pseudo_labels="confident"``).

A module of its own, with nothing but torch, so that a bundle whose ``train_semi.json`` names it (packed with
``python -m tools pack``) does not carry :mod:`tools.training_options` and the networks that module imports.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["IgnoreUncertainPixels"]


class IgnoreUncertainPixels(nn.Module):
    """Confident pixels only: ``loss(logits, target)`` with the pixels whose target lies strictly between 0 and 1
    taken out, for confident-pixel pseudo-labels (:mod:`tools.semi_supervised`, ``pseudo_labels="confident"``, which
    marks the teacher's uncertain pixels 128/255 and its confident ones 0 or 1).

    At an ignored pixel the logit is replaced by ``-ignore_logit`` (sigmoid ~0) and the target by 0, so no gradient
    reaches the network there, and Dice-type sums (intersection, prediction and target totals) get nothing from it:
    for MONAI's Dice losses this is the masked Dice exactly. A BCE term with mean reduction gets ~0 from each ignored
    pixel but still divides by every pixel, so its weight shrinks by the confident fraction (a departure from a
    per-pixel-normalised masked BCE, kept so that any of the bundles' losses can be wrapped unchanged). Binary targets
    (the labelled slices) pass through as they are. Why not MONAI's ``MaskedLoss``: it multiplies the logits by the
    mask, and a zero logit is p = 0.5 to a loss that applies the sigmoid itself (``DiceCELoss(sigmoid=True)``,
    ``BCEWithLogitsLoss``), so masked pixels would still count.

    Args:
        loss: the bundle's loss, ``(logits, target) -> scalar``; logits ``(B, C, H, W[, D])``, or deep-supervision
            heads stacked on dim 1, ``(B, K, C, H, W[, D])`` (RCB-UNet++'s ``StackedHeadsLoss``), the target
            ``(B, C, H, W[, D])``.
        enabled: ``False`` passes everything through (the config's switch for non-confident pseudo-labels, whose
            graded values are targets, not marks).
        ignore_logit: the magnitude of the replacement logit. Default 30 (sigmoid(-30) ~ 1e-13).

    Raises:
        ValueError: in ``forward``, if the logits' shape is neither the target's nor the target's with a heads axis.
    """

    def __init__(self, loss: nn.Module, enabled: bool = True, ignore_logit: float = 30.0) -> None:
        super().__init__()
        self.loss, self.enabled, self.ignore_logit = loss, bool(enabled), float(ignore_logit)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return self.loss(input, target)
        ignore = (target > 0) & (target < 1)
        if input.shape == target.shape:
            mask = ignore
        elif input.ndim == target.ndim + 1 and input.shape[:1] + input.shape[2:] == target.shape:
            mask = ignore.unsqueeze(1)  # stacked deep-supervision heads share the target
        else:
            raise ValueError(f"IgnoreUncertainPixels: logits {list(input.shape)} do not match the target "
                             f"{list(target.shape)} (nor the target with a heads axis on dim 1).")
        if not bool(ignore.any()):
            return self.loss(input, target)
        input = torch.where(mask, torch.full_like(input, -self.ignore_logit), input)
        return self.loss(input, torch.where(ignore, torch.zeros_like(target), target))
