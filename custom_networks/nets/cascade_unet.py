"""Two-stage cascade: stage 2 segments the image concatenated with stage 1's probability map."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn

from custom_networks.nets.unet_variants import VariantUNet

__all__ = ["CascadeUNet", "variant_cascade"]


class CascadeUNet(nn.Module):
    """Cascade of two segmentation networks: ``p1 = act(stage1(x))``, ``logits = stage2([x, p1])``.

    Cascaded networks refine a first segmentation with a second network (Christ et al., "Automatic liver and lesion
    segmentation in CT using cascaded fully convolutional neural networks and 3D conditional random fields", MICCAI
    2016, arXiv:1610.02177, where stage 2 sees a crop around stage 1's liver). The input scheme here is nnU-Net's
    cascade (Isensee et al., Nature Methods 18, 2021; preprint arXiv:1809.10486): stage 2 sees the image with stage
    1's segmentation as extra channels. The stages are trained end to end, or, with ``detach_stage1``, stage 2's
    gradient stops at stage 1's probabilities (as when the stages are trained one after the other).

    Departures, named: both stages run at the input resolution (nnU-Net's first stage runs on a down-sampled image);
    stage 2 receives stage 1's *probabilities*, not a thresholded or one-hot mask, so that the cascade is
    differentiable end to end.

    Outputs:
        - training mode with ``deep_supervision=True``: ``(B, 2, out_channels, H, W[, D])``, stage 2's logits then
          stage 1's, so that ``monai.losses.DeepSupervisionLoss`` on ``torch.unbind(out, 1)`` supervises both stages
          (its first weight goes to the final output);
        - otherwise stage 2's logits ``(B, out_channels, H, W[, D])``.

    Args:
        stage1: network ``(B, C, *S) -> (B, K, *S)`` logits; it must return one tensor in training mode too (no deep
            supervision of its own).
        stage2: network ``(B, C + K, *S) -> (B, K, *S)`` logits.
        activation: how stage 1's logits become the map stage 2 sees: ``"sigmoid"`` (default; binary or multi-label)
            or ``"softmax"`` (mutually exclusive classes, over dim 1).
        detach_stage1: stop stage 2's gradient at stage 1's probabilities. Default ``False``.
        deep_supervision: return both stages' logits in training mode (see Outputs). Default ``True``.

    Shapes:
        input ``(B, C, H, W[, D])``; output as in Outputs.

    Raises:
        ValueError: if ``activation`` is not ``"sigmoid"`` or ``"softmax"``.

    TorchScript: scriptable when both stages are (``VariantUNet`` is).

    Example::

        >>> net = variant_cascade(spatial_dims=2, in_channels=3, out_channels=1).eval()
        >>> net(torch.rand(1, 3, 64, 64)).shape
        torch.Size([1, 1, 64, 64])
    """

    def __init__(
        self,
        stage1: nn.Module,
        stage2: nn.Module,
        activation: str = "sigmoid",
        detach_stage1: bool = False,
        deep_supervision: bool = True,
    ) -> None:
        super().__init__()
        if activation not in ("sigmoid", "softmax"):
            raise ValueError(f"activation must be one of ('sigmoid', 'softmax'), got {activation!r}.")
        self.stage1 = stage1
        self.stage2 = stage2
        self.softmax = activation == "softmax"
        self.detach_stage1 = detach_stage1
        self.deep_supervision = deep_supervision

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits1 = self.stage1(x)
        prob1 = torch.softmax(logits1, dim=1) if self.softmax else torch.sigmoid(logits1)
        if self.detach_stage1:
            prob1 = prob1.detach()
        logits2 = self.stage2(torch.cat([x, prob1], dim=1))
        if self.training and self.deep_supervision:
            return torch.stack([logits2, logits1], dim=1)
        return logits2


def variant_cascade(
    spatial_dims: int = 2,
    in_channels: int = 1,
    out_channels: int = 1,
    stage1: Mapping | None = None,
    stage2: Mapping | None = None,
    activation: str = "sigmoid",
    detach_stage1: bool = False,
    deep_supervision: bool = True,
    **common,
) -> CascadeUNet:
    """A :class:`CascadeUNet` of two :class:`VariantUNet` stages, with their channel counts wired.

    Stage 1 maps ``in_channels -> out_channels``, stage 2 ``in_channels + out_channels -> out_channels``, so that a
    config states only the options: ``common`` (any ``VariantUNet`` keyword) goes to both stages and ``stage1`` /
    ``stage2`` override it per stage, e.g. a light stage 1 (``{"features": [16, 32, 64, 128, 256]}``) and an attention
    stage 2 (``{"skip_attention": "attention_gate"}``). The stages' own deep supervision is off (the cascade's
    ``deep_supervision`` supervises both stages instead).

    Raises:
        ValueError: if a stage option sets ``spatial_dims``, ``in_channels``, ``out_channels`` or
            ``deep_supervision`` (the cascade sets them), and every ``VariantUNet`` / ``CascadeUNet`` ValueError.
    """
    wired = {"spatial_dims", "in_channels", "out_channels", "deep_supervision"}
    for name, options in (("common", common), ("stage1", stage1 or {}), ("stage2", stage2 or {})):
        if wired & set(options):
            raise ValueError(f"{name} options must not set {sorted(wired & set(options))}: the cascade wires them.")
    net1 = VariantUNet(spatial_dims, in_channels, out_channels, deep_supervision=False, **{**common, **(stage1 or {})})
    net2 = VariantUNet(
        spatial_dims, in_channels + out_channels, out_channels, deep_supervision=False, **{**common, **(stage2 or {})}
    )
    return CascadeUNet(
        net1, net2, activation=activation, detach_stage1=detach_stage1, deep_supervision=deep_supervision
    )
