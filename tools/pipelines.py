"""Transform chains shared by the bundles that segment lung lesions on CT (slices and volumes).

The COVID-19 bundles differ in network, input size, channels and augmentation, but read the same slices and
volumes the same way; their configs build these chains by ``_target_`` so that the reading, checking, HU
windowing and mask writing live once. Every chain is made of MONAI transforms.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.data import ITKReader, NibabelReader, PILReader
from monai.transforms import (
    AsDiscreted,
    Compose,
    CropForegroundd,
    DeleteItemsd,
    EnsureChannelFirstd,
    EnsureTyped,
    Orientationd,
    RepeatChanneld,
    Resized,
    SaveImaged,
    ScaleIntensityRanged,
)

from tools.io import AtomicNibabelWriter, AtomicPILWriter
from tools.transforms import CheckedLoadImaged, CheckInputd, LungRegiond

__all__ = ["grey_reader", "slice_loading", "slice_inference_preprocessing", "ct_volume_preprocessing", "mask_saver"]


def _to_grey(image):  # PIL converter: RGB screenshots of slices become one grey channel
    return image.convert("L")


def grey_reader() -> PILReader:
    """MONAI's ``PILReader`` that converts every image to one grey channel (``"L"``)."""
    return PILReader(converter=_to_grey)


def slice_loading(keys: Sequence[str] = ("image", "label"), allow_empty_label: bool = False, channels: int = 1) -> list:
    """Read 8-bit CT slices (already lung-windowed) and their 0/255 masks as the network sees them.

    Steps: load (grey; errors name the file), channel first, check 2D / finite / non-empty mask, image 0..255 ->
    [0, 1], mask binarised at 128, image grey channel repeated to ``channels`` (3 for ImageNet-style encoders).

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
    if label_keys:
        out.append(AsDiscreted(keys=label_keys, threshold=128))
    if channels > 1:
        out.append(RepeatChanneld(keys="image", repeats=channels))
    return out


def slice_inference_preprocessing(spatial_size: Sequence[int], channels: int = 1) -> Compose:
    """Inference chain for 8-bit slices: :func:`slice_loading` of the image, resized to ``spatial_size``."""
    return Compose([*slice_loading(("image",), channels=channels),
                    Resized(keys="image", spatial_size=list(spatial_size), mode="bilinear")])


def ct_volume_preprocessing(
    spatial_size: Sequence[int],
    hu_window: Sequence[float],
    axcodes: str,
    device: torch.device | str = "cpu",
    dicom: bool = False,
    channels: int = 1,
    lung_crop: bool = True,
    crop_margin: Sequence[int] = (8, 8, 0),
) -> Compose:
    """Inference chain for CT volumes in HU: read, orient, window, resize axial slices to the training size.

    Args:
        spatial_size: in-plane size ``(H, W)`` the network was trained on; the slice axis keeps its length.
        hu_window: ``[low, high]`` HU mapped to [0, 1] (clipped), matching the training slices' window.
        axcodes: orientation putting the training slices' row/column directions on the first two axes
            (``"PLS"`` for the Inf-Net slices: columns anterior->posterior, rows patient right->left).
        device: where the volume is processed (CUDA when present: the orientation, windowing and resizing then
            run on the GPU).
        dicom: read a DICOM series folder with MONAI's ``ITKReader`` (else ``NibabelReader`` for NIfTI).
        channels: network input channels (the grey channel is repeated).
        lung_crop: crop the volume to the bounding box of a rough lung region of interest
            (:class:`tools.transforms.LungRegiond`) before resizing, as the training slices are cropped to the
            thorax; slices outside the box get no lesion.
        crop_margin: margin of that box in voxels along each axis.

    The chain is invertible (``Invertd``) back to the input's shape and affine.
    """
    reader = ITKReader() if dicom else NibabelReader()
    out = [
        CheckedLoadImaged(keys="image", reader=reader, image_only=True),
        EnsureChannelFirstd(keys="image"),
        CheckInputd(keys="image", spatial_dims=3, channels={"image": (1,)}),
        EnsureTyped(keys="image", dtype=torch.float32, device=device),
        Orientationd(keys="image", axcodes=axcodes),
    ]
    if lung_crop:
        out += [
            LungRegiond(keys="image", roi_key="lung_roi"),
            CropForegroundd(keys="image", source_key="lung_roi", margin=list(crop_margin), allow_smaller=True),
            DeleteItemsd(keys="lung_roi"),
        ]
    out += [
        ScaleIntensityRanged(keys="image", a_min=float(hu_window[0]), a_max=float(hu_window[1]),
                             b_min=0.0, b_max=1.0, clip=True),
        Resized(keys="image", spatial_size=[*spatial_size, -1], mode="bilinear"),
    ]
    if channels > 1:
        out.append(RepeatChanneld(keys="image", repeats=channels))
    return Compose(out)


def mask_saver(output_dir: str, volume: bool, key: str = "pred") -> SaveImaged:
    """Write binary masks whole or not at all: NIfTI (0/1, uint8, the input's affine) for volumes, PNG (0/255)
    for slices, named ``<input name>_mask``."""
    common = dict(keys=key, output_dir=output_dir, output_postfix="mask", output_dtype=np.uint8, resample=False,
                  separate_folder=False)
    if volume:
        return SaveImaged(output_ext=".nii.gz", writer=AtomicNibabelWriter, **common)
    return SaveImaged(output_ext=".png", writer=AtomicPILWriter, scale=255, **common)
