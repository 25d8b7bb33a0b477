"""Inception block for U-Net encoder/decoder units: four parallel branches of different receptive fields, concatenated.

Szegedy et al., "Going deeper with convolutions", CVPR 2015, arXiv:1409.4842 (the four-branch module, figure 2b);
Szegedy et al., "Rethinking the Inception architecture for computer vision", CVPR 2016, arXiv:1512.00567 (a 5x5
convolution factorised as two 3x3, figure 5). In U-Nets: Punn and Agarwal, "Inception U-Net architecture for
semantic segmentation to identify nuclei in microscopy cell images", ACM TOMM 16(1), 2020, doi:10.1145/3376922, and
Zhang et al., "DENSE-INception U-net for medical image segmentation", Computer Methods and Programs in Biomedicine
192, 2020 (DIU-Net).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Dropout, Pool

__all__ = ["InceptionBlock"]


class InceptionBlock(nn.Module):
    """Inception block: ``concat[1x1, 1x1->3x3, 1x1->3x3->3x3, maxpool3->1x1]``, then optional dropout.

    Branches (every convolution is MONAI ``Convolution``: conv, norm, activation; no bias when a norm follows)::

        b1 = conv1x1(x)                                   # receptive field 1
        b2 = conv3x3(conv1x1(x))                          # receptive field 3
        b3 = conv3x3(conv3x3(conv1x1(x)))                 # receptive field 5 (5x5 factorised, Szegedy 2016)
           | conv3x3_dilated(conv1x1(x))                  # when dilation > 1: receptive field 2 * dilation + 1
        b4 = conv1x1(maxpool3x3_stride1(x))               # pooling branch
        y  = dropout(concat[b1, b2, b3, b4])

    Departures from GoogLeNet, named so that they are not mistaken for the paper's: the four branch widths split
    ``out_channels`` evenly (``out_channels // 4`` each, the remainder to ``b1``) instead of GoogLeNet's per-stage
    table; each 1x1 reduction has the width of its branch; the fifth-order branch is two 3x3 (Szegedy 2016) or one
    dilated 3x3 (``dilation``), never a 5x5. Punn and Agarwal's hybrid max/Hartley pooling and switch normalisation
    are not reproduced (MONAI has neither); any MONAI ``Norm`` can be passed instead.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3 (3x3 means 3x3x3 in 3D).
        in_channels: number of input channels.
        out_channels: number of output channels, at least 4 (one per branch).
        act: activation, a MONAI ``Act`` name or ``(name, kwargs)``. Default ``"relu"``.
        norm: normalisation, a MONAI ``Norm`` name or ``(name, kwargs)``, or ``None``. Default ``"batch"``.
        dropout: dropout probability after the concatenation, 0 for none.
        dilation: 1 (default) for the factorised 5x5 branch; ``d > 1`` replaces it by one 3x3 convolution of
            dilation ``d``.

    Shapes:
        input ``(B, in_channels, H, W[, D])``, output ``(B, out_channels, H, W[, D])`` (padding keeps the size).

    Raises:
        ValueError: if ``out_channels < 4`` or ``dilation < 1``.

    Example::

        >>> block = InceptionBlock(spatial_dims=2, in_channels=3, out_channels=32)
        >>> block(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 32, 64, 64])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        act: tuple | str | None = "relu",
        norm: tuple | str | None = "batch",
        dropout: float = 0.0,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        if out_channels < 4:
            raise ValueError(f"out_channels must be >= 4 (one channel per inception branch), got {out_channels}.")
        if dilation < 1:
            raise ValueError(f"dilation must be >= 1, got {dilation}.")
        width = out_channels // 4
        widths = (out_channels - 3 * width, width, width, width)

        def conv(c_in: int, c_out: int, kernel_size: int, dil: int = 1) -> Convolution:
            return Convolution(
                spatial_dims, c_in, c_out, kernel_size=kernel_size, dilation=dil, act=act, norm=norm, bias=norm is None
            )

        self.branch1 = conv(in_channels, widths[0], 1)
        self.branch2 = nn.Sequential(conv(in_channels, widths[1], 1), conv(widths[1], widths[1], 3))
        if dilation == 1:
            self.branch3 = nn.Sequential(
                conv(in_channels, widths[2], 1), conv(widths[2], widths[2], 3), conv(widths[2], widths[2], 3)
            )
        else:
            self.branch3 = nn.Sequential(conv(in_channels, widths[2], 1), conv(widths[2], widths[2], 3, dilation))
        self.branch4 = nn.Sequential(
            Pool[Pool.MAX, spatial_dims](kernel_size=3, stride=1, padding=1), conv(in_channels, widths[3], 1)
        )
        self.dropout = Dropout[Dropout.DROPOUT, spatial_dims](dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)
        return self.dropout(y)
