"""Grey 2D slices (8-bit lung-windowed CT slices and their 0/255 masks; 16-bit files mapped to 8 bits or refused):
reading for training and evaluation, and the inference chain."""

from __future__ import annotations

from collections.abc import Sequence

from monai.data import PILReader
from monai.transforms import AsDiscreted, Compose, EnsureChannelFirstd, RepeatChanneld, Resized, ScaleIntensityRanged

from tools.input_checks import grey_converter
from tools.transforms import CheckBinaryMaskd, CheckedLoadImaged, CheckInputd

__all__ = ["grey_reader", "slice_loading", "slice_inference_preprocessing"]


def grey_reader() -> PILReader:
    """MONAI's ``PILReader`` that converts every image to one 8-bit grey channel (``"L"``; RGB screenshots of slices
    too); 16-bit images are mapped by ``round(v / 257)`` or refused (:func:`tools.input_checks.grey_converter`)."""
    return PILReader(converter=grey_converter)


def slice_loading(keys: Sequence[str] = ("image", "label"), allow_empty_label: bool = False, channels: int = 1,
                  soft_label: bool = False) -> list:
    """Read 8-bit CT slices (already lung-windowed) and their 0/255 masks as the network sees them.

    Steps: load (grey, 16-bit files mapped to 8 bits or refused; errors name the file), channel first, check 2D /
    finite / non-empty mask, mask 0/255 (label maps and graded masks refused:
    :func:`tools.input_checks.check_binary_mask`), image 0..255 -> [0, 1], mask binarised at 128, image grey channel
    repeated to ``channels`` (3 for ImageNet-style encoders).

    ``soft_label`` (soft pseudo-labels of :mod:`tools.semi_supervised`, never a ground-truth mask): the mask is a
    graded 8-bit probability map, 0..255 -> [0, 1], neither checked as binary nor thresholded.

    Returns a list of transforms, so that configs can append resizing and augmentation.
    """
    keys = list(keys)
    label_keys = [k for k in keys if k != "image"]
    out = [
        CheckedLoadImaged(keys=keys, reader=grey_reader(), image_only=True),
        EnsureChannelFirstd(keys=keys),
        CheckInputd(keys=keys, spatial_dims=2, channels={k: (1,) for k in keys}, label_keys=label_keys,
                    allow_empty_label=allow_empty_label),
        ScaleIntensityRanged(keys="image", a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True),
    ]
    if label_keys and soft_label:
        out.append(ScaleIntensityRanged(keys=label_keys, a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True))
    elif label_keys:
        out += [CheckBinaryMaskd(keys=label_keys), AsDiscreted(keys=label_keys, threshold=128)]
    if channels > 1:
        out.append(RepeatChanneld(keys="image", repeats=channels))
    return out


def slice_inference_preprocessing(spatial_size: Sequence[int], channels: int = 1) -> Compose:
    """Inference chain for 8-bit slices: :func:`slice_loading` of the image, resized to ``spatial_size``."""
    return Compose([*slice_loading(("image",), channels=channels),
                    Resized(keys="image", spatial_size=list(spatial_size), mode="bilinear")])
