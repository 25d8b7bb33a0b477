"""IA-CNN: encoder-decoder segmentation network with integrated (scale, spatial and channel) attention."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv, Pool

from custom_networks.blocks.affinity_attention import AffinityAttention
from custom_networks.blocks.cbam import ChannelAttention
from custom_networks.blocks.scale_feature_attention import ScaleFeatureAttention
from custom_networks.blocks.upcat import UpCat
from custom_networks.nets._checks import check_input_divisible

__all__ = ["IACNN"]


class _DecoderStage(nn.Module):
    """A decoder stage: ``UpCat`` (MONAI's block: 2x transposed convolution ``in -> out`` channels, concatenation
    ``[skip, up]``, two 3x3 conv blocks ``2 out -> out``), then ``attention`` (``nn.Identity`` for none).

    Checkpoints saved before the stage used ``UpCat`` name its weights ``up.*`` and ``fuse.0.*``/``fuse.1.*``; a
    load-state-dict pre-hook renames them (:data:`_OLD_KEYS`), so such checkpoints load unchanged, strictly.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        norm: tuple | str | None,
        act: tuple | str | None,
        dropout: float,
        attention: nn.Module,
    ) -> None:
        super().__init__()
        # UpCat's up-sampling keeps the channels or halves them (``halves``): the IA-CNN's widths allow both
        self.upcat = UpCat(
            spatial_dims, in_channels, out_channels, out_channels, act=act, norm=norm, bias=norm is None,
            dropout=dropout if dropout > 0 else None, upsample="deconv", halves=in_channels != out_channels,
        )
        self.attention = attention
        self.register_load_state_dict_pre_hook(_rename_old_keys)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.attention(self.upcat(x, skip))


# key prefixes of a decoder stage before it was built on UpCat -> now
_OLD_KEYS = {"up.": "upcat.upsample.", "fuse.0.": "upcat.convs.conv_0.", "fuse.1.": "upcat.convs.conv_1."}


def _rename_old_keys(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    for key in [k for k in state_dict if k.startswith(prefix)]:
        for old, new in _OLD_KEYS.items():
            if key.startswith(prefix + old):
                state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)
                break


class IACNN(nn.Module):
    """Integrated-attention convolutional neural network (IA-CNN) for segmentation.

    "Medical image segmentation with a convolutional neural network based on integrated attention":
    an encoder-decoder with skip connections whose encoder stages are scale feature attention (SFA)
    blocks (eqs. 1-4) and whose deepest decoder stages are followed by spatial attention (eqs. 5-6)
    and channel attention (eqs. 7-8). Train with BCE + Dice on the logits, e.g.
    ``monai.losses.DiceCELoss(sigmoid=True)`` (BCE-with-logits when ``out_channels == 1``); the paper's
    input is 256 x 256 RGB.

    Structure, with ``L = len(channels)`` (5 in the paper) and ``c = channels``::

        encoder   : SFA(in -> c[0]), then for i = 1..L-1: maxpool 2, SFA(c[i-1] -> c[i])  -> skips
        bottleneck: maxpool 2, SFA(c[L-1] -> c[L-1])                                      (1/2**L)
        decoder   : L stages, deepest first, each MONAI's UpCat: deconv 2 (-> c[i]), concat skip i,
                    2 x (3x3 conv, norm, act); the first ``attention_stages`` stages are then followed
                    by spatial attention (AffinityAttention) and channel attention (ChannelAttention)
        head      : 1x1 conv c[0] -> out_channels (logits, no activation)

    Design decisions and departures from the paper (where the paper is silent or intractable):

    - **Widths.** The paper's channel widths are not known to us; the default ``(32, 64, 128, 256, 512)``
      is a U-Net progression (doubling per stage) at half U-Net's widths, which keeps the default 2D model at
      29.05 M parameters. The bottleneck keeps ``c[L-1]`` channels instead of doubling them (doubling to
      1024 would add 23 M parameters at 1/32 resolution). Each width must equal or double the one before
      it: a decoder stage is MONAI's ``UpCat``, whose up-sampling keeps or halves the channels.
    - **Five down-samplings.** Five transposed-convolution stages up need five down-samplings: one 2x
      max-pool before each of encoder stages 2-5 and one before the bottleneck (the pooling and
      bottleneck layout of U-Net, one level deeper). Input sizes must therefore be divisible by ``2**L``
      (32 by default); other sizes raise ``ValueError`` rather than being padded silently.
    - **Convolutions.** Every convolution is ``conv -> norm -> activation`` (batch norm and ReLU by
      default); the SFA branches are read as in ``ScaleFeatureAttention``. The decoder fuses the
      up-sampled and skip features by concatenation and two 3x3 conv blocks, as in U-Net: MONAI's
      ``UpCat`` (``custom_networks.blocks.upcat.UpCat``, which never needs to pad here). Up-sampling is
      a transposed convolution of kernel 2 and stride 2 (``UpSample(mode="deconv")``).
    - **Spatial attention** (eqs. 5-6) is computed as a ``C x C`` channel affinity scaled by ``1/N``
      (``AffinityAttention``, see its docstring): the literal ``(HW) x (HW)`` pixel affinity is
      65536**2 entries at 256 x 256. The paper's text swaps the names "spatial" and "channel"
      attention; the equations are followed here.
    - **Channel attention** (eqs. 7-8) is ``ChannelAttention(residual=True)`` of CBAM (shared MLP over
      max- and average-pooled descriptors, ``out = x + x * beta``), reduction ratio ``reduction``
      (16, CBAM's; the paper's ratio is not known to us).
    - **Order and placement.** Spatial then channel attention, sequentially (each is itself residual,
      so the pair stays close to the identity at initialisation), after the fusion convolutions of the
      three deepest decoder stages (1/16, 1/8 and 1/4 resolution for ``L = 5``), our reading of
      figure 1; a parallel (DANet-style summed) arrangement is not implemented.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3 (the paper is 2D).
        in_channels: number of input channels (3 for the paper's RGB images).
        out_channels: number of output channels (logits), 1 for binary segmentation.
        channels: widths of the encoder stages, shallowest first, each equal to or double the one before;
            its length ``L`` is the number of encoder stages, of down-samplings and of decoder stages.
            Default ``(32, 64, 128, 256, 512)``.
        attention_stages: number of decoder stages, deepest first, followed by spatial and channel
            attention, between 0 and ``L``. Default 3.
        reduction: reduction ratio of the channel-attention MLP. Default 16.
        affinity_normalize: scaling of the spatial-attention affinity, ``"mean"`` (``1/N``, default),
            ``"sqrt"`` (``1/sqrt(N)``) or ``"none"`` (the paper's unscaled product); see
            ``AffinityAttention``.
        norm: normalisation of every conv block, a MONAI ``Norm`` name or ``(name, kwargs)``, or ``None``.
            Default ``"batch"``. With batch norm in training mode the bottleneck needs more than one value
            per channel: batch size > 1 or inputs larger than ``2**L`` pixels per side.
        act: activation of every conv block, a MONAI ``Act`` name or ``(name, kwargs)``. Default ``"relu"``.
        dropout: dropout probability in every conv block, 0 for none. Default 0.

    Shapes:
        input ``(B, in_channels, H, W[, D])`` with every spatial size divisible by ``2**L``;
        output ``(B, out_channels, H, W[, D])``, logits.

    Raises:
        ValueError: at construction, if ``spatial_dims`` is not 2 or 3, ``channels`` is empty, has a
            non-positive width or a width neither equal to nor double the one before, or
            ``attention_stages`` is not in ``[0, L]``.
        ValueError: in ``forward``, if the input does not have ``spatial_dims + 2`` dimensions or a spatial
            size is not divisible by ``2**L``.

    Checkpoints saved before the decoder stages were built on ``UpCat`` (keys ``decoder.<k>.up.*``,
    ``decoder.<k>.fuse.{0,1}.*``) load unchanged: a load-state-dict pre-hook renames their keys.

    Example::

        >>> net = IACNN(spatial_dims=2, in_channels=3, out_channels=1)
        >>> net(torch.rand(2, 3, 256, 256)).shape
        torch.Size([2, 1, 256, 256])
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 1,
        channels: Sequence[int] = (32, 64, 128, 256, 512),
        attention_stages: int = 3,
        reduction: int = 16,
        affinity_normalize: str = "mean",
        norm: tuple | str | None = "batch",
        act: tuple | str | None = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        channels = tuple(int(c) for c in channels)
        if len(channels) == 0 or min(channels) < 1:
            raise ValueError(f"channels must be a non-empty sequence of positive widths, got {channels}.")
        if any(c_next not in (c, 2 * c) for c, c_next in zip(channels[:-1], channels[1:])):
            raise ValueError(f"each width in channels must equal or double the one before it, got {channels}.")
        if not 0 <= attention_stages <= len(channels):
            raise ValueError(f"attention_stages must be in [0, {len(channels)}], got {attention_stages}.")
        self.spatial_dims = spatial_dims
        self.depth = len(channels)
        self.size_divisor = 2**self.depth

        def sfa(c_in: int, c_out: int) -> ScaleFeatureAttention:
            return ScaleFeatureAttention(spatial_dims, c_in, c_out, norm=norm, act=act, dropout=dropout)

        def pool() -> nn.Module:
            return Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2)

        stages: list[nn.Module] = [sfa(in_channels, channels[0])]
        stages += [nn.Sequential(pool(), sfa(channels[i - 1], channels[i])) for i in range(1, self.depth)]
        self.encoder = nn.ModuleList(stages)
        self.bottleneck = nn.Sequential(pool(), sfa(channels[-1], channels[-1]))

        decoder = []
        for k in range(self.depth):  # deepest first
            c_in = channels[-1] if k == 0 else channels[self.depth - k]
            c_out = channels[self.depth - 1 - k]
            attention: nn.Module = nn.Identity()
            if k < attention_stages:
                attention = nn.Sequential(
                    OrderedDict(
                        spatial=AffinityAttention(affinity_normalize),
                        channel=ChannelAttention(spatial_dims, c_out, reduction=reduction, residual=True),
                    )
                )
            decoder.append(_DecoderStage(spatial_dims, c_in, c_out, norm, act, dropout, attention))
        self.decoder = nn.ModuleList(decoder)
        self.head = Conv[Conv.CONV, spatial_dims](channels[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_divisible(x, self.spatial_dims, self.depth, "IACNN")
        skips: list[torch.Tensor] = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = self.bottleneck(x)
        for k, stage in enumerate(self.decoder):
            x = stage(x, skips[-1 - k])
        return self.head(x)
