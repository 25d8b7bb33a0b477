"""Scale feature attention (SFA) block of the integrated-attention CNN (IA-CNN).

"Medical image segmentation with a convolutional neural network based on integrated attention" (IA-CNN),
section on scale feature attention, eqs. 1-4: three parallel branches of different receptive fields
(1x1; 1x1 -> 3x3; 1x1 -> 3x3 -> 3x3) whose outputs are summed.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution

__all__ = ["ScaleFeatureAttention"]


class ScaleFeatureAttention(nn.Module):
    """Scale feature attention block (IA-CNN eqs. 1-4).

    Three branches, each a chain of convolutions with normalisation and activation, summed (eq. 4)::

        B1 = conv3x3(conv3x3(conv1x1(X)))   # receptive field 5
        B2 = conv3x3(conv1x1(X))            # receptive field 3
        B3 = conv1x1(X)                     # receptive field 1
        Y  = B1 + B2 + B3

    Reading of the equations (the paper does not spell these out):

    - every convolution is ``conv -> norm -> activation`` (MONAI ``Convolution``, ``adn_ordering="NDA"``),
      the usual reading of "convolution" in the paper's encoder; the convolution has no bias when a
      norm follows (the norm's shift makes it redundant);
    - each branch has its own 1x1 convolution (Inception style), i.e. the 1x1 of eq. 3 is not shared with
      those of eqs. 1-2;
    - every convolution of every branch has ``out_channels`` filters (the sum of eq. 4 needs equal widths);
    - nothing follows the sum (no extra norm, activation or residual), as eq. 4 has none.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3 (3x3 means 3x3x3 in 3D).
        in_channels: number of input channels.
        out_channels: number of output channels of every branch and of the block.
        norm: normalisation, a MONAI ``Norm`` name or ``(name, kwargs)``; ``None`` for none (then the
            convolutions have a bias). Default ``"batch"``.
        act: activation, a MONAI ``Act`` name or ``(name, kwargs)``. Default ``"relu"`` (the paper's ReLU).
        dropout: dropout probability after each normalisation, 0 for none.

    Shapes:
        input ``(B, in_channels, H, W[, D])``, output ``(B, out_channels, H, W[, D])`` (padding keeps the size).

    Example::

        >>> sfa = ScaleFeatureAttention(spatial_dims=2, in_channels=3, out_channels=32)
        >>> sfa(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 32, 64, 64])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        norm: tuple | str | None = "batch",
        act: tuple | str | None = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        bias = norm is None

        def conv(c_in: int, kernel_size: int) -> Convolution:
            return Convolution(
                spatial_dims,
                c_in,
                out_channels,
                kernel_size=kernel_size,
                act=act,
                norm=norm,
                dropout=dropout if dropout > 0 else None,
                bias=bias,
            )

        self.branch1 = nn.Sequential(conv(in_channels, 1), conv(out_channels, 3), conv(out_channels, 3))
        self.branch2 = nn.Sequential(conv(in_channels, 1), conv(out_channels, 3))
        self.branch3 = nn.Sequential(conv(in_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch1(x) + self.branch2(x) + self.branch3(x)
