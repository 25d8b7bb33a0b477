"""Multi-scale residual unit: a Res2Net convolution, CBAM's channel gate and a residual shortcut.

The multi-scale convolution is Res2Net's (Gao et al., "Res2Net: A New Multi-scale Backbone Architecture",
IEEE TPAMI 2021, arXiv:1904.01169, section 3.1, eq. 1): a 1x1 convolution, its output split into ``s`` groups
of channels ``x_1..x_s``, ``y_1 = x_1``, ``y_2 = K_2(x_2)``, ``y_i = K_i(x_i + y_{i-1})`` for ``2 < i <= s``
(each ``K_i`` a 3x3 convolution), so that group ``i`` sees a receptive field of ``2i - 1`` (1, 3, 5, 7 for
``s = 4``); the groups are concatenated and fused by a 1x1 convolution. The unit gates the result with CBAM's
channel attention (Woo et al., ECCV 2018, eq. 2; ``ChannelAttention`` of ``cbam.py``) before adding the
shortcut, as SE-/CBAM-ResNet place their gates. Used by the spine network ``MSRUNet`` (Jin et al. 2021).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.utils import get_act_layer

from custom_networks.blocks.cbam import ChannelAttention

__all__ = ["MultiScaleConv", "MultiScaleResidualUnit"]


class MultiScaleConv(nn.Module):
    """Res2Net's hierarchical multi-scale convolution (Gao et al., section 3.1, eq. 1, figure 2b).

    ``1x1 conv (in -> out) -> split into s groups -> y_1 = x_1, y_2 = K_2(x_2), y_i = K_i(x_i + y_{i-1})
    -> concatenate -> 1x1 conv (out -> out)``. Every convolution is ``conv -> norm -> act`` except the last,
    which has no activation (it is followed by the residual sum in ``MultiScaleResidualUnit``). The hidden
    width equals ``out_channels``, so each group has ``out_channels / scales`` channels.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3 (3x3 means 3x3x3 in 3D).
        in_channels: number of input channels.
        out_channels: number of output (and hidden) channels; must be divisible by ``scales``.
        scales: number of groups ``s`` (Res2Net's scale; 4 here and in the spine paper), at least 2.
        norm: normalisation, a MONAI ``Norm`` name or ``(name, kwargs)``, or ``None`` (then the
            convolutions have a bias). Default ``"batch"``.
        act: activation, a MONAI ``Act`` name or ``(name, kwargs)``, or ``None``. Default ``"relu"``.

    Shapes:
        input ``(B, in_channels, H, W[, D])``, output ``(B, out_channels, H, W[, D])``.

    Raises:
        ValueError: if ``scales < 2`` or ``out_channels`` is not divisible by ``scales``.

    Example::

        >>> conv = MultiScaleConv(spatial_dims=2, in_channels=16, out_channels=32, scales=4)
        >>> [y.shape[1] for y in conv.groups(torch.rand(1, 16, 8, 8))]
        [8, 8, 8, 8]
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        scales: int = 4,
        norm: tuple | str | None = "batch",
        act: tuple | str | None = "relu",
    ) -> None:
        super().__init__()
        if scales < 2:
            raise ValueError(f"scales must be >= 2 (with 1 group there is no 3x3 convolution), got {scales}.")
        if out_channels % scales != 0:
            raise ValueError(f"out_channels ({out_channels}) must be divisible by scales ({scales}).")
        self.group_width = out_channels // scales
        kw = dict(norm=norm, bias=norm is None)
        self.conv_in = Convolution(spatial_dims, in_channels, out_channels, kernel_size=1, act=act, **kw)
        self.convs = nn.ModuleList(
            [
                Convolution(spatial_dims, self.group_width, self.group_width, kernel_size=3, act=act, **kw)
                for _ in range(scales - 1)
            ]
        )
        self.conv_out = Convolution(spatial_dims, out_channels, out_channels, kernel_size=1, act=None, **kw)

    def groups(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The group outputs ``[y_1, ..., y_s]`` before concatenation, each ``(B, out_channels / s, H, W[, D])``."""
        xs = torch.split(self.conv_in(x), self.group_width, dim=1)
        y = xs[0]
        ys = [y]
        for i, conv in enumerate(self.convs):
            y = conv(xs[1]) if i == 0 else conv(xs[i + 1] + y)
            ys.append(y)
        return ys

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(torch.cat(self.groups(x), dim=1))


class MultiScaleResidualUnit(nn.Module):
    """Multi-scale residual unit: ``act(CA(MultiScaleConv(x)) + shortcut(x))``.

    The body is ``MultiScaleConv`` (Res2Net, eq. 1); ``CA`` is CBAM's channel gate
    ``x * sigmoid(MLP(avgpool x) + MLP(maxpool x))`` (``ChannelAttention``, Woo et al. eq. 2), or the identity
    when ``channel_attention`` is false; the shortcut is the identity, or a 1x1 convolution and norm (ResNet's
    projection) when the channel count changes; ``act`` follows the sum, as in ResNet.

    Subclasses may replace the body by overriding ``_body`` (the spine network's "residual" ablation unit
    does), keeping the gate, the shortcut and the activation.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        in_channels: number of input channels.
        out_channels: number of output channels; must be divisible by ``scales``.
        scales: number of Res2Net groups ``s`` (default 4: receptive fields 1, 3, 5, 7), at least 2.
        channel_attention: gate the body's output with CBAM's channel attention. Default true.
        reduction: reduction ratio of the channel-attention MLP (CBAM's 16).
        norm: normalisation, a MONAI ``Norm`` name or ``(name, kwargs)``, or ``None``. Default ``"batch"``.
        act: activation, a MONAI ``Act`` name or ``(name, kwargs)``, or ``None``. Default ``"relu"``.

    Shapes:
        input ``(B, in_channels, H, W[, D])``, output ``(B, out_channels, H, W[, D])``.

    Raises:
        ValueError: as ``MultiScaleConv`` (``scales``, divisibility), or if ``reduction < 1``.

    Example::

        >>> unit = MultiScaleResidualUnit(spatial_dims=3, in_channels=1, out_channels=16)
        >>> unit(torch.rand(2, 1, 8, 8, 8)).shape
        torch.Size([2, 16, 8, 8, 8])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        scales: int = 4,
        channel_attention: bool = True,
        reduction: int = 16,
        norm: tuple | str | None = "batch",
        act: tuple | str | None = "relu",
    ) -> None:
        super().__init__()
        self.body = self._body(spatial_dims, in_channels, out_channels, scales, norm, act)
        self.attention: nn.Module = (
            ChannelAttention(spatial_dims, out_channels, reduction=reduction) if channel_attention else nn.Identity()
        )
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels:
            self.shortcut = Convolution(
                spatial_dims, in_channels, out_channels, kernel_size=1, act=None, norm=norm, bias=norm is None
            )
        self.act: nn.Module = get_act_layer(act) if act is not None else nn.Identity()

    def _body(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        scales: int,
        norm: tuple | str | None,
        act: tuple | str | None,
    ) -> nn.Module:
        return MultiScaleConv(spatial_dims, in_channels, out_channels, scales, norm=norm, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.attention(self.body(x)) + self.shortcut(x))
