"""Augmentation sets by name (:func:`get_augmentation`: ``none``, ``flip``, ``flip_rotate``, ``full``) and the two
photometric transforms MONAI lacks that the ``full`` set uses (:class:`CLAHEd`, :class:`RandHueSaturationd`): the
augmentation choice of :mod:`tools.training_options`, which re-exports them (configs name either path). Also
PraNet's multi-scale training as a trainer's ``prepare_batch`` (:class:`MultiScaleBatch`)."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.engines import PrepareBatch, default_prepare_batch
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

__all__ = ["AUGMENTATIONS", "CLAHEd", "MultiScaleBatch", "RandHueSaturationd", "get_augmentation"]

AUGMENTATIONS = ("none", "flip", "flip_rotate", "full")


def _unknown(argument: str, value, allowed: Sequence) -> ValueError:
    return ValueError(f"{argument} must be one of {tuple(allowed)}, got {value!r}.")


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


def _plain(x: torch.Tensor) -> torch.Tensor:
    return x.as_tensor() if isinstance(x, MetaTensor) else x


class MultiScaleBatch(PrepareBatch):
    """Multi-scale training: each training batch resized to one of ``scales`` times its size, a trainer's
    ``prepare_batch`` (MONAI ``SupervisedTrainer(prepare_batch=...)``).

    Source: PraNet (Fan et al., MICCAI 2020), ``MyTrain.py``: ``size_rates = [0.75, 1, 1.25]``, the side of a
    rescaled batch ``round(trainsize * rate / 32) * 32``, images and masks resized bilinearly. Batches arrive at the
    bundle's ``spatial_size`` (after augmentation and normalisation, on ``device``) and leave as ``(B, C, *size)``
    with ``size[i] = max(divisor, round(side[i] * s / divisor) * divisor)``. Images are resized bilinearly
    (trilinearly in 3D); masks bilinearly and then thresholded at 0.5, so they stay binary for the bundles' loss and
    metric checks (PraNet keeps the graded edge). Validation and inference are untouched (one scale).

    Departure from PraNet: PraNet trains every batch at all three scales (three optimiser steps a batch, about 3.1x
    the compute of a single-scale epoch); here each batch gets **one** scale drawn uniformly from ``scales``, so an
    epoch costs about what a single-scale one does (``(0.75^2 + 1 + 1.25^2) / 3 = 1.04``) and a CPU schedule keeps
    its epochs. Why not a MONAI transform: ``RandZoomd(keep_size=False)`` draws a size per item, and items of
    different sizes cannot be collated into a batch; the scale has to be drawn per batch, after collation.

    Args:
        scales: the scale factors, each > 0. Default ``(0.75, 1.0, 1.25)``.
        divisor: every resized side is a multiple of it (the network's total down-sampling). Default 32.
        seed: seed of the scale draws (``numpy.random.default_rng``). Default 0.

    Raises:
        ValueError: at construction for an empty ``scales``, a scale <= 0 or ``divisor < 1``; on call for an image
            that is not ``(B, C, H, W[, D])`` or a mask whose batch or spatial shape differs from the image's.
    """

    def __init__(self, scales: Sequence[float] = (0.75, 1.0, 1.25), divisor: int = 32, seed: int = 0) -> None:
        self.scales = tuple(float(s) for s in scales)
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"scales must be a non-empty list of factors > 0, got {tuple(scales)}.")
        if int(divisor) < 1:
            raise ValueError(f"divisor must be >= 1, got {divisor}.")
        self.divisor = int(divisor)
        self.rng = np.random.default_rng(seed)

    def size(self, spatial: Sequence[int], scale: float) -> list[int]:
        """The resized spatial size of a batch of spatial size ``spatial`` at ``scale``."""
        return [max(self.divisor, int(round(d * scale / self.divisor)) * self.divisor) for d in spatial]

    def __call__(self, batchdata, device=None, non_blocking: bool = False, **kwargs):
        image, label = default_prepare_batch(batchdata, device, non_blocking, **kwargs)
        if image.ndim not in (4, 5):
            raise ValueError(f"MultiScaleBatch needs images (B, C, H, W[, D]), got shape {tuple(image.shape)}.")
        if label is not None and (label.shape[0] != image.shape[0] or label.shape[2:] != image.shape[2:]):
            raise ValueError(f"MultiScaleBatch: mask shape {tuple(label.shape)} does not match image shape "
                             f"{tuple(image.shape)} (batch and spatial sizes must agree).")
        scale = self.scales[int(self.rng.integers(len(self.scales)))]
        size = self.size(image.shape[2:], scale)
        if size == list(image.shape[2:]):
            return image, label
        mode = "bilinear" if image.ndim == 4 else "trilinear"
        # plain tensors out: a MetaTensor's affine would no longer describe the resized grid
        image = F.interpolate(_plain(image), size=size, mode=mode, align_corners=False)
        if label is not None:
            resized = F.interpolate(_plain(label).float(), size=size, mode=mode, align_corners=False)
            label = (resized >= 0.5).to(label.dtype)
        return image, label
