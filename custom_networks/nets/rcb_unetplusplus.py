"""RCB-UNet++: UNet++ with residual nodes and CBAM-gated encoder (Mao and Li)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import UnetResBlock
from monai.networks.layers.factories import Conv, Pool

from custom_networks.blocks.cbam import CBAM
from custom_networks.blocks.upcat import UpCat

__all__ = ["RCBUNetPlusPlus", "StackedHeadsLoss", "mean_of_heads"]


def _residual(spatial_dims: int, in_ch: int, out_ch: int, norm: str | tuple) -> UnetResBlock:
    # MONAI's UnetResBlock is the paper's residual node: conv3-norm-ReLU-conv3-norm, identity shortcut
    # (1x1 conv + norm where the channel count changes), ReLU after the sum.
    return UnetResBlock(spatial_dims, in_ch, out_ch, kernel_size=3, stride=1, norm_name=norm, act_name="relu")


class _Up(UpCat):
    """MONAI's UpCat (up-sampling, padding for odd sizes, concatenation) whose double conv is a residual node."""

    def __init__(self, spatial_dims: int, in_ch: int, cat_ch: int, out_ch: int, norm: str | tuple, halves: bool):
        super().__init__(spatial_dims, in_ch, cat_ch, out_ch, act="relu", norm=norm, bias=False, halves=halves)
        up_ch = in_ch // 2 if halves else in_ch
        self.convs = _residual(spatial_dims, cat_ch + up_ch, out_ch, norm)


class RCBUNetPlusPlus(nn.Module):
    """UNet++ whose nodes are residual blocks and whose encoder nodes are followed by CBAM.

    Mao and Li, "Segmentation of COVID-19 lesions based on deep learning and CT images" (RCB-UNet++), built on
    UNet++ (Zhou et al., DLMIA 2018, arXiv:1807.10165) and CBAM (Woo et al., ECCV 2018, arXiv:1807.06521).

    Topology: nodes ``X^{i,j}`` as in UNet++ (MONAI's ``BasicUNetPlusPlus`` wiring, reused through its
    ``UpCat``): encoder nodes ``X^{i,0} = CBAM(Res(pool(X^{i-1,0})))`` and nested decoder nodes
    ``X^{i,j} = Res([X^{i,0}, ..., X^{i,j-1}, up(X^{i+1,j-1})])``. Each ``Res`` is two 3x3 conv + norm + ReLU
    with an identity (or 1x1 projection) shortcut (MONAI ``UnetResBlock``). Deep supervision: a 1x1 conv head
    on each of ``X^{0,1}``, ``X^{0,2}``, ``X^{0,3}``, ``X^{0,4}``.

    Outputs:
        - training mode with ``deep_supervision=True``: the four heads' logits stacked on dim 1,
          ``(B, 4, out_channels, H, W[, D])`` (stacked rather than a list, as MONAI's ``DynUNet`` does, so that
          one return type keeps the network scriptable; ``torch.unbind(out, 1)`` gives the list that
          ``monai.losses.DeepSupervisionLoss`` takes);
        - otherwise a single logit map ``(B, out_channels, H, W[, D])``: the mean of the four heads' logits,
          UNet++'s "accurate mode" (Zhou et al. 2018, section 2.3), because the paper does not say which head it
          evaluates and averaging uses every supervised head. ``eval_head="last"`` returns ``X^{0,4}``'s head
          alone (UNet++'s fast mode without pruning).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (1 for CT).
        out_channels: output channels (1 for a binary lesion mask, one sigmoid logit).
        features: widths of the five levels ``X^{0,*}``..``X^{4,*}`` (paper, as UNet++: 32, 64, 128, 256, 512).
        deep_supervision: return all four heads in training mode.
        eval_head: ``"mean"`` (default) or ``"last"``; see Outputs.
        reduction: CBAM channel-MLP reduction ratio (paper: 16).
        norm: normalisation after each convolution (MONAI name; default batch norm).

    Shapes:
        input ``(B, in_channels, H, W[, D])``; each spatial size should be divisible by 16 (four 2x poolings;
        other sizes are padded inside ``UpCat`` and still give the input size back).

    Raises:
        ValueError: if ``features`` does not have five entries or ``eval_head`` is unknown.

    Departures from the paper: none in the topology. The eval-mode head choice is ours (see Outputs).

    Example::

        >>> net = RCBUNetPlusPlus(spatial_dims=2, in_channels=1, out_channels=1).eval()
        >>> net(torch.rand(1, 1, 128, 128)).shape
        torch.Size([1, 1, 128, 128])
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        features: Sequence[int] = (32, 64, 128, 256, 512),
        deep_supervision: bool = True,
        eval_head: str = "mean",
        reduction: int = 16,
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        if len(features) != 5:
            raise ValueError(f"features must have 5 entries (one per level), got {tuple(features)}.")
        if eval_head not in ("mean", "last"):
            raise ValueError(f"eval_head must be 'mean' or 'last', got {eval_head!r}.")
        self.deep_supervision = deep_supervision
        self.eval_mean = eval_head == "mean"
        f = list(features)
        pool = Pool[Pool.MAX, spatial_dims]

        def encoder(level: int) -> nn.Sequential:
            res = _residual(spatial_dims, in_channels if level == 0 else f[level - 1], f[level], norm)
            cbam = CBAM(spatial_dims, f[level], reduction=reduction)
            return nn.Sequential(res, cbam) if level == 0 else nn.Sequential(pool(kernel_size=2), res, cbam)

        def up(i: int, j: int) -> _Up:
            # X^{i,j}: up-sample X^{i+1,j-1}, concatenate the j nodes X^{i,0..j-1} of width f[i].
            return _Up(spatial_dims, f[i + 1], f[i] * j, f[i], norm, halves=i > 0)

        self.x00, self.x10, self.x20, self.x30, self.x40 = (encoder(i) for i in range(5))
        self.x01, self.x11, self.x21, self.x31 = up(0, 1), up(1, 1), up(2, 1), up(3, 1)
        self.x02, self.x12, self.x22 = up(0, 2), up(1, 2), up(2, 2)
        self.x03, self.x13 = up(0, 3), up(1, 3)
        self.x04 = up(0, 4)
        conv = Conv[Conv.CONV, spatial_dims]
        self.heads = nn.ModuleList([conv(f[0], out_channels, kernel_size=1) for _ in range(4)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x00 = self.x00(x)
        x10 = self.x10(x00)
        x01 = self.x01(x10, x00)
        x20 = self.x20(x10)
        x11 = self.x11(x20, x10)
        x02 = self.x02(x11, torch.cat([x00, x01], dim=1))
        x30 = self.x30(x20)
        x21 = self.x21(x30, x20)
        x12 = self.x12(x21, torch.cat([x10, x11], dim=1))
        x03 = self.x03(x12, torch.cat([x00, x01, x02], dim=1))
        x40 = self.x40(x30)
        x31 = self.x31(x40, x30)
        x22 = self.x22(x31, torch.cat([x20, x21], dim=1))
        x13 = self.x13(x22, torch.cat([x10, x11, x12], dim=1))
        x04 = self.x04(x13, torch.cat([x00, x01, x02, x03], dim=1))

        nodes = [x01, x02, x03, x04]
        outputs: list[torch.Tensor] = []
        for i, head in enumerate(self.heads):
            outputs.append(head(nodes[i]))
        if self.training and self.deep_supervision:
            return torch.stack(outputs, dim=1)
        if self.eval_mean:
            return torch.stack(outputs, dim=0).mean(dim=0)
        return outputs[-1]


class StackedHeadsLoss(nn.Module):
    """Deep-supervision loss of :class:`RCBUNetPlusPlus`'s training output: the heads stacked on dim 1,
    ``(B, heads, C, H, W[, D])``, are split into a list and given to ``loss`` (MONAI's ``DeepSupervisionLoss``,
    which weighs the heads and resizes the label to each), with the label ``(B, C, H, W[, D])``.

    The network stacks its heads (rather than returning a list) so that it stays scriptable with TorchScript.
    """

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return self.loss(list(torch.unbind(pred, dim=1)), label)


def mean_of_heads(pred: torch.Tensor, spatial_dims: int = 2) -> torch.Tensor:
    """One item's prediction as eval mode gives it: the mean of the stacked heads' logits
    ``(heads, C, *spatial) -> (C, *spatial)`` (UNet++'s accurate mode), an item of one head ``(C, *spatial)`` as it
    is. For post-processing the training engine's decollated output (e.g. a training-set metric)."""
    return pred.mean(dim=0) if pred.ndim == spatial_dims + 2 else pred
