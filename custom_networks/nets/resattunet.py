"""ResAttUNet: U-Net with a ResNet34 encoder and attention-gated skip connections.

Ye and Hua, "Research on image segmentation of pneumonia based on deep learning" (2022).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn

from monai.networks.blocks import Convolution, UpSample
from monai.networks.layers.factories import Conv
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from monai.networks.nets.attentionunet import AttentionBlock
from monai.networks.nets.resnet import ResNet, ResNetBlock

from custom_networks.nets._checks import check_input_divisible

__all__ = ["ResAttUNet", "load_torchvision_resnet34"]

_NUM_STAGES = 4
# the encoder's 2x down-samplings: stride-2 stem conv, stride-2 max-pool, stride 2 in layers 2-4.
_DOWNSAMPLINGS = _NUM_STAGES + 1
_TOTAL_STRIDE = 2**_DOWNSAMPLINGS


class _PlainBlock(nn.Module):
    """Double conv-norm-act block without a shortcut: ``ResNetBlock`` minus the residual addition.

    ``conv(stride) -> norm -> act -> conv -> norm -> act``; used by ``ResAttUNet(residual_encoder=False)``. Takes
    ``ResNetBlock``'s arguments; ``downsample`` (the projection shortcut MONAI's ``ResNet`` builds for a block that
    changes size or width) is discarded: a plain block has no shortcut.
    """

    expansion = 1

    def __init__(
        self,
        in_planes: int,
        planes: int,
        spatial_dims: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            Convolution(spatial_dims, in_planes, planes, strides=stride, kernel_size=3, act=act, norm=norm, bias=False),
            Convolution(spatial_dims, planes, planes, kernel_size=3, act=act, norm=norm, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(x)
        return out


class _Blocks:
    """The ``block`` argument of MONAI's ``ResNet``: builds ``block_type`` blocks with the encoder's ``act`` and
    ``norm``, which MONAI 1.6's ``ResNet.__init__`` does not pass on to its stages (``_Encoder._make_layer``
    passes ``norm`` to the projection shortcuts)."""

    expansion = 1

    def __init__(self, block_type: type[nn.Module], act: str | tuple, norm: str | tuple) -> None:
        self.block_type, self.act, self.norm = block_type, act, norm

    def __call__(
        self, in_planes: int, planes: int, spatial_dims: int = 3, stride: int = 1, downsample: nn.Module | None = None,
        norm: str | tuple = "batch",
    ) -> nn.Module:
        return self.block_type(in_planes, planes, spatial_dims=spatial_dims, stride=stride, downsample=downsample,
                               act=self.act, norm=self.norm)


class _Encoder(ResNet):
    """ResNet34 encoder: MONAI's ``ResNet`` (7x7 stride-2 stem, max-pool, ``layer1`` .. ``layer4``; option-B
    projection shortcuts without bias, as torchvision's) with the classifier left out and the ``forward`` of MONAI's
    ``ResNetFeatures``. Attribute names are torchvision's (``conv1``, ``bn1``, ``maxpool``, ``layer1`` ...
    ``layer4``; blocks have ``conv1``, ``bn1``, ``conv2``, ``bn2``, ``downsample.0``/``.1``), so a torchvision state
    dict maps onto ``encoder.<same key>``. ``ResNetFeatures`` itself takes only a model name (fixed widths, batch
    norm, ReLU), so it cannot serve the baselines' plain blocks nor other widths.

    ``forward`` returns the stem output (stride 2, before the max-pool) and the outputs of layer1..layer4
    (strides 4, 4, 8, 16, 32 relative to the input -- layer1 has stride 1 after the max-pool).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        layers: Sequence[int],
        channels: Sequence[int],
        residual: bool,
        act: str | tuple,
        norm: str | tuple,
    ) -> None:
        super().__init__(
            block=_Blocks(ResNetBlock if residual else _PlainBlock, act=act, norm=norm),  # type: ignore[arg-type]
            layers=list(layers),
            block_inplanes=list(channels),
            spatial_dims=spatial_dims,
            n_input_channels=in_channels,
            conv1_t_size=7,
            conv1_t_stride=2,
            shortcut_type="B",
            feed_forward=False,
            bias_downsample=False,
            act=act,
            norm=norm,
        )

    def _make_layer(
        self,
        block: _Blocks,  # type: ignore[override]
        planes: int,
        blocks: int,
        spatial_dims: int,
        shortcut_type: str,
        stride: int = 1,
        norm: str | tuple = "batch",
    ) -> nn.Sequential:
        return super()._make_layer(block, planes, blocks, spatial_dims, shortcut_type, stride, norm=block.norm)

    def forward(  # type: ignore[override]
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x0 = self.act(self.bn1(self.conv1(x)))
        x1 = self.layer1(self.maxpool(x0))
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        x4 = self.layer4(x3)
        return x0, x1, x2, x3, x4


class _DecoderStage(nn.Module):
    """Up-sample ``x`` (transposed conv, x2) to ``g``; optionally gate the skip with ``AttentionBlock(g, skip)``;
    concatenate ``[gated skip, g]``; two conv-norm-act."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        attention: bool,
        act: str | tuple,
        norm: str | tuple,
        dropout: float,
    ) -> None:
        super().__init__()
        self.up = UpSample(spatial_dims, in_channels, out_channels, scale_factor=2, mode="deconv")
        self.gate: nn.Module | None = None
        if attention:
            self.gate = AttentionBlock(
                spatial_dims=spatial_dims, f_int=max(skip_channels // 2, 1), f_g=out_channels, f_l=skip_channels
            )
        self.conv = nn.Sequential(
            Convolution(
                spatial_dims, out_channels + skip_channels, out_channels, kernel_size=3, act=act, norm=norm,
                dropout=dropout, bias=False,
            ),
            Convolution(
                spatial_dims, out_channels, out_channels, kernel_size=3, act=act, norm=norm, dropout=dropout,
                bias=False,
            ),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        g = self.up(x)
        if self.gate is not None:
            skip = self.gate(g, skip)
        out: torch.Tensor = self.conv(torch.cat([skip, g], dim=1))
        return out


class ResAttUNet(nn.Module):
    """
    ResAttUNet from Ye and Hua, "Research on image segmentation of pneumonia based on deep learning" (2022):
    a U-Net whose encoder is a ResNet34 (He et al., "Deep Residual Learning for Image Recognition",
    https://arxiv.org/abs/1512.03385) and whose skip connections pass through the attention gates of Oktay et al.,
    "Attention U-Net: Learning Where to Look for the Pancreas" (https://arxiv.org/abs/1804.03999).

    Architecture (default arguments, 2D input ``(B, 3, H, W)``; strides relative to the input):

    - encoder (MONAI's ``monai.networks.nets.ResNet`` in torchvision's ``resnet34`` layout, without its classifier;
      module ``self.encoder``): 7x7 stride-2 conv 64 + norm + ReLU
      (the "stem", stride 2) -> 3x3 stride-2 max-pool -> ``layer1`` .. ``layer4`` made of 3, 4, 6, 3 basic blocks
      (``monai.networks.nets.resnet.ResNetBlock``) with 64, 128, 256, 512 channels at strides 4, 8, 16, 32. The first
      block of layers 2-4 has stride 2 and a 1x1 conv + norm projection shortcut (``downsample``), ResNet option B.
    - decoder: four stages mirroring the encoder, 512 -> 256 -> 128 -> 64 -> 64 channels (``decoder_channels``),
      with skips from ``layer3``, ``layer2``, ``layer1`` and the stem. Each stage: x2 up-sampling of the decoder
      feature to ``g``; attention gate on the skip ``x`` (``monai.networks.nets.attentionunet.AttentionBlock``,
      which implements the paper's eqs. 2-5: ``A = W_g(g) + W_x(x)``, ``B = psi(ReLU(A))``, ``alpha = sigmoid(B)``,
      ``x_hat = alpha * x``, where ``W_g``, ``W_x``, ``psi`` are 1x1 convs; MONAI adds a batch norm after each,
      which the equations do not have; intermediate width ``F_int = skip_channels // 2``); concatenation
      ``[x_hat, g]``; two 3x3 conv-norm-ReLU.
    - head: a last x2 up-sampling (transposed conv + norm + ReLU, undoing the stem's stride 2) and a 1x1 conv to
      ``out_channels`` logits at exactly the input spatial size (no final activation).

    Baselines of the paper's comparison table from the same class (they keep the ResNet34-shaped topology: 7x7
    stem, max-pool, four encoder stages, total stride 32, same decoder), so that only the studied component
    changes:

    ========================  ====================  =====================  ======================================
    paper's model             ``residual_encoder``  ``attention_gates``    encoder / skips
    ========================  ====================  =====================  ======================================
    ResAttUNet (proposed)     True (default)        True (default)         ResNet34 blocks / attention-gated
    Res-UNet                  True                  False                  ResNet34 blocks / plain concatenation
    Attention-UNet            False                 True                   plain blocks / attention-gated
    U-Net                     False                 False                  plain blocks / plain concatenation
    ========================  ====================  =====================  ======================================

    With ``residual_encoder=False`` every basic block is replaced by a plain double conv-norm-ReLU block of the
    same widths and strides and no shortcut (He et al.'s "plain" counterpart; the stem is unchanged). Pass
    ``layers=(1, 1, 1, 1)`` to get one double conv per resolution level, as in the original U-Net /
    Attention U-Net encoders. Alternatively, the classic U-Net and Attention U-Net baselines (4 poolings, no
    7x7 stem) can be taken directly from MONAI in a bundle config: ``monai.networks.nets.BasicUNet`` and
    ``monai.networks.nets.AttentionUnet``.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        in_channels: number of input channels (3 in the paper: ImageNet-style RGB input).
        out_channels: number of output channels (logits), default 1 (binary lesion mask).
        layers: number of basic blocks in the four encoder stages, default ``(3, 4, 6, 3)`` (ResNet34).
        channels: widths of the four encoder stages, default ``(64, 128, 256, 512)``; ``channels[0]`` is also the
            stem width.
        decoder_channels: widths of the four decoder stages (deepest first), default ``(256, 128, 64, 64)``;
            the head keeps ``decoder_channels[-1]`` channels before the final 1x1 conv.
        attention_gates: whether the skip connections pass through attention gates (see the table above).
        residual_encoder: whether the encoder uses ResNet basic blocks (True) or plain double-conv blocks (False).
        norm: normalisation of the encoder and decoder convolutions (MONAI ``Norm`` name or ``(name, args)``),
            default ``"batch"``; it must have learnable affine parameters, which MONAI's ``ResNet`` initialises
            (``("instance", {"affine": True})``, not ``"instance"``). The attention gates always use batch norm
            (MONAI's ``AttentionBlock``). Loading torchvision weights requires ``"batch"``.
        act: activation (MONAI ``Act`` name or ``(name, args)``), default in-place ReLU. The gates use ReLU and
            sigmoid regardless.
        dropout: dropout probability in the decoder convolutions, default 0.0.
        pretrained_path: optional path to a torchvision-layout ResNet34 state dict (e.g. the ImageNet
            ``resnet34-*.pth``) loaded into the encoder at construction with :func:`load_torchvision_resnet34`
            (strict). Lets a MONAI bundle config request ImageNet initialisation. Default None (from scratch).

    Shapes:
        input ``(B, in_channels, H, W[, D])``; output ``(B, out_channels, H, W[, D])``. Every spatial size must be
        divisible by 32 (the encoder's total stride).

    Raises:
        ValueError: in ``__init__`` if ``spatial_dims`` is not 2 or 3, if ``layers``, ``channels`` or
            ``decoder_channels`` do not have 4 positive entries, if ``norm`` has no learnable affine parameters,
            or (through ``pretrained_path``) if the weights cannot be loaded (see :func:`load_torchvision_resnet34`).
        ValueError: in ``forward`` if the input is not ``spatial_dims + 2``-dimensional or a spatial size is not
            divisible by 32 (a scripted model raises ``torch.jit.Error`` carrying the same message).

    Note: with batch norm in training mode, ``B * prod(spatial / 32)`` must exceed 1 (the deepest feature map
    is ``spatial / 32``), e.g. batch size 1 needs inputs of at least 64 along one axis.

    Departures from the paper:
        - trained from scratch by default (kaiming-normal encoder init as in torchvision/MONAI ResNet): ImageNet
          weights cannot be downloaded in this project; supply a local file via ``pretrained_path`` or
          :func:`load_torchvision_resnet34` to match the paper's ImageNet initialisation (2D only).
        - the 3D variant (``spatial_dims=3``) is an extension with no pretrained weights.
        - up-sampling is a learned 2x2(x2) stride-2 transposed convolution (MONAI ``UpSample(mode="deconv")``),
          as in MONAI's ``AttentionUnet``/``BasicUNet`` defaults: it doubles sizes exactly (no output padding or
          cropping for sizes divisible by 32), its kernels do not overlap (no checkerboard from overlap), it
          also performs the channel reduction of each stage, and it is TorchScript-friendly. The paper does not
          fix these details; likewise the gates' ``F_int = skip_channels // 2`` and the head's norm + ReLU after
          the last up-sampling are choices made here.

    Example::

        >>> net = ResAttUNet(spatial_dims=2, in_channels=3, out_channels=1)
        >>> net(torch.rand(2, 3, 256, 256)).shape
        torch.Size([2, 1, 256, 256])
        >>> # Res-UNet baseline, 3D, small
        >>> net3d = ResAttUNet(3, 1, 2, layers=(1, 1, 1, 1), channels=(8, 16, 32, 64),
        ...                    decoder_channels=(32, 16, 8, 8), attention_gates=False)
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 1,
        layers: Sequence[int] = (3, 4, 6, 3),
        channels: Sequence[int] = (64, 128, 256, 512),
        decoder_channels: Sequence[int] = (256, 128, 64, 64),
        attention_gates: bool = True,
        residual_encoder: bool = True,
        norm: str | tuple = "batch",
        act: str | tuple = ("relu", {"inplace": True}),
        dropout: float = 0.0,
        pretrained_path: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        for name, val in (("layers", layers), ("channels", channels), ("decoder_channels", decoder_channels)):
            if len(val) != _NUM_STAGES or any(int(v) < 1 for v in val):
                raise ValueError(f"{name} must have {_NUM_STAGES} positive entries, got {tuple(val)}.")
        if not isinstance(getattr(get_norm_layer(norm, spatial_dims, channels=int(channels[0])), "weight", None),
                          torch.Tensor):
            raise ValueError(
                f"norm must have learnable affine parameters (MONAI's ResNet initialises them), got {norm!r}; "
                "e.g. ('instance', {'affine': True}) instead of 'instance'."
            )
        layers = tuple(int(v) for v in layers)
        channels = tuple(int(v) for v in channels)
        decoder_channels = tuple(int(v) for v in decoder_channels)

        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.attention_gates = attention_gates
        self.residual_encoder = residual_encoder
        self.downsamplings = _DOWNSAMPLINGS
        self.total_stride = _TOTAL_STRIDE

        self.encoder = _Encoder(spatial_dims, in_channels, layers, channels, residual_encoder, act=act, norm=norm)

        d = decoder_channels
        # skips: layer3, layer2, layer1, stem
        skips = (channels[2], channels[1], channels[0], channels[0])
        ins = (channels[3], d[0], d[1], d[2])
        stage_args = {"attention": attention_gates, "act": act, "norm": norm, "dropout": dropout}
        self.decoder1 = _DecoderStage(spatial_dims, ins[0], skips[0], d[0], **stage_args)
        self.decoder2 = _DecoderStage(spatial_dims, ins[1], skips[1], d[1], **stage_args)
        self.decoder3 = _DecoderStage(spatial_dims, ins[2], skips[2], d[2], **stage_args)
        self.decoder4 = _DecoderStage(spatial_dims, ins[3], skips[3], d[3], **stage_args)

        self.final_up = nn.Sequential(
            UpSample(spatial_dims, d[3], d[3], scale_factor=2, mode="deconv"),
            get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=d[3]),
            get_act_layer(name=act),
        )
        self.final_conv = Conv[Conv.CONV, spatial_dims](d[3], out_channels, kernel_size=1)

        if pretrained_path is not None:
            load_torchvision_resnet34(self, pretrained_path, strict=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_divisible(x, self.spatial_dims, self.downsamplings, "ResAttUNet")
        x0, x1, x2, x3, x4 = self.encoder(x)
        y = self.decoder1(x4, x3)
        y = self.decoder2(y, x2)
        y = self.decoder3(y, x1)
        y = self.decoder4(y, x0)
        out: torch.Tensor = self.final_conv(self.final_up(y))
        return out


def _adapt_stem_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt an RGB stem kernel ``(64, 3, 7, 7)`` to ``in_channels`` (the timm ``adapt_input_conv`` rule):
    1 channel -> sum over RGB; otherwise repeat the RGB kernels cyclically and scale by ``3 / in_channels`` so that
    the response to an input replicated across channels is preserved."""
    if in_channels == weight.shape[1]:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = math.ceil(in_channels / weight.shape[1])
    w = weight.repeat(1, reps, *([1] * (weight.dim() - 2)))[:, :in_channels]
    return w * (weight.shape[1] / float(in_channels))


def load_torchvision_resnet34(
    net: ResAttUNet, path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor], strict: bool = True
) -> list[str]:
    """Load a torchvision-layout ResNet34 state dict (e.g. ImageNet ``resnet34-b627a593.pth``) into ``net.encoder``.

    torchvision key ``k`` (``conv1.weight``, ``bn1.running_mean``, ``layer1.0.conv1.weight``,
    ``layer2.0.downsample.0.weight``, ``layer2.0.downsample.1.running_var``, ...) goes to ``net.encoder.<k>``.
    ``fc.*`` is ignored; a leading ``module.`` prefix is stripped; a checkpoint ``{"state_dict": {...}}`` is unwrapped.
    ``*.num_batches_tracked`` are loaded when present and never required (the released ImageNet files predate them).

    If ``net.in_channels != 3`` the stem weight ``conv1.weight`` ``(64, 3, 7, 7)`` is adapted: for 1 input channel
    it is summed over the RGB channels; otherwise the RGB kernels are repeated cyclically up to ``in_channels`` and
    scaled by ``3 / in_channels``.

    Args:
        net: a 2D ``ResAttUNet`` with ``residual_encoder=True``, ``norm="batch"`` and a ResNet34-compatible
            ``layers``/``channels`` configuration (the defaults).
        path_or_state_dict: a mapping of tensors, or a path loaded with
            ``torch.load(path, map_location="cpu", weights_only=True)``.
        strict: if True (default), every encoder key must be provided and every non-``fc`` source key must be used.
            Shape mismatches raise regardless of ``strict``.

    Returns:
        the sorted list of ``net`` state-dict keys that were loaded (e.g. ``"encoder.conv1.weight"``).

    Raises:
        ValueError: if ``net.spatial_dims != 2`` (no 3D torchvision weights), if ``net.residual_encoder`` is False,
            if the encoder norm is not batch norm, if keys are missing/unexpected (``strict=True``, the keys are listed) or shapes mismatch (listed).
        TypeError: if ``path_or_state_dict`` is neither a path nor a mapping of tensors.
    """
    if not isinstance(net, ResAttUNet):
        raise TypeError(f"net must be a ResAttUNet, got {type(net).__name__}.")
    if net.spatial_dims != 2:
        raise ValueError(
            f"torchvision ResNet34 weights are 2D; cannot load them into a ResAttUNet with spatial_dims={net.spatial_dims}."
        )
    if not net.residual_encoder:
        raise ValueError("torchvision ResNet34 weights need residual_encoder=True (the plain encoder has no such layout).")
    if not isinstance(net.encoder.bn1, nn.BatchNorm2d):
        raise ValueError(
            f"torchvision ResNet34 weights need norm='batch'; the encoder uses {type(net.encoder.bn1).__name__}."
        )

    if isinstance(path_or_state_dict, (str, os.PathLike)):
        src = torch.load(path_or_state_dict, map_location="cpu", weights_only=True)
    else:
        src = path_or_state_dict
    if isinstance(src, Mapping) and "state_dict" in src and isinstance(src["state_dict"], Mapping):
        src = src["state_dict"]
    if not isinstance(src, Mapping) or not all(isinstance(v, torch.Tensor) for v in src.values()):
        raise TypeError("path_or_state_dict must be a path to, or a mapping of, str -> torch.Tensor.")

    src = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in src.items()}
    src = {k: v for k, v in src.items() if not (k == "fc" or k.startswith("fc."))}
    if "conv1.weight" in src and net.in_channels != src["conv1.weight"].shape[1]:
        src["conv1.weight"] = _adapt_stem_weight(src["conv1.weight"], net.in_channels)

    target = net.encoder.state_dict()
    missing = sorted(k for k in target if k not in src and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in src if k not in target)
    mismatched = sorted(
        f"{k}: checkpoint {tuple(src[k].shape)} vs network {tuple(target[k].shape)}"
        for k in src
        if k in target and src[k].shape != target[k].shape
    )
    problems = []
    if mismatched:
        problems.append("shape mismatches: " + "; ".join(mismatched))
    if strict and missing:
        problems.append("missing keys: " + ", ".join(missing))
    if strict and unexpected:
        problems.append("unexpected keys: " + ", ".join(unexpected))
    if problems:
        raise ValueError("Cannot load torchvision ResNet34 weights into ResAttUNet.encoder: " + " | ".join(problems))

    to_load = {k: v for k, v in src.items() if k in target}
    net.encoder.load_state_dict(to_load, strict=False)
    return sorted(f"encoder.{k}" for k in to_load)
