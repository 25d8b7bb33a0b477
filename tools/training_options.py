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

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
from monai.config import KeysCollection
from monai.losses import DiceCELoss, DiceLoss, HausdorffDTLoss, SSIMLoss, TverskyLoss
from monai.transforms import (
    MapTransform,
    RandomizableTransform,
    Rand2DElasticd,
    RandAdjustContrastd,
    RandFlipd,
    RandRotate90d,
    RandRotated,
    RandScaleIntensityd,
    RandScaleIntensityFixedMeand,
)
from monai.utils import convert_to_dst_type, convert_to_numpy

from custom_networks.nets.unet_variants import ACTIVATIONS

__all__ = [
    "LOSSES", "OPTIMIZERS", "AUGMENTATIONS", "ACTIVATIONS", "FocalTverskyLoss", "DiceBoundaryLoss", "SSIMBCEDiceLoss",
    "CLAHEd", "RandHueSaturationd", "get_loss", "get_optimizer", "get_augmentation",
]

LOSSES = ("bce_dice", "focal_tversky", "dice_boundary", "ssim_bce_dice")
OPTIMIZERS = ("adam", "adamw", "sgd", "radam_lookahead", "ranger")
AUGMENTATIONS = ("none", "flip", "flip_rotate", "full")


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


def get_augmentation(
    name: str,
    image_keys: KeysCollection = ("image",),
    label_keys: KeysCollection = ("label",),
    prob: float = 0.5,
    rotate_degrees: float = 15.0,
    elastic_spacing: Sequence[int] = (20, 20),
    elastic_magnitude: Sequence[float] = (1.0, 2.0),
) -> list:
    """Training augmentation set for 2D RGB (fundus, dermoscopy, endoscopy) patches, MONAI dictionary transforms.

    Sets, each containing the previous one:

    - ``"none"``: no transform (``[]``);
    - ``"flip"``: horizontal and vertical flips (``RandFlipd`` on axes 0 and 1);
    - ``"flip_rotate"``: + rotations by multiples of 90 degrees (``RandRotate90d``) and by a small angle in
      ``[-rotate_degrees, rotate_degrees]`` (``RandRotated``, zero padding: the black border of fundus photographs);
    - ``"full"``: + elastic deformation (``Rand2DElasticd``), brightness (``RandScaleIntensityd``, x [0.8, 1.2]),
      contrast around the mean (``RandScaleIntensityFixedMeand``, x [0.8, 1.2]) and gamma (``RandAdjustContrastd``,
      gamma in [0.7, 1.5]); the intensity transforms touch ``image_keys`` only.

    Geometric transforms move images and masks together; images are resampled bilinearly, masks by nearest neighbour
    (they stay binary). Place the list after loading to [0, 1] and before mean/std normalisation (as in
    ``tools.pipelines.rgb``); contrast enhancement such as :class:`CLAHEd` is preprocessing, applied at inference too,
    so it belongs before this list in both chains, not in it.

    Args:
        name: one of :data:`AUGMENTATIONS`.
        image_keys: keys of the images.
        label_keys: keys of the masks (may be empty).
        prob: probability of each transform. Default 0.5.
        rotate_degrees: largest small-angle rotation. Default 15.
        elastic_spacing: distance between the elastic grid's control points, pixels. Default ``(20, 20)``.
        elastic_magnitude: range of the control points' random displacement. Default ``(1, 2)``.

    Returns:
        a list of transforms, to splice into a config's ``Compose``.

    Raises:
        ValueError: if ``name`` is unknown (the message lists :data:`AUGMENTATIONS`) or ``prob`` is outside [0, 1].
    """
    if name not in AUGMENTATIONS:
        raise _unknown("augmentation name", name, AUGMENTATIONS)
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got {prob}.")
    images = [image_keys] if isinstance(image_keys, str) else list(image_keys)
    labels = [label_keys] if isinstance(label_keys, str) else list(label_keys)
    keys = images + labels
    modes = ["bilinear"] * len(images) + ["nearest"] * len(labels)
    out: list = []
    if name == "none":
        return out
    out += [RandFlipd(keys, prob=prob, spatial_axis=0), RandFlipd(keys, prob=prob, spatial_axis=1)]
    if name == "flip":
        return out
    out += [
        RandRotate90d(keys, prob=prob, max_k=3),
        RandRotated(keys, range_x=math.radians(rotate_degrees), prob=prob, mode=modes, padding_mode="zeros"),
    ]
    if name == "flip_rotate":
        return out
    out += [
        Rand2DElasticd(keys, spacing=tuple(elastic_spacing), magnitude_range=tuple(elastic_magnitude), prob=prob,
                       mode=modes, padding_mode="zeros"),
        RandScaleIntensityd(images, factors=0.2, prob=prob),
        RandScaleIntensityFixedMeand(images, factors=0.2, prob=prob),
        RandAdjustContrastd(images, gamma=(0.7, 1.5), prob=prob),
    ]
    return out


class CLAHEd(MapTransform):
    """Contrast-limited adaptive histogram equalisation (CLAHE) of 2D images, scikit-image's ``equalize_adapthist``.

    Zuiderveld, "Contrast limited adaptive histogram equalization", Graphics Gems IV, 1994; the usual contrast
    enhancement of fundus photographs before vessel segmentation. The image is channel first ``(C, H, W)`` with
    values in [0, 1] (after ``ScaleIntensityRanged`` to [0, 1]); the output has the same shape, array type and metadata,
    float32 values in [0, 1].

    Args:
        keys: keys of the images.
        mode: ``"value"`` (default): RGB images (3 channels) are equalised on the V channel of HSV and converted back
            (scikit-image's colour handling, which keeps hues); ``"channels"``: each channel in ``channels`` is
            equalised on its own, the others kept (grey images, or the green channel of fundus photographs,
            ``channels=[1]``).
        channels: channels equalised in ``"channels"`` mode; default all.
        clip_limit: clipping limit, normalised to [0, 1] (scikit-image's; higher gives more contrast). Default 0.01.
        kernel_size: tile size in pixels; default 1/8 of each side (scikit-image's).
        nbins: histogram bins. Default 256.
        allow_missing_keys: do not fail on a missing key.

    Raises:
        ValueError: at construction if ``mode`` is unknown; on call if the image is not ``(C, H, W)``, has values
            outside [0, 1], or is not 3-channel in ``"value"`` mode (each message names the key).
    """

    def __init__(
        self,
        keys: KeysCollection,
        mode: str = "value",
        channels: Sequence[int] | None = None,
        clip_limit: float = 0.01,
        kernel_size: int | Sequence[int] | None = None,
        nbins: int = 256,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if mode not in ("value", "channels"):
            raise ValueError(f"mode must be one of ('value', 'channels'), got {mode!r}.")
        self.mode = mode
        self.channels = None if channels is None else list(channels)
        self.options = {"clip_limit": clip_limit, "kernel_size": kernel_size, "nbins": nbins}

    def equalize(self, image: np.ndarray, key: Hashable = "image") -> np.ndarray:
        """CLAHE of one ``(C, H, W)`` array in [0, 1]; returns float32 ``(C, H, W)``."""
        from skimage.exposure import equalize_adapthist  # imported here: scikit-image is needed by this transform only

        if image.ndim != 3:
            raise ValueError(f"CLAHEd needs a channel-first 2D image (C, H, W) for {key!r}, got shape {image.shape}.")
        if image.min() < 0 or image.max() > 1:
            raise ValueError(
                f"CLAHEd needs values in [0, 1] for {key!r} (scale to [0, 1] first), "
                f"got [{image.min()}, {image.max()}]."
            )
        out = image.astype(np.float32, copy=True)
        if self.mode == "value":
            if image.shape[0] != 3:
                raise ValueError(
                    f"CLAHEd mode 'value' needs an RGB (3-channel) image for {key!r}, got {image.shape[0]} channels."
                )
            return np.moveaxis(equalize_adapthist(np.moveaxis(out, 0, -1), **self.options), -1, 0).astype(np.float32)
        for c in range(image.shape[0]) if self.channels is None else self.channels:
            out[c] = equalize_adapthist(out[c], **self.options)
        return out

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            equalized = self.equalize(convert_to_numpy(d[key]), key)
            d[key] = convert_to_dst_type(equalized, d[key], dtype=torch.float32)[0]
        return d


class RandHueSaturationd(RandomizableTransform, MapTransform):
    """Random hue rotation and saturation scaling of RGB images ``(3, H, W)`` in [0, 1] (photometric augmentation).

    Why our own: MONAI 1.6 has brightness, contrast, gamma, blur and noise transforms but none for hue or saturation,
    and torchvision's ``ColorJitter`` (which MONAI's ``RandTorchVisiond`` would wrap) does not import beside the CPU
    torch build these bundles are pinned to. Both operations are linear maps of the RGB vector, applied as one 3x3
    colour matrix: the hue rotates by ``theta`` about the grey axis in YIQ space (the luma Y is kept), the saturation
    scales the chroma (I, Q) by ``s`` (``s = 0`` gives the grey image, ``s = 1`` the input). The result is clipped to
    [0, 1]. Masks are not touched.

    Args:
        keys: keys of the RGB images.
        hue_degrees: largest hue rotation; ``theta`` is uniform in ``[-hue_degrees, hue_degrees]``. Default 10.
        saturation: range of the saturation factor ``s``. Default ``(0.7, 1.3)``.
        prob: probability of applying the transform. Default 0.5.
        allow_missing_keys: do not fail on a missing key.

    Raises:
        ValueError: at construction for ``hue_degrees`` outside [0, 180] or a saturation range that is not
            ``0 <= low <= high``; on call for an image that is not ``(3, H, W)`` (naming the key).
    """

    # RGB -> YIQ (NTSC 1953 primaries, as in scikit-image's ``rgb2yiq``); its inverse maps back.
    _RGB2YIQ = np.array([[0.299, 0.587, 0.114], [0.59590059, -0.27455667, -0.32134392],
                         [0.21153661, -0.52273617, 0.31119955]])
    _YIQ2RGB = np.linalg.inv(_RGB2YIQ)

    def __init__(self, keys: KeysCollection, hue_degrees: float = 10.0, saturation: Sequence[float] = (0.7, 1.3),
                 prob: float = 0.5, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if not 0.0 <= hue_degrees <= 180.0:
            raise ValueError(f"hue_degrees must be in [0, 180], got {hue_degrees}.")
        low, high = (float(v) for v in saturation)
        if not 0.0 <= low <= high:
            raise ValueError(f"saturation must be a range 0 <= low <= high, got {tuple(saturation)}.")
        self.hue_degrees, self.saturation = float(hue_degrees), (low, high)
        self.matrix = np.eye(3)

    def randomize(self, data=None) -> None:
        super().randomize(None)
        if not self._do_transform:
            return
        theta = math.radians(self.R.uniform(-self.hue_degrees, self.hue_degrees))
        s = self.R.uniform(*self.saturation)
        cos, sin = s * math.cos(theta), s * math.sin(theta)
        chroma = np.array([[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]])
        self.matrix = self._YIQ2RGB @ chroma @ self._RGB2YIQ

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            image = d[key]
            if image.ndim != 3 or image.shape[0] != 3:
                raise ValueError(f"RandHueSaturationd needs an RGB image (3, H, W) for {key!r}, "
                                 f"got shape {tuple(image.shape)}.")
            t = torch.as_tensor(image, dtype=torch.float32)
            m = torch.as_tensor(self.matrix, dtype=torch.float32, device=t.device)
            out = torch.einsum("ij,jhw->ihw", m, t).clamp_(0.0, 1.0)
            d[key] = convert_to_dst_type(out, image, dtype=torch.float32)[0]
        return d
