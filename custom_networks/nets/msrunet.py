"""MSR-UNet: U-Net of multi-scale residual units with channel attention, for spine CT (Jin et al. 2021)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv, Pool
from monai.networks.nets.basic_unet import TwoConv, UpCat

from custom_networks.blocks.cbam import ChannelAttention
from custom_networks.blocks.multiscale_residual import MultiScaleResidualUnit
from custom_networks.nets._checks import check_input_dims

__all__ = ["MSRUNet"]

UNITS = ("plain", "residual", "multiscale")


class _ResidualUnit(MultiScaleResidualUnit):
    """The "residual" ablation unit: the multi-scale unit's gate, shortcut and activation around ResNet's basic
    body (3x3 conv, norm, act, 3x3 conv, norm), so that the two units differ in their body alone."""

    def _body(self, spatial_dims, in_channels, out_channels, scales, norm, act):  # type: ignore[no-untyped-def]
        kw = dict(kernel_size=3, norm=norm, bias=norm is None)
        return nn.Sequential(
            Convolution(spatial_dims, in_channels, out_channels, act=act, **kw),
            Convolution(spatial_dims, out_channels, out_channels, act=None, **kw),
        )


def _unit(
    kind: str,
    spatial_dims: int,
    in_ch: int,
    out_ch: int,
    channel_attention: bool,
    scales: int,
    reduction: int,
    norm: tuple | str | None,
    act: tuple | str | None,
) -> nn.Module:
    """One convolution unit of the network: ``plain`` (U-Net's two 3x3 conv blocks, then the gate),
    ``residual`` (ResNet basic block) or ``multiscale`` (Res2Net); the gate is CBAM's channel attention."""
    if kind == "multiscale":
        return MultiScaleResidualUnit(spatial_dims, in_ch, out_ch, scales, channel_attention, reduction, norm, act)
    if kind == "residual":
        return _ResidualUnit(spatial_dims, in_ch, out_ch, scales, channel_attention, reduction, norm, act)
    gate = ChannelAttention(spatial_dims, out_ch, reduction=reduction) if channel_attention else nn.Identity()
    convs = TwoConv(spatial_dims, in_ch, out_ch, act=act, norm=norm, bias=norm is None)  # type: ignore[arg-type]
    return nn.Sequential(convs, gate)


class _Up(UpCat):
    """MONAI's UpCat (2x transposed convolution halving the channels, replicate-padding to the skip's size,
    concatenation) whose two convolutions are replaced by the network's unit."""

    def __init__(self, spatial_dims: int, in_ch: int, cat_ch: int, out_ch: int, unit: nn.Module) -> None:
        super().__init__(spatial_dims, in_ch, cat_ch, out_ch, act="relu", norm="batch", bias=False, halves=True)
        self.convs = unit


class MSRUNet(nn.Module):
    """U-Net whose convolution blocks are multi-scale residual units with channel attention (MSR-UNet).

    Jin, Zhou, He and Gu, "Segmentation of spine CT images based on multi-scale feature fusion and attention
    mechanism", Computer Systems & Applications, 2021; built on U-Net (Ronneberger et al., MICCAI 2015,
    arXiv:1505.04597), Res2Net (Gao et al., TPAMI 2021, arXiv:1904.01169, eq. 1) and CBAM's channel attention
    (Woo et al., ECCV 2018, arXiv:1807.06521, eq. 2). The paper segments 512 x 512 axial CT slices (2D).

    Structure, with ``L = len(features)`` levels (5 by default) and ``f = features``::

        encoder : U(in -> f[0]), then for i = 1..L-1: maxpool 2, U(f[i-1] -> f[i])      -> skips
        decoder : for i = L-2..0: deconv 2 (f[i+1] -> f[i+1] / 2), concatenate skip i, U(-> f[i])
        head    : 1x1 conv f[0] -> out_channels (logits, no activation)
        U       : the unit chosen by ``unit`` (below), every one gated by channel attention if asked

    Units (the paper's ablation; each row is a change of ``unit`` and ``channel_attention``):

    - ``"plain"``: U-Net's two ``3x3 conv -> norm -> act`` blocks (MONAI ``TwoConv``), then the gate;
    - ``"residual"``: ``act(CA(conv3-norm-act-conv3-norm (x)) + shortcut(x))``, ResNet's basic block;
    - ``"multiscale"`` (the paper's): ``act(CA(MultiScaleConv(x)) + shortcut(x))``, ``MultiScaleResidualUnit``:
      1x1 conv, ``scales`` groups with receptive fields 1, 3, 5, 7 (Res2Net's hierarchy), 1x1 conv.

    The shortcut is the identity, or a 1x1 conv and norm where the channel count changes; ``CA`` is CBAM's
    channel gate ``x * sigmoid(MLP(avgpool x) + MLP(maxpool x))`` (``ChannelAttention``), or the identity
    when ``channel_attention`` is false.

    Departures from the paper (its full text was not available to us; where it is silent or unknown to us):

    - **Res2Net's first groups.** ``y_2 = K_2(x_2)`` as in Res2Net's eq. 1, rather than ``K_2(x_2 + y_1)``:
      ``y_1 = x_1`` is passed through unchanged; the receptive fields (1, 3, 5, 7) are the same either way.
    - **Widths.** ``features`` default ``(32, 64, 128, 256, 512)``, half of U-Net's, with the hidden width of
      a multi-scale unit equal to its output width (Res2Net's bottleneck expansion is not used).
    - **Gate placement.** Channel attention is applied to the body's output before the shortcut is added
      (as SE-ResNet and CBAM-ResNet place their gates), in every unit of the encoder and the decoder; its
      MLP reduction ratio is CBAM's 16.
    - **Norm and activation.** Batch norm and ReLU (the usual U-Net/ResNet/Res2Net choice), configurable.
    - **Up-sampling.** A 2x transposed convolution halving the channels (U-Net's "up-convolution").

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3 (the paper is 2D).
        in_channels: number of input channels (1 for CT).
        out_channels: number of output channels (logits): 1 for a binary spine mask, or one per class.
        features: widths of the ``L`` levels, shallowest first, at least 2 of them. With ``unit="multiscale"``
            each must be divisible by ``scales``.
        unit: ``"multiscale"`` (default, the paper's), ``"residual"`` or ``"plain"``.
        channel_attention: follow every unit's body by CBAM's channel gate. Default true.
        scales: number of Res2Net groups of a multi-scale unit (paper: 4), at least 2. Unused by other units.
        reduction: reduction ratio of the channel-attention MLP. Default 16.
        norm: normalisation after each convolution, a MONAI ``Norm`` name or ``(name, kwargs)``, or ``None``.
            Default ``"batch"``. With batch norm in training mode the deepest level needs more than one value
            per channel (batch size > 1 or inputs larger than ``2**(L-1)`` per side).
        act: activation, a MONAI ``Act`` name or ``(name, kwargs)``. Default ``"relu"``.

    Shapes:
        input ``(B, in_channels, H, W[, D])``, output ``(B, out_channels, H, W[, D])``, logits. Sizes divisible
        by ``2**(L-1)`` (16 by default) are the natural ones; other sizes work too (max pooling rounds down,
        each up-sampled map is replicate-padded by one pixel to its skip's size, as MONAI's ``BasicUNet``
        does), provided every spatial size is at least ``2**(L-1)``.

    Raises:
        ValueError: at construction, if ``spatial_dims`` is not 2 or 3, ``unit`` is unknown, ``features`` has
            fewer than 2 entries or a non-positive width, or (multi-scale units) ``scales < 2`` or a width is
            not divisible by ``scales``.
        ValueError: in ``forward``, if the input does not have ``spatial_dims + 2`` dimensions or a spatial
            size is smaller than ``2**(L-1)``.

    Example::

        >>> net = MSRUNet(spatial_dims=2, in_channels=1, out_channels=1).eval()
        >>> net(torch.rand(1, 1, 512, 512)).shape
        torch.Size([1, 1, 512, 512])
        >>> ablation = MSRUNet(2, 1, 1, unit="residual", channel_attention=False)
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        features: Sequence[int] = (32, 64, 128, 256, 512),
        unit: str = "multiscale",
        channel_attention: bool = True,
        scales: int = 4,
        reduction: int = 16,
        norm: tuple | str | None = "batch",
        act: tuple | str | None = "relu",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, got {unit!r}.")
        f = tuple(int(c) for c in features)
        if len(f) < 2 or min(f) < 1:
            raise ValueError(f"features must hold at least 2 positive widths, got {tuple(features)}.")
        if unit == "multiscale":
            if scales < 2:
                raise ValueError(f"scales must be >= 2, got {scales}.")
            if any(c % scales for c in f):
                raise ValueError(f"every width in features {f} must be divisible by scales ({scales}).")
        self.spatial_dims = spatial_dims
        self.depth = len(f)
        self.min_size = 2 ** (self.depth - 1)

        def make(c_in: int, c_out: int) -> nn.Module:
            return _unit(unit, spatial_dims, c_in, c_out, channel_attention, scales, reduction, norm, act)

        def pool() -> nn.Module:
            return Pool[Pool.MAX, spatial_dims](kernel_size=2)

        stages: list[nn.Module] = [make(in_channels, f[0])]
        stages += [nn.Sequential(pool(), make(f[i - 1], f[i])) for i in range(1, self.depth)]
        self.encoder = nn.ModuleList(stages)
        self.decoder = nn.ModuleList(  # deepest first; the unit takes the skip's f[i] + the up-sampled f[i+1] // 2
            [
                _Up(spatial_dims, f[i + 1], f[i], f[i], make(f[i] + f[i + 1] // 2, f[i]))
                for i in range(self.depth - 2, -1, -1)
            ]
        )
        self.head = Conv[Conv.CONV, spatial_dims](f[0], out_channels, kernel_size=1)

    def _check_input(self, x: torch.Tensor) -> None:
        check_input_dims(x, self.spatial_dims, "MSRUNet")
        if min(x.shape[2:]) < self.min_size:
            raise ValueError(
                f"every spatial size must be at least 2**{self.depth - 1} = {self.min_size} "
                f"({self.depth - 1} 2x poolings), got shape {list(x.shape)}."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        skips: list[torch.Tensor] = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        for k, up in enumerate(self.decoder):
            x = up(x, skips[-2 - k])
        return self.head(x)
