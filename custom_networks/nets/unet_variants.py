"""VariantUNet: a U-Net whose unit, attention, bottleneck and activation are chosen by name, in a config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import SimpleASPP, UpSample
from monai.networks.layers.factories import Conv, Pool

from custom_networks.blocks.unet_attention import (
    BLOCK_ATTENTIONS,
    SKIP_ATTENTIONS,
    get_block_attention,
    get_skip_attention,
)
from custom_networks.blocks.unet_units import get_unit, unit_names
from custom_networks.nets._checks import check_input_divisible

__all__ = ["VariantUNet", "ACTIVATIONS", "NORMS", "BOTTLENECKS", "ATTENTION_POSITIONS"]

ACTIVATIONS = ("relu", "leakyrelu", "prelu", "elu", "gelu", "mish", "swish")
NORMS = ("batch", "instance", "group")
BOTTLENECKS: tuple[str | None, ...] = (None, "aspp")
ATTENTION_POSITIONS = ("encoder", "decoder")


def _check_choice(argument: str, value, allowed: Sequence) -> None:
    if value not in allowed:
        raise ValueError(f"{argument} must be one of {tuple(allowed)}, got {value!r}.")


def _layer_name(layer: str | tuple) -> str:
    """The name of a MONAI layer argument, ``"relu"`` or ``("leakyrelu", {...})``, lower case."""
    return (layer if isinstance(layer, str) else layer[0]).lower()


class _DecoderStage(nn.Module):
    """Transposed-convolution up-sampling by 2, skip gate, concatenation ``[skip, up]``, unit, block attention."""

    def __init__(self, up: nn.Module, gate: nn.Module, unit: nn.Module, attention: nn.Module) -> None:
        super().__init__()
        self.up, self.gate, self.unit, self.attention = up, gate, unit, attention

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        return self.attention(self.unit(torch.cat([self.gate(x, skip), x], dim=1)))


class VariantUNet(nn.Module):
    """U-Net whose structural improvements are options: unit type, skip attention, block attention, ASPP bottleneck.

    The U-Net of Ronneberger et al. (MICCAI 2015, arXiv:1505.04597), assembled from interchangeable parts so that the
    structural mechanisms that U-Net surveys group (residual, inception and dense units; attention; dilated
    convolution) are tried by changing a config. With ``L = len(features)`` levels::

        encoder    : level 0: U(in -> f[0]); level i = 1..L-1: maxpool 2, U(f[i-1] -> f[i]);  then A_enc
        bottleneck : ASPP(level L-1) or identity
        decoder    : i = L-2..0: deconv 2 (f[i+1] -> f[i]), G(g=up, x=skip_i), concat [skip_i, up],
                     U(2 f[i] -> f[i]);  then A_dec
        head       : 1x1 conv f[0] -> out_channels (logits)

    where ``U`` is the unit (:func:`~custom_networks.blocks.unet_units.get_unit`), ``G`` the skip attention and
    ``A`` the block attention (:mod:`custom_networks.blocks.unet_attention`). What each option reuses:

    - ``unit``: ``"double_conv"`` MONAI ``TwoConv`` (U-Net; ``features=(32, 64, 128, 256, 512)`` with
      ``"double_conv"`` is MONAI's ``BasicUNet`` topology with a five-level encoder), ``"residual"`` MONAI
      ``UnetResBlock`` (residual U-Net), ``"inception"`` :class:`~custom_networks.blocks.inception.InceptionBlock`,
      ``"dense"`` :class:`~custom_networks.blocks.dense.DenseUnit` (MONAI's DenseNet block);
    - ``skip_attention="attention_gate"``: MONAI ``AttentionBlock`` (Attention U-Net, Oktay et al. 2018,
      arXiv:1804.03999);
    - ``block_attention``: ``"cbam"`` this project's ``CBAM`` (Woo et al. 2018), ``"se"`` MONAI ``ChannelSELayer``
      (Hu et al. 2018), after the units of the levels named in ``attention_positions``;
    - ``bottleneck="aspp"``: MONAI ``SimpleASPP`` (DeepLab's atrous spatial pyramid pooling, Chen et al. 2017,
      arXiv:1606.00915), four parallel convolutions ``(1x1, 3x3 dilated d_2, d_3, d_4)`` of ``f[-1] / 4`` channels each,
      concatenated, then ``1x1 conv, norm, act``, after the deepest unit;
    - ``act``: a MONAI ``Act`` name, the same in every unit, ASPP and the CBAM/SE gates' hidden layer excepted
      (``"mish"`` is MONAI's ``Mish``, Misra 2019, arXiv:1908.08681).

    Departures, named: the attention gate's gating signal is the up-sampled decoder feature at the skip's resolution,
    as in MONAI's ``AttentionUnet``, not Oktay et al.'s coarser-scale signal with resampled coefficients; ASPP has
    no image-pooling branch (MONAI's ``SimpleASPP``) and its default dilations ``(1, 2, 4, 6)`` suit a 1/16-resolution
    map of 256-pixel inputs rather than DeepLab's ``(6, 12, 18)`` at output stride 16 of 513-pixel inputs.

    Outputs:
        - training mode with ``deep_supervision=True``: ``(B, L - 1, out_channels, H, W[, D])``, the main head's
          logits first, then 1x1 heads on the decoder levels at 1/2, 1/4, ... resolution, each up-sampled to the input
          size (bilinear / trilinear), stacked as ``RCBUNetPlusPlus`` and MONAI's ``DynUNet`` do so that the network
          stays scriptable; ``torch.unbind(out, 1)`` is the list ``monai.losses.DeepSupervisionLoss`` takes (its
          ``"exp"`` weights favour the main head);
        - otherwise the main head's logits ``(B, out_channels, H, W[, D])``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (logits; 1 for a binary mask with a sigmoid loss).
        features: widths of the ``L >= 2`` levels, shallowest first. Default ``(32, 64, 128, 256, 512)``.
        unit: ``"double_conv"`` (default), ``"residual"``, ``"inception"`` or ``"dense"`` (or a name added with
            ``register_unit``).
        skip_attention: ``None`` (default) or ``"attention_gate"``.
        block_attention: ``None`` (default), ``"cbam"`` or ``"se"``.
        attention_positions: where ``block_attention`` goes: any of ``"encoder"``, ``"decoder"``. Default both.
        bottleneck: ``None`` (default) or ``"aspp"``.
        act: ``"relu"`` (default), ``"leakyrelu"``, ``"prelu"``, ``"elu"``, ``"gelu"``, ``"mish"`` or ``"swish"``, or
            ``(name, kwargs)``, e.g. ``("leakyrelu", {"negative_slope": 0.1})``.
        norm: ``"batch"`` (default), ``"instance"`` or ``"group"``, or ``(name, kwargs)``, e.g.
            ``("group", {"num_groups": 8})``. The attention gate keeps MONAI's batch norm.
        dropout: dropout probability inside every unit, in ``[0, 1)``. Default 0.
        deep_supervision: return the auxiliary heads too in training mode (see Outputs). Default ``False``.
        reduction: CBAM / SE channel-MLP reduction ratio (both papers: 16).
        aspp_dilations: dilations of the ASPP branches, the first (1) a 1x1 convolution, the others 3x3.
        unit_options: keyword options of the unit (``inception``: ``dilation``; ``dense``: ``layers``,
            ``growth_rate``, ``bn_size``).

    Shapes:
        input ``(B, in_channels, H, W[, D])`` with every spatial size divisible by ``2 ** (L - 1)`` (16 by default);
        output ``(B, out_channels, H, W[, D])`` (see Outputs).

    Raises:
        ValueError: at construction, naming the argument and its allowed values, if ``spatial_dims``, ``unit``,
            ``skip_attention``, ``block_attention``, ``attention_positions``, ``bottleneck``, ``act`` or ``norm`` is
            not one of them, ``features`` has fewer than 2 or non-positive widths, ``dropout`` is outside
            ``[0, 1)``, or ``bottleneck="aspp"`` and ``features[-1]`` is not divisible by ``len(aspp_dilations)``.
        ValueError: in ``forward``, if the input has the wrong number of dimensions or a spatial size is not
            divisible by ``2 ** (L - 1)``.

    TorchScript: every built-in option is scriptable (``torch.jit.script``), as are the MONAI blocks it reuses;
    a unit added with ``register_unit`` is as scriptable as its module.

    Example::

        >>> net = VariantUNet(2, in_channels=3, out_channels=1, unit="residual", skip_attention="attention_gate",
        ...                   block_attention="cbam", bottleneck="aspp", act="mish").eval()
        >>> net(torch.rand(1, 3, 64, 64)).shape
        torch.Size([1, 1, 64, 64])
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        features: Sequence[int] = (32, 64, 128, 256, 512),
        unit: str = "double_conv",
        skip_attention: str | None = None,
        block_attention: str | None = None,
        attention_positions: Sequence[str] | str = ATTENTION_POSITIONS,
        bottleneck: str | None = None,
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
        dropout: float = 0.0,
        deep_supervision: bool = False,
        reduction: int = 16,
        aspp_dilations: Sequence[int] = (1, 2, 4, 6),
        unit_options: Mapping | None = None,
    ) -> None:
        super().__init__()
        positions = (attention_positions,) if isinstance(attention_positions, str) else tuple(attention_positions)
        f = [int(c) for c in features]
        _check_choice("spatial_dims", spatial_dims, (2, 3))
        _check_choice("unit", unit, unit_names())
        _check_choice("skip_attention", skip_attention, SKIP_ATTENTIONS)
        _check_choice("block_attention", block_attention, BLOCK_ATTENTIONS)
        _check_choice("bottleneck", bottleneck, BOTTLENECKS)
        for position in positions:
            _check_choice("attention_positions entries", position, ATTENTION_POSITIONS)
        _check_choice("act", _layer_name(act), ACTIVATIONS)
        _check_choice("norm", _layer_name(norm), NORMS)
        if len(f) < 2 or min(f) < 1:
            raise ValueError(f"features must have at least 2 positive widths (levels), got {tuple(features)}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        if bottleneck == "aspp" and f[-1] % len(aspp_dilations) != 0:
            raise ValueError(
                f"bottleneck='aspp' needs features[-1] = {f[-1]} divisible by "
                f"len(aspp_dilations) = {len(aspp_dilations)}."
            )
        self.spatial_dims = spatial_dims
        self.depth = len(f)
        self.size_divisor = 2 ** (self.depth - 1)
        self.deep_supervision = deep_supervision
        self.interp_mode = "bilinear" if spatial_dims == 2 else "trilinear"
        options = dict(unit_options or {})

        def make_unit(c_in: int, c_out: int) -> nn.Module:
            return get_unit(unit, spatial_dims, c_in, c_out, act=act, norm=norm, dropout=dropout, **options)

        def attention(position: str, channels: int) -> nn.Module:
            name = block_attention if position in positions else None
            return get_block_attention(name, spatial_dims, channels, reduction)

        encoder = [nn.Sequential(make_unit(in_channels, f[0]), attention("encoder", f[0]))]
        for i in range(1, self.depth):
            pool = Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2)
            encoder.append(nn.Sequential(pool, make_unit(f[i - 1], f[i]), attention("encoder", f[i])))
        self.encoder = nn.ModuleList(encoder)

        self.bottleneck: nn.Module = nn.Identity()
        if bottleneck == "aspp":
            n = len(aspp_dilations)
            self.bottleneck = SimpleASPP(
                spatial_dims, f[-1], f[-1] // n, kernel_sizes=(1,) + (3,) * (n - 1), dilations=tuple(aspp_dilations),
                norm_type=norm, acti_type=act,
            )

        decoder = []
        for i in range(self.depth - 2, -1, -1):  # deepest first
            up = UpSample(spatial_dims, f[i + 1], f[i], scale_factor=2, mode="deconv")
            gate = get_skip_attention(skip_attention, spatial_dims, gate_channels=f[i], skip_channels=f[i])
            decoder.append(_DecoderStage(up, gate, make_unit(2 * f[i], f[i]), attention("decoder", f[i])))
        self.decoder = nn.ModuleList(decoder)

        conv = Conv[Conv.CONV, spatial_dims]
        self.head = conv(f[0], out_channels, kernel_size=1)
        # auxiliary heads on decoder levels 1 .. L-2 (1/2, 1/4, ... resolution), shallowest first
        self.aux_heads = nn.ModuleList(
            [conv(f[i], out_channels, kernel_size=1) for i in range(1, self.depth - 1)] if deep_supervision else []
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_divisible(x, self.spatial_dims, self.depth - 1, "VariantUNet")
        skips: list[torch.Tensor] = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = self.bottleneck(x)
        decoded: list[torch.Tensor] = []
        for k, stage in enumerate(self.decoder):
            x = stage(x, skips[-2 - k])
            decoded.append(x)
        out = self.head(x)
        if not (self.training and self.deep_supervision):
            return out
        outputs = [out]
        for j, head in enumerate(self.aux_heads):  # decoded[-2] is level 1 (1/2 resolution), decoded[-3] level 2, ...
            aux = head(decoded[-2 - j])
            outputs.append(F.interpolate(aux, size=out.shape[2:], mode=self.interp_mode, align_corners=False))
        return torch.stack(outputs, dim=1)
