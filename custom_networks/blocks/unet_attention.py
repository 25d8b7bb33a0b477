"""Attention options of a U-Net, by name: gates on the skip connections and attention blocks after units.

- Skip attention (``get_skip_attention``), a module ``forward(g, x) -> x'`` that re-weights the skip features ``x``
  given the decoder's features ``g`` at the same resolution:

  - ``None``: :class:`NoSkipGate`, ``x`` unchanged;
  - ``"attention_gate"``: MONAI ``monai.networks.nets.attentionunet.AttentionBlock``, the additive attention gate of
    Oktay et al., "Attention U-Net: learning where to look for the pancreas", MIDL 2018, arXiv:1804.03999.

- Block attention (``get_block_attention``), a module ``forward(x) -> x'`` of the same shape:

  - ``None``: ``nn.Identity``;
  - ``"cbam"``: :class:`~custom_networks.blocks.cbam.CBAM` (Woo et al., ECCV 2018, arXiv:1807.06521);
  - ``"se"``: MONAI ``ChannelSELayer``, squeeze-and-excitation (Hu et al., CVPR 2018, arXiv:1709.01507).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.blocks import ChannelSELayer
from monai.networks.nets.attentionunet import AttentionBlock

from custom_networks.blocks.cbam import CBAM

__all__ = ["BLOCK_ATTENTIONS", "SKIP_ATTENTIONS", "NoSkipGate", "get_block_attention", "get_skip_attention"]

SKIP_ATTENTIONS: tuple[str | None, ...] = (None, "attention_gate")
BLOCK_ATTENTIONS: tuple[str | None, ...] = (None, "cbam", "se")


class NoSkipGate(nn.Module):
    """The skip connection without a gate: ``forward(g, x)`` returns ``x`` (so that one decoder serves both cases)."""

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x


def get_skip_attention(name: str | None, spatial_dims: int, gate_channels: int, skip_channels: int) -> nn.Module:
    """Skip-connection gate: ``forward(g, x)``, ``g`` ``(B, gate_channels, *S)``, ``x`` ``(B, skip_channels, *S)``.

    The output has ``x``'s shape.

    ``"attention_gate"`` is MONAI's ``AttentionBlock`` with an intermediate width ``F_int = max(skip_channels // 2, 1)``
    (MONAI's ``AttentionUnet`` choice); MONAI fixes its normalisation to batch norm whatever the network's ``norm``.

    Raises:
        ValueError: if ``name`` is not one of :data:`SKIP_ATTENTIONS`.
    """
    if name is None:
        return NoSkipGate()
    if name == "attention_gate":
        return AttentionBlock(spatial_dims, f_int=max(skip_channels // 2, 1), f_g=gate_channels, f_l=skip_channels)
    raise ValueError(f"skip_attention must be one of {SKIP_ATTENTIONS}, got {name!r}.")


def get_block_attention(name: str | None, spatial_dims: int, channels: int, reduction: int = 16) -> nn.Module:
    """Attention block applied to a unit's output ``(B, channels, H, W[, D])``, same shape out.

    ``reduction`` is the channel-MLP reduction ratio of CBAM and SE (both papers: 16). SE's hidden width is
    ``channels // min(reduction, channels)`` (at least 1; MONAI's ``ChannelSELayer`` refuses a zero width), CBAM's
    ``max(channels // reduction, 1)``: the same rule, so that narrow test networks build.

    Raises:
        ValueError: if ``name`` is not one of :data:`BLOCK_ATTENTIONS` or ``reduction < 1``.
    """
    if reduction < 1:
        raise ValueError(f"reduction must be >= 1, got {reduction}.")
    if name is None:
        return nn.Identity()
    if name == "cbam":
        return CBAM(spatial_dims, channels, reduction=reduction)
    if name == "se":
        return ChannelSELayer(spatial_dims, channels, r=min(reduction, channels))
    raise ValueError(f"block_attention must be one of {BLOCK_ATTENTIONS}, got {name!r}.")
