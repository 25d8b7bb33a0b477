"""Densely connected unit for U-Net encoder/decoder levels, built on MONAI's DenseNet block.

Huang et al., "Densely connected convolutional networks", CVPR 2017, arXiv:1608.06993 (dense block, bottleneck
layers ``BN-ReLU-Conv1x1-BN-ReLU-Conv3x3``, growth rate ``k``). In U-Nets: Li et al., "H-DenseUNet", IEEE TMI 37(12),
2018, arXiv:1709.07330; Zhang et al., "DENSE-INception U-net for medical image segmentation", 2020.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.nets.densenet import _DenseBlock

__all__ = ["DenseUnit"]


class DenseUnit(nn.Module):
    """3x3 stem, a DenseNet dense block, and a 1x1 transition back to ``out_channels``.

    ::

        s = conv3x3(x)                          # in_channels -> out_channels (conv, norm, act)
        d = DenseBlock(s)                       # out_channels -> out_channels + layers * growth_rate
                                                #   each layer: norm-act-conv1x1 (bn_size * k)-norm-act-conv3x3 (k),
                                                #   its output concatenated to its input
        y = conv1x1(d)                          # -> out_channels (conv, norm, act)

    The dense block is MONAI's ``monai.networks.nets.densenet._DenseBlock`` (a private class of MONAI, stable since
    MONAI 0.3 and pinned through ``monai==1.6.1``; if it moves, this is the one import to change). DenseNet's layers
    are pre-activation, so the stem convolution gives them features rather than the raw image, and the transition
    (DenseNet's, without its pooling: the U-Net pools between levels) keeps the unit's output width equal to the
    other units', so that any unit can sit at any level.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        in_channels: number of input channels.
        out_channels: number of output channels.
        act: activation, a MONAI ``Act`` name or ``(name, kwargs)``. Default ``"relu"``.
        norm: normalisation, a MONAI ``Norm`` name or ``(name, kwargs)``. Default ``"batch"``.
        dropout: dropout probability after each dense layer (DenseNet's), 0 for none.
        layers: number of dense layers. Default 4.
        growth_rate: channels each dense layer adds (``k``); default ``max(out_channels // layers, 1)``, so that the
            block doubles the stem's width.
        bn_size: bottleneck factor, the 1x1 convolution of a dense layer has ``bn_size * k`` channels (DenseNet: 4).

    Shapes:
        input ``(B, in_channels, H, W[, D])``, output ``(B, out_channels, H, W[, D])``.

    Raises:
        ValueError: if ``layers``, ``growth_rate`` or ``bn_size`` is not positive.

    Example::

        >>> unit = DenseUnit(spatial_dims=2, in_channels=3, out_channels=32)
        >>> unit(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 32, 64, 64])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        act: tuple | str = "relu",
        norm: tuple | str = "batch",
        dropout: float = 0.0,
        layers: int = 4,
        growth_rate: int | None = None,
        bn_size: int = 4,
    ) -> None:
        super().__init__()
        growth = max(out_channels // layers, 1) if growth_rate is None and layers > 0 else growth_rate
        for name, value in (("layers", layers), ("growth_rate", growth), ("bn_size", bn_size)):
            if value is None or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}.")
        self.stem = Convolution(spatial_dims, in_channels, out_channels, kernel_size=3, act=act, norm=norm, bias=False)
        self.dense = _DenseBlock(spatial_dims, layers, out_channels, bn_size, growth, dropout, act=act, norm=norm)
        self.transition = Convolution(
            spatial_dims, out_channels + layers * growth, out_channels, kernel_size=1, act=act, norm=norm, bias=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.transition(self.dense(self.stem(x)))
