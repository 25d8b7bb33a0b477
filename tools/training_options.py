"""Non-structural U-Net options by name: loss functions, optimizers, activations and augmentation sets.

U-Net surveys group the improvements that leave the network's structure alone into four kinds: loss functions,
optimizers, activation functions and data augmentation. This module makes each a config choice, next to
:class:`custom_networks.nets.VariantUNet` for the structural ones::

    "network_def": {"_target_": "custom_networks.nets.VariantUNet", "spatial_dims": 2, "in_channels": 3,
                    "out_channels": 1, "unit": "residual", "act": "mish"},
    "loss": {"_target_": "tools.training_options.get_loss", "name": "focal_tversky"},
    "optimizer": {"_target_": "tools.training_options.get_optimizer", "name": "ranger",
                  "params": "$@network.parameters()", "lr": 0.001},
    "train#augmentation": {"_target_": "tools.training_options.get_augmentation", "name": "full"}

Every factory raises ``ValueError`` naming the valid choices on an unknown name. The losses take **logits**
``(B, C, H, W[, D])`` and binary (multi-label) targets of the same shape, sigmoid per channel, as the bundles'
networks output; activations are the names :data:`ACTIVATIONS` passed to the network (``act=...``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss, HausdorffDTLoss, SSIMLoss, TverskyLoss

from custom_networks.nets.unet_variants import ACTIVATIONS
from tools.augmentation import AUGMENTATIONS, CLAHEd, RandHueSaturationd, get_augmentation

__all__ = [
    "LOSSES", "OPTIMIZERS", "AUGMENTATIONS", "ACTIVATIONS", "FocalTverskyLoss", "DiceBoundaryLoss", "SSIMBCEDiceLoss",
    "StructureLoss", "CLAHEd", "RandHueSaturationd", "get_loss", "get_optimizer", "get_augmentation",
]

LOSSES = ("bce_dice", "focal_tversky", "dice_boundary", "ssim_bce_dice")
OPTIMIZERS = ("adam", "adamw", "sgd", "radam_lookahead", "ranger")


def _unknown(argument: str, value, allowed: Sequence) -> ValueError:
    return ValueError(f"{argument} must be one of {tuple(allowed)}, got {value!r}.")


class FocalTverskyLoss(nn.Module):
    """Focal Tversky loss, ``mean over (batch, channel) of (1 - TI) ** (1 / gamma)``, on MONAI's ``TverskyLoss``.

    Abraham and Khan, "A novel focal Tversky loss function with improved attention U-Net for lesion segmentation",
    ISBI 2019, arXiv:1810.07842: ``TI = TP / (TP + a FN + b FP)`` with ``a = 0.7`` (false negatives) and ``b = 0.3``
    (false positives), and ``FTL = sum_c (1 - TI_c) ** (1 / gamma)`` with ``gamma = 4/3``. MONAI has the Tversky loss
    but no focal exponent; this is the exponent around it. MONAI's ``alpha`` weighs false *positives* and its
    ``beta`` false *negatives*, the reverse of the paper's letters, hence the names ``fn_weight`` / ``fp_weight`` here.

    Departure: the mean over channels (and samples) instead of the paper's sum over classes, a constant factor that
    keeps the loss in [0, 1] like the others; ``1 - TI`` is clamped at ``1e-6`` before the power, whose gradient is
    infinite at 0 for ``gamma > 1``.

    Args:
        fn_weight: weight of false negatives (paper's alpha, 0.7).
        fp_weight: weight of false positives (paper's beta, 0.3).
        gamma: focal parameter, exponent ``1 / gamma`` (paper: 4/3; 1 gives the Tversky loss).
        sigmoid: apply a sigmoid to the input (logits). Default ``True``.
        batch: compute TI over the whole batch rather than per sample (MONAI's ``batch``).

    Raises:
        ValueError: if ``gamma <= 0``.
    """

    def __init__(
        self, fn_weight: float = 0.7, fp_weight: float = 0.3, gamma: float = 4 / 3, sigmoid: bool = True,
        batch: bool = False,
    ) -> None:
        super().__init__()
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma}.")
        self.tversky = TverskyLoss(sigmoid=sigmoid, alpha=fp_weight, beta=fn_weight, reduction="none", batch=batch)
        self.gamma = gamma

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        one_minus_ti = self.tversky(input, target)  # (B, C), or (C,) with batch=True
        return torch.clamp(one_minus_ti, min=1e-6).pow(1.0 / self.gamma).mean()


class DiceBoundaryLoss(nn.Module):
    """Dice loss plus a boundary term, MONAI's ``HausdorffDTLoss`` (distance-transform Hausdorff loss).

    Karimi and Salcudean, "Reducing the Hausdorff distance in medical image segmentation with convolutional neural
    networks", IEEE TMI 39(2), 2020, arXiv:1904.10030, the distance-transform loss
    ``mean((p - g)^2 (d_p^alpha + d_g^alpha))``, ``alpha = 2``, with distance maps of the thresholded prediction and
    of the target computed at every call (MONAI, on the CPU with SciPy). Chosen over Kervadec et al.'s boundary loss
    (arXiv:1812.07032) because it is in MONAI, maintained and tested there, and needs no precomputed signed distance
    maps in the data pipeline; its reference code is not a maintained package.

    The raw term grows with the square of the image size (measured with random logits on a square target:
    about 30 at 32 x 32, 1800 at 256 x 256, against a Dice loss near 0.9), so a fixed weight does not carry over
    between image sizes. ``boundary_weight="balanced"`` (default) rescales it to the Dice term's magnitude at every
    call, ``dice + (dice / hd).detach() * hd``, so that the two pull with equal weight whatever the size; a float
    gives the plain ``dice + w * hd``.

    Args:
        boundary_weight: ``"balanced"`` or a non-negative float.
        sigmoid: apply a sigmoid to the input (logits). Default ``True``.
        alpha: exponent of the distances (paper and MONAI: 2).

    Raises:
        ValueError: if ``boundary_weight`` is neither ``"balanced"`` nor a non-negative number.
    """

    def __init__(self, boundary_weight: float | str = "balanced", sigmoid: bool = True, alpha: float = 2.0) -> None:
        super().__init__()
        if boundary_weight != "balanced" and not (isinstance(boundary_weight, (int, float)) and boundary_weight >= 0):
            raise ValueError(f"boundary_weight must be 'balanced' or a float >= 0, got {boundary_weight!r}.")
        self.balanced = boundary_weight == "balanced"
        self.weight = 1.0 if self.balanced else float(boundary_weight)
        self.dice = DiceLoss(sigmoid=sigmoid)
        # include_background=True: with one sigmoid channel the foreground *is* channel 0
        self.boundary = HausdorffDTLoss(alpha=alpha, sigmoid=sigmoid, include_background=True)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        dice, hd = self.dice(input, target), self.boundary(input, target)
        weight = (dice / hd.clamp_min(1e-8)).detach() if self.balanced else self.weight
        return dice + weight * hd


class SSIMBCEDiceLoss(nn.Module):
    """``BCE + Dice + w * (1 - SSIM(sigmoid(logits), target))``: MONAI's ``DiceCELoss`` and ``SSIMLoss``.

    The hybrid of a pixel (BCE), a region (Dice / IoU) and a structural (SSIM) term of BASNet (Qin et al., CVPR 2019,
    "BASNet: boundary-aware salient object detection", where the region term is IoU) and UNet 3+ (Huang et al.,
    ICASSP 2020, arXiv:2004.08790, with MS-SSIM and focal loss); here with Dice and single-scale SSIM, which MONAI has.
    SSIM is computed between the probability map and the 0/1 mask, ``data_range = 1``, Gaussian window 11 (sigma 1.5),
    per channel and averaged; it is 0 for a perfect map, and defined for empty masks.

    Args:
        spatial_dims: 2 or 3 (SSIM's window). Default 2.
        ssim_weight: weight ``w`` of the SSIM term. Default 1.
        win_size: SSIM window size; the images must be at least this large per side. Default 11.

    Raises:
        ValueError: in ``forward``, if a spatial size is smaller than ``win_size``.
    """

    def __init__(self, spatial_dims: int = 2, ssim_weight: float = 1.0, win_size: int = 11) -> None:
        super().__init__()
        self.bce_dice = DiceCELoss(sigmoid=True)
        self.ssim = SSIMLoss(spatial_dims, data_range=1.0, win_size=win_size)
        self.ssim_weight = ssim_weight
        self.win_size = win_size

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if min(input.shape[2:]) < self.win_size:
            raise ValueError(f"SSIM needs spatial sizes >= win_size = {self.win_size}, got shape {list(input.shape)}.")
        return self.bce_dice(input, target) + self.ssim_weight * self.ssim(torch.sigmoid(input), target.float())


class StructureLoss(nn.Module):
    """PraNet's structure loss: boundary-weighted BCE plus boundary-weighted IoU, on logits ``(B, C, H, W[, D])``.

    Fan et al., "PraNet: parallel reverse attention network for polyp segmentation", MICCAI 2020,
    arXiv:2006.11392, Sec. 2.4, Eq. 4: ``L = L_wIoU + L_wBCE`` (after Wei et al., F3Net, AAAI 2020, arXiv:1911.11445,
    Sec. 3.4). Each pixel's weight is ``1 + 5 |avgpool_31(g) - g|``, large near the mask's boundary, where a 31-pixel
    box mean of the mask ``g`` differs from ``g`` itself; per sample and channel::

        wBCE = sum(w * bce(x, g)) / sum(w)
        wIoU = 1 - (sum(w p g) + 1) / (sum(w (p + g)) - sum(w p g) + 1),   p = sigmoid(x)

    and the loss is their sum, averaged over samples and channels. MONAI has neither term (its losses weigh classes,
    not pixels by their distance to the boundary), hence this class; it follows the authors' code
    (``structure_loss`` of DengPingFan/PraNet, ``MyTrain.py``), including the ``+ 1`` smoothing and the zero padding
    (``count_include_pad``) of the box mean at the image border. Departure: the box mean is dimension-generic
    (``avg_pool3d`` for 3D); PraNet is 2D only.

    Args:
        kernel_size: side of the box mean in pixels (odd; PraNet: 31, at 352 x 352 input).
        boundary_weight: the factor of ``|avgpool(g) - g|`` (PraNet: 5).

    Raises:
        ValueError: if ``kernel_size`` is not a positive odd integer or ``boundary_weight < 0``; in ``forward``, if the
            input is neither 4-D nor 5-D or input and target shapes differ.
    """

    def __init__(self, kernel_size: int = 31, boundary_weight: float = 5.0) -> None:
        super().__init__()
        if not (isinstance(kernel_size, int) and kernel_size > 0 and kernel_size % 2 == 1):
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}.")
        if boundary_weight < 0:
            raise ValueError(f"boundary_weight must be >= 0, got {boundary_weight}.")
        self.kernel_size, self.boundary_weight = kernel_size, float(boundary_weight)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if input.ndim not in (4, 5) or input.shape != target.shape:
            raise ValueError(f"input and target must be (B, C, H, W[, D]) of one shape, got {list(input.shape)} and "
                             f"{list(target.shape)}.")
        input, target = input.float(), target.float()
        pool = F.avg_pool2d if input.ndim == 4 else F.avg_pool3d
        # zero padding first, then an unpadded box mean: PraNet's avg_pool2d(padding=15) with its zeros counted, but
        # also for images smaller than the box (torch's pooling refuses those)
        padded = F.pad(target, [self.kernel_size // 2] * (2 * (input.ndim - 2)))
        box = pool(padded, self.kernel_size, stride=1)
        weight = 1 + self.boundary_weight * torch.abs(box - target)
        dims = tuple(range(2, input.ndim))
        bce = F.binary_cross_entropy_with_logits(input, target, reduction="none")
        wbce = (weight * bce).sum(dims) / weight.sum(dims)
        prob = torch.sigmoid(input)
        inter = (prob * target * weight).sum(dims)
        union = ((prob + target) * weight).sum(dims)
        wiou = 1 - (inter + 1) / (union - inter + 1)
        return (wbce + wiou).mean()


def get_loss(name: str, **kwargs) -> nn.Module:
    """Loss by name, on logits and binary targets ``(B, C, H, W[, D])``.

    - ``"bce_dice"``: MONAI ``DiceCELoss(sigmoid=True)`` (BCE-with-logits + Dice);
    - ``"focal_tversky"``: :class:`FocalTverskyLoss` (Abraham and Khan 2019);
    - ``"dice_boundary"``: :class:`DiceBoundaryLoss` (Dice + MONAI ``HausdorffDTLoss``);
    - ``"ssim_bce_dice"``: :class:`SSIMBCEDiceLoss` (BCE + Dice + MONAI ``SSIMLoss``).

    Args:
        name: one of :data:`LOSSES`.
        kwargs: keyword arguments of the loss's class.

    Raises:
        ValueError: if ``name`` is unknown (the message lists :data:`LOSSES`).
    """
    if name == "bce_dice":
        return DiceCELoss(**{"sigmoid": True, **kwargs})
    if name == "focal_tversky":
        return FocalTverskyLoss(**kwargs)
    if name == "dice_boundary":
        return DiceBoundaryLoss(**kwargs)
    if name == "ssim_bce_dice":
        return SSIMBCEDiceLoss(**kwargs)
    raise _unknown("loss name", name, LOSSES)


def get_optimizer(
    name: str, params: Iterable, lr: float = 1e-3, weight_decay: float | None = None, **kwargs
) -> torch.optim.Optimizer:
    """Optimizer by name; every one is a ``torch.optim.Optimizer`` (learning-rate schedulers and ignite accept it).

    - ``"adam"``: ``torch.optim.Adam`` (Kingma and Ba 2015, arXiv:1412.6980);
    - ``"adamw"``: ``torch.optim.AdamW``, decoupled weight decay (Loshchilov and Hutter 2019, arXiv:1711.05101);
    - ``"sgd"``: ``torch.optim.SGD`` with ``momentum=0.9`` unless given;
    - ``"radam_lookahead"``: ``pytorch_optimizer.Lookahead`` (Zhang et al. 2019, arXiv:1907.08610; ``k=5``,
      ``alpha=0.5``) around ``torch.optim.RAdam`` (Liu et al. 2020, arXiv:1908.03265);
    - ``"ranger"``: ``pytorch_optimizer.Ranger``, RAdam + Lookahead + gradient centralisation (the package's
      defaults: ``betas=(0.95, 0.999)``, ``k=6``, ``alpha=0.5``, ``use_gc=True``).

    Args:
        name: one of :data:`OPTIMIZERS`.
        params: the parameters (``net.parameters()``) or parameter groups.
        lr: learning rate. Default 1e-3.
        weight_decay: weight decay; ``None`` keeps the optimizer's own default (0, AdamW's 0.01).
        kwargs: further keyword arguments of the optimizer (for ``"radam_lookahead"``, ``k`` and ``alpha`` go to
            Lookahead, the others to RAdam).

    Raises:
        ValueError: if ``name`` is unknown (the message lists :data:`OPTIMIZERS`).
    """
    if name not in OPTIMIZERS:
        raise _unknown("optimizer name", name, OPTIMIZERS)
    options = dict(kwargs, lr=lr)
    if weight_decay is not None:
        options["weight_decay"] = weight_decay
    if name == "adam":
        return torch.optim.Adam(params, **options)
    if name == "adamw":
        return torch.optim.AdamW(params, **options)
    if name == "sgd":
        return torch.optim.SGD(params, **{"momentum": 0.9, **options})
    import pytorch_optimizer  # imported here: only these two choices need the package

    if name == "ranger":
        return pytorch_optimizer.Ranger(params, **options)
    lookahead = {key: options.pop(key) for key in ("k", "alpha") if key in options}
    return pytorch_optimizer.Lookahead(torch.optim.RAdam(params, **options), **lookahead)
