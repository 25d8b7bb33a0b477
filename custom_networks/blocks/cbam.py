"""Convolutional Block Attention Module (CBAM) and its two attention gates.

Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018, arXiv:1807.06521.

MONAI has squeeze-and-excitation (``monai.networks.blocks.ChannelSELayer``), which pools by average only;
CBAM's channel gate also uses the max-pooled descriptor through the *same* MLP (Woo et al. eq. 2), and MONAI
has no spatial gate of CBAM's form, so both are written here. The channel gate is shared with the
integrated-attention CNN, whose channel attention (beta = sigmoid(MLP(maxpool X) + MLP(avgpool X)),
out = X + X * beta) is the same gate with a residual connection: ``ChannelAttention(residual=True)``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv, Pool

__all__ = ["ChannelAttention", "SpatialAttention", "CBAM"]


class ChannelAttention(nn.Module):
    """Channel attention of CBAM (Woo et al. 2018, section 3.1, eq. 2).

    ``w = sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))`` with one MLP shared by both descriptors
    (``C -> C / reduction -> C``, ReLU between, implemented as 1x1 convolutions); the output is
    ``x * w``, or ``x + x * w`` when ``residual`` is true (the integrated-attention CNN, its eq. 8).

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        channels: number of channels ``C`` of the input.
        reduction: MLP reduction ratio ``r`` (paper: 16). The hidden width is ``max(C // r, 1)``.
        residual: return ``x + x * w`` instead of ``x * w``.

    Shapes:
        input ``(B, C, H, W[, D])``, output the same.

    Example::

        >>> gate = ChannelAttention(spatial_dims=2, channels=64)
        >>> gate(torch.rand(2, 64, 32, 32)).shape
        torch.Size([2, 64, 32, 32])
    """

    def __init__(self, spatial_dims: int, channels: int, reduction: int = 16, residual: bool = False) -> None:
        super().__init__()
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1, got {reduction}.")
        hidden = max(channels // reduction, 1)
        conv = Conv[Conv.CONV, spatial_dims]
        self.avg_pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.max_pool = Pool[Pool.ADAPTIVEMAX, spatial_dims](1)
        self.mlp = nn.Sequential(
            conv(channels, hidden, kernel_size=1, bias=False), nn.ReLU(inplace=True), conv(hidden, channels, 1, bias=False)
        )
        self.residual = residual

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """Attention weights ``w`` in (0, 1), shape ``(B, C, 1, 1[, 1])``."""
        return torch.sigmoid(self.mlp(self.avg_pool(x)) + self.mlp(self.max_pool(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gated = x * self.weights(x)
        return x + gated if self.residual else gated


class SpatialAttention(nn.Module):
    """Spatial attention of CBAM (Woo et al. 2018, section 3.2, eq. 3).

    ``w = sigmoid(conv_k([mean_c(x); max_c(x)]))``: a ``k x k`` convolution (paper: 7) over the channel-wise
    average and maximum maps; output ``x * w``.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        kernel_size: odd size of the convolution (paper: 7).

    Shapes:
        input ``(B, C, H, W[, D])``, output the same.

    Raises:
        ValueError: if ``kernel_size`` is even (the map would shift by half a pixel).
    """

    def __init__(self, spatial_dims: int, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}.")
        self.conv = Conv[Conv.CONV, spatial_dims](2, 1, kernel_size=kernel_size, padding=kernel_size // 2, bias=False)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """Attention map in (0, 1), shape ``(B, 1, H, W[, D])``."""
        avg = torch.mean(x, dim=1, keepdim=True)
        mx = torch.amax(x, dim=1, keepdim=True)
        return torch.sigmoid(self.conv(torch.cat([avg, mx], dim=1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)


class CBAM(nn.Module):
    """CBAM: channel attention followed by spatial attention (Woo et al. 2018, eq. 1, sequential, channel first).

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        channels: number of input channels ``C``.
        reduction: channel-MLP reduction ratio (paper: 16).
        kernel_size: spatial-attention convolution size (paper: 7).

    Shapes:
        input ``(B, C, H, W[, D])``, output the same.

    Example::

        >>> cbam = CBAM(spatial_dims=3, channels=32)
        >>> cbam(torch.rand(1, 32, 8, 8, 8)).shape
        torch.Size([1, 32, 8, 8, 8])
    """

    def __init__(self, spatial_dims: int, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel = ChannelAttention(spatial_dims, channels, reduction)
        self.spatial = SpatialAttention(spatial_dims, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))
