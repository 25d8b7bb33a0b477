"""CT volumes (NIfTI, NRRD, MetaImage, DICOM series) and the lesion post-processing of the COVID-19 CT bundles.

Reading, orientation, HU windowing and lung cropping of a volume for the slice networks, and the chain that
turns lesion logits into masks on the input's grid (slices and volumes) and writes them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from monai.data import ITKReader, NibabelReader
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    Compose,
    CropForegroundd,
    DeleteItemsd,
    EnsureChannelFirstd,
    EnsureTyped,
    Invertd,
    MaskIntensityd,
    Orientationd,
    RepeatChanneld,
    Resized,
    ScaleIntensityRanged,
)

from tools.lung_mask import LungMaskd
from tools.masks import mask_writers
from tools.transforms import CheckDicomSeriesd, CheckedLoadImaged, CheckHUd, CheckInputd

__all__ = ["ct_volume_preprocessing", "LUNG_REGION_KEY", "lesion_postprocessing"]

LUNG_REGION_KEY = "lung_region"
"""Key of the lung mask grown by a margin that :func:`ct_volume_preprocessing` carries to the network's grid."""


def _lung_or_centre_voxel(mask: torch.Tensor) -> torch.Tensor:
    """``CropForegroundd``'s ``select_fn`` for the lung crop: the lung, or the centre voxel when there is no lung.

    An empty mask would give an empty crop, which no resizing accepts; one voxel (grown by the crop margin) gives one
    small slice for the network, whose output the empty lung region then clears."""
    sel = mask > 0
    if bool(sel.any()):
        return sel
    centre = torch.zeros_like(sel)
    centre[(slice(None), *(s // 2 for s in sel.shape[1:]))] = True
    return centre


def ct_volume_preprocessing(
    spatial_size: Sequence[int],
    hu_window: Sequence[float],
    axcodes: str,
    device: torch.device | str = "cpu",
    dicom: bool = False,
    channels: int = 1,
    lung_crop: bool = True,
    crop_margin: Sequence[int] = (8, 8, 0),
    lung_margin_mm: float = 5.0,
) -> Compose:
    """Inference chain for CT volumes in HU: (DICOM: check the series is complete), read, check the values are HU,
    orient, find the lungs, crop to them, window, resize axial slices to the training size.

    Args:
        spatial_size: in-plane size ``(H, W)`` the network was trained on; the slice axis keeps its length.
        hu_window: ``[low, high]`` HU mapped to [0, 1] (clipped), matching the training slices' window.
        axcodes: orientation putting the training slices' row/column directions on the first two axes
            (``"PLS"`` for the Inf-Net slices: columns anterior->posterior, rows patient right->left).
        device: where the volume is processed (CUDA when present: the orientation, windowing and resizing then
            run on the GPU; the lung mask is computed on the CPU).
        dicom: read a DICOM series folder with MONAI's ``ITKReader`` (else ``NibabelReader`` for NIfTI), after checking
            with pydicom that every file is complete and the slices evenly spaced (:class:`CheckDicomSeriesd`).
        channels: network input channels (the grey channel is repeated).
        lung_crop: find the lungs (:class:`tools.lung_mask.LungMaskd`), crop the volume to their bounding box
            (``crop_margin`` added) as the training slices are cropped to the thorax, so that slices without lung are
            not segmented, and carry the lung mask grown by ``lung_margin_mm`` as ``LUNG_REGION_KEY`` through the
            crop and resize, for :func:`lesion_postprocessing` to keep lesions only inside it. A volume without lung
            is cropped to its centre voxel (one small slice is run, and its output cleared). ``False`` segments every
            slice of the whole volume and keeps every lesion.
        crop_margin: margin of the crop box in voxels along each axis (after orientation to ``axcodes``).
        lung_margin_mm: margin, mm, around the lung mask inside which lesions are kept (pleural effusion and lesions
            at the pleura lie partly outside the aerated lung that the mask follows).

    Returns:
        ``Compose`` giving ``image`` ``(channels, H, W, D')`` in [0, 1] and, with ``lung_crop``,
        ``LUNG_REGION_KEY`` ``(1, H, W, D')`` (0/1), where ``D'`` is the number of slices in the crop box.

    The chain is invertible (``Invertd``) back to the input's shape and affine.
    """
    reader = ITKReader() if dicom else NibabelReader()
    out = [
        *([CheckDicomSeriesd(keys="image")] if dicom else []),
        CheckedLoadImaged(keys="image", reader=reader, image_only=True),
        EnsureChannelFirstd(keys="image"),
        CheckInputd(keys="image", spatial_dims=3, channels={"image": (1,)}),
        CheckHUd(keys="image"),
        EnsureTyped(keys="image", dtype=torch.float32, device=device),
        Orientationd(keys="image", axcodes=axcodes),
    ]
    spatial_keys, modes = ["image"], ["bilinear"]
    if lung_crop:
        spatial_keys, modes = ["image", LUNG_REGION_KEY], ["bilinear", "nearest"]
        out += [
            LungMaskd(keys="image", mask_key="lung", margin_key=LUNG_REGION_KEY, margin_mm=lung_margin_mm),
            CropForegroundd(keys=spatial_keys, source_key="lung", select_fn=_lung_or_centre_voxel,
                            margin=list(crop_margin), allow_smaller=True),
            DeleteItemsd(keys="lung"),
        ]
    out += [
        ScaleIntensityRanged(keys="image", a_min=float(hu_window[0]), a_max=float(hu_window[1]),
                             b_min=0.0, b_max=1.0, clip=True),
        Resized(keys=spatial_keys, spatial_size=[*spatial_size, -1], mode=modes),
    ]
    if channels > 1:
        out.append(RepeatChanneld(keys="image", repeats=channels))
    return Compose(out)


def lesion_postprocessing(
    preprocessing: Compose,
    output_dir: str,
    volume: bool,
    threshold: float = 0.5,
    lung_mask: bool = True,
    overwrite: bool = False,
    output_format: str = "nifti",
    dicom_seg: Mapping | None = None,
) -> Compose:
    """Post-processing of the lesion logits ``pred`` for slices and CT volumes: sigmoid, (volumes: keep the lungs),
    back to the input's grid, threshold, write.

    Args:
        preprocessing: the chain that made the network's input (inverted by ``Invertd`` to the input's exact shape
            and affine: resize, crop and orientation for volumes, resize for slices).
        output_dir: where :func:`mask_saver` writes the masks.
        volume: the input is a CT volume (:func:`ct_volume_preprocessing`), not 2D slices.
        threshold: probability from which (``>=``) a pixel is lesion.
        lung_mask: for volumes, zero the probabilities outside ``LUNG_REGION_KEY`` (MONAI ``MaskIntensityd``, on
            the network's grid, before ``Invertd``); needs ``ct_volume_preprocessing(lung_crop=True)``. Ignored for
            slices.
        overwrite: replace a mask file that exists (else writing it raises :class:`tools.errors.OutputError`).
        output_format, dicom_seg: ``"dicom_seg"`` also writes a DICOM SEG beside the NIfTI mask of a volume read from
            a DICOM series (:func:`tools.masks.mask_writers`).
    """
    out = [Activationsd(keys="pred", sigmoid=True)]
    if volume and lung_mask:
        out.append(MaskIntensityd(keys="pred", mask_key=LUNG_REGION_KEY))
    out += [
        Invertd(keys="pred", transform=preprocessing, orig_keys="image", nearest_interp=False, to_tensor=True,
                device="cpu"),
        AsDiscreted(keys="pred", threshold=threshold),
        *mask_writers(output_dir, volume=volume, overwrite=overwrite, output_format=output_format,
                      dicom_seg=dicom_seg),
    ]
    return Compose(out)
