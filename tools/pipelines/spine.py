"""Spine volumes (MRI and CT): reading and checking volumes and label maps, intensity normalisation, the training
slice sampler, and the post-processing that writes the vertebra mask on the input's grid.

The spine bundle trains a 2D network on sagittal slices of 3D volumes and segments whole volumes slice by slice with
MONAI's ``SliceInferer`` (its ``configs/*.json`` build these chains by ``_target_``). Its label maps hold 0 and the
vertebrae 1..5 (L1..L5); every label above 0 is foreground.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from monai.data import ITKReader, NibabelReader
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    Invertd,
    KeepLargestConnectedComponent,
    MapTransform,
    Orientationd,
    RandCropByPosNegLabeld,
    RemoveSmallObjects,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
    Spacingd,
    SqueezeDimd,
)

from tools.errors import InputError
from tools.input_checks import check_label_map
from tools.masks import mask_writers
from tools.transforms import CheckDicomSeriesd, CheckedLoadImaged, CheckHUd, CheckInputd

__all__ = [
    "MODALITIES",
    "CheckLabelMapd",
    "FilterComponentsd",
    "NeighbourSlicesd",
    "volume_intensity",
    "spine_loading",
    "slice_sampling",
    "patch_sampling",
    "LoadVolumed",
    "spine_volume_preprocessing",
    "spine_postprocessing",
]

MODALITIES = ("mri", "ct")


class CheckLabelMapd(MapTransform):
    """Refuse a label volume that is not integer labels ``0..max_label`` (:func:`tools.input_checks.check_label_map`).

    Raises:
        InputError: naming the file and the values found.
    """

    def __init__(self, keys, max_label: int, allow_missing_keys: bool = False) -> None:  # type: ignore[no-untyped-def]
        super().__init__(keys, allow_missing_keys)
        self.max_label = int(max_label)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            try:
                check_label_map(torch.as_tensor(d[key]).detach().cpu().numpy(), self.max_label)
            except InputError as e:
                meta = getattr(d[key], "meta", {}) or {}
                raise InputError(f"{meta.get('filename_or_obj', f'<{key}>')}: {e}") from None
        return d


class LoadVolumed(MapTransform):
    """Read a volume whatever its form: a folder is a DICOM series (checked complete and evenly spaced by
    :class:`CheckDicomSeriesd`, then read by MONAI's ``ITKReader``), a file is read by ``NibabelReader`` (NIfTI). Both
    through :class:`CheckedLoadImaged`, so a read error names the file. The choice is made per item, so a folder
    holding NIfTI files and DICOM series folders side by side is read item by item."""

    def __init__(self, keys, allow_missing_keys: bool = False) -> None:  # type: ignore[no-untyped-def]
        super().__init__(keys, allow_missing_keys)
        self.file_loaders = {k: CheckedLoadImaged(keys=k, reader=NibabelReader(), image_only=True) for k in self.keys}
        self.series_loaders = {
            k: Compose([CheckDicomSeriesd(keys=k), CheckedLoadImaged(keys=k, reader=ITKReader(), image_only=True)])
            for k in self.keys
        }

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            loaders = self.series_loaders if Path(str(d[key])).is_dir() else self.file_loaders
            d = dict(loaders[key](d))
        return d


def volume_intensity(
    modality: str = "mri",
    percentiles: Sequence[float] = (0.5, 99.5),
    hu_window: Sequence[float] = (-250.0, 1250.0),
    key: str = "image",
) -> MapTransform:
    """The intensity normalisation to [0, 1] of a spine volume.

    Args:
        modality: ``"mri"``: MRI intensities have no absolute scale, so each volume's ``percentiles`` (of all its
            voxels) are mapped to 0 and 1 (clipped; MONAI ``ScaleIntensityRangePercentilesd``). ``"ct"``: the bone
            window ``hu_window`` (HU) is mapped to 0 and 1 (clipped; ``ScaleIntensityRanged``).
        percentiles: ``(lower, upper)`` percentiles of the MRI normalisation.
        hu_window: ``(low, high)`` HU of the CT normalisation.

    Raises:
        ValueError: for another modality.
    """
    if modality == "mri":
        return ScaleIntensityRangePercentilesd(keys=key, lower=float(percentiles[0]), upper=float(percentiles[1]),
                                               b_min=0.0, b_max=1.0, clip=True)
    if modality == "ct":
        return ScaleIntensityRanged(keys=key, a_min=float(hu_window[0]), a_max=float(hu_window[1]), b_min=0.0,
                                    b_max=1.0, clip=True)
    raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}.")


def spine_loading(
    max_label: int = 5,
    allow_empty_label: bool = False,
    percentiles: Sequence[float] = (0.5, 99.5),
    slab_neighbours: int = 0,
    slab_step: int = 1,
) -> list:
    """Training and evaluation chain of an ``{"image", "label"}`` pair of MRI volumes: read (NiBabel), check, take the
    vertebrae (every label above 0) as one foreground class, normalise the image and, with ``slab_neighbours`` > 0,
    give each slice its neighbours as channels (:class:`NeighbourSlicesd`, 2.5D input).

    Checks (each refusal an :class:`tools.errors.InputError` naming the file): both are 3D with one channel and the
    same shape, finite, the label map holds integers ``0..max_label`` (:class:`CheckLabelMapd`) and, unless
    ``allow_empty_label``, some vertebra.

    Returns:
        a list of transforms giving ``image`` ``(1 + 2 * slab_neighbours, H, W, D)`` float32 in [0, 1] and ``label``
        ``(1, H, W, D)`` 0/1.
    """
    keys = ["image", "label"]
    return [
        CheckedLoadImaged(keys=keys, reader=NibabelReader(), image_only=True),
        EnsureChannelFirstd(keys=keys),
        CheckInputd(keys=keys, spatial_dims=3, channels={"image": (1,), "label": (1,)}, label_keys="label",
                    allow_empty_label=allow_empty_label, same_spatial_shape=True),
        CheckLabelMapd(keys="label", max_label=max_label),
        EnsureTyped(keys=keys, dtype=torch.float32),
        AsDiscreted(keys="label", threshold=0.5),
        volume_intensity("mri", percentiles),
        *_slab(slab_neighbours, slab_step),
    ]


def _slab(neighbours: int, step: int) -> list:
    """:class:`NeighbourSlicesd` on ``image`` when ``neighbours`` > 0 (2.5D input), else nothing (2D)."""
    return [NeighbourSlicesd(keys="image", neighbours=neighbours, step=step)] if int(neighbours) > 0 else []


def slice_sampling(slices_per_volume: int, positive: float = 1.0, negative: float = 1.0) -> list:
    """Draw ``slices_per_volume`` whole slices along the last axis from each ``(1, H, W, D)`` volume, returned as 2D
    items ``(1, H, W)``: MONAI's ``RandCropByPosNegLabeld`` with a crop of ``(H, W, 1)`` centred on a vertebra voxel
    with probability ``positive / (positive + negative)`` (a slice through a vertebra), else on a background voxel
    (any slice, in proportion to its background), then ``SqueezeDimd``. With a data loader batch of ``B`` volumes a
    batch holds ``B * slices_per_volume`` slices."""
    keys = ["image", "label"]
    return [
        RandCropByPosNegLabeld(keys=keys, label_key="label", spatial_size=[-1, -1, 1], pos=positive, neg=negative,
                               num_samples=int(slices_per_volume), allow_smaller=True),
        SqueezeDimd(keys=keys, dim=3),
    ]


class NeighbourSlicesd(MapTransform):
    """2.5D input: every slice along the last axis of a ``(1, H, W, D)`` volume gets its neighbours as channels,
    ``(2 * neighbours + 1, H, W, D)``: channel ``j`` at slice ``d`` holds slice ``d + (j - neighbours) * step`` (the
    edge slice repeated beyond the volume), so the middle channel is the volume itself and a 2D network fed by
    :func:`slice_sampling` in training, or MONAI's ``SliceInferer`` over the whole volume, sees a slab of
    ``2 * neighbours * step + 1`` slices around the slice it segments. The label is not touched. Applied after
    intensity normalisation, before sampling; the network's ``in_channels`` must be ``2 * neighbours + 1`` (the
    spine bundle's ``slab_neighbours`` and ``slab_step``, in ``train.json`` and ``inference.json``, set by
    ``configs/recipes/context_2p5d.json``).

    The 2.5D input of slice-wise segmentation of volumes (e.g. Roth et al., MICCAI 2014, three orthogonal views;
    here neighbouring parallel slices); MONAI has inferers for 2D slices of a volume but no transform that stacks a
    slice's neighbours, so this one does. Not invertible and not recorded: the mask is written on the input's grid
    as before (only the channels change).

    Raises:
        ValueError: for a negative ``neighbours``, a ``step`` below 1, or an input with more than one channel.
    """

    def __init__(self, keys, neighbours: int = 1, step: int = 1, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if int(neighbours) < 0 or int(step) < 1:
            raise ValueError(f"neighbours ({neighbours}) must be >= 0 and step ({step}) >= 1.")
        self.neighbours, self.step = int(neighbours), int(step)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            volume = d[key]
            if volume.ndim != 4 or volume.shape[0] != 1:
                raise ValueError(f"{key}: NeighbourSlicesd takes a (1, H, W, D) volume, got {tuple(volume.shape)}.")
            depth = volume.shape[-1]
            index = torch.arange(depth, device=volume.device)
            d[key] = torch.cat([torch.index_select(volume, -1, (index + k * self.step).clamp(0, depth - 1))
                                for k in range(-self.neighbours, self.neighbours + 1)], dim=0)
        return d


def patch_sampling(patch_size: Sequence[int], patches_per_volume: int, positive: float = 1.0,
                   negative: float = 1.0) -> list:
    """The 3D variant's sampler: ``patches_per_volume`` patches of ``patch_size`` from each volume, centred on a
    vertebra voxel with probability ``positive / (positive + negative)`` (MONAI ``RandCropByPosNegLabeld``)."""
    return [RandCropByPosNegLabeld(keys=["image", "label"], label_key="label", spatial_size=list(patch_size),
                                   pos=positive, neg=negative, num_samples=int(patches_per_volume),
                                   allow_smaller=True)]


def spine_volume_preprocessing(
    modality: str = "mri",
    axcodes: str | None = None,
    pixdim: Sequence[float] | None = None,
    percentiles: Sequence[float] = (0.5, 99.5),
    hu_window: Sequence[float] = (-250.0, 1250.0),
    device: torch.device | str = "cpu",
    slab_neighbours: int = 0,
    slab_step: int = 1,
) -> Compose:
    """Inference chain of a spine volume (a NIfTI file or a DICOM series folder, :class:`LoadVolumed`): read,
    check, (orient, resample), normalise, (stack each slice's neighbours as channels).

    Args:
        modality: ``"mri"`` (percentile normalisation) or ``"ct"`` (values checked to be HU, :class:`CheckHUd`;
            bone window); :func:`volume_intensity`.
        axcodes: orientation (MONAI ``Orientationd``) putting the training volumes' voxel axes on the input:
            ``"IPL"`` for the MyoSegmenTUM MRIs (rows superior->inferior, columns anterior->posterior, sagittal slices
            along the last axis). ``None`` keeps the voxel order: the training MRIs carry an identity affine that does
            not describe their anatomy, so an MRI stored like them must not be reoriented by its header.
        pixdim: resample to this voxel size in mm (MONAI ``Spacingd``, bilinear; the training MRIs are 1 mm
            isotropic), or ``None`` to keep the input's grid.
        percentiles, hu_window: of :func:`volume_intensity`.
        device: where the volume is processed (CUDA when present).
        slab_neighbours, slab_step: 2.5D input (:class:`NeighbourSlicesd`; 0 neighbours: none), as in training.

    Returns:
        ``Compose`` giving ``image`` ``(1 + 2 * slab_neighbours, H, W, D)`` in [0, 1]; invertible (``Invertd``) back
        to the input's exact shape and affine.

    Checks (each refusal an :class:`tools.errors.InputError` naming the file): a readable, complete file or series,
    3D with one channel (not a 2D image, not a 4D series), finite values, and HU for CT.
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}.")
    out = [
        LoadVolumed(keys="image"),
        EnsureChannelFirstd(keys="image"),
        CheckInputd(keys="image", spatial_dims=3, channels={"image": (1,)}),
        *([CheckHUd(keys="image")] if modality == "ct" else []),
        EnsureTyped(keys="image", dtype=torch.float32, device=device),
    ]
    if axcodes:
        out.append(Orientationd(keys="image", axcodes=axcodes))
    if pixdim is not None:
        out.append(Spacingd(keys="image", pixdim=[float(p) for p in pixdim], mode="bilinear"))
    out.append(volume_intensity(modality, percentiles, hu_window))
    return Compose(out + _slab(slab_neighbours, slab_step))


class FilterComponentsd(MapTransform):
    """Connected-component post-processing of a foreground map ``(1, H, W, D)``: drop the components of
    ``key >= threshold`` smaller than ``min_component_mm3`` (MONAI ``RemoveSmallObjects``, by physical volume), then
    keep the ``keep_largest`` largest (MONAI ``KeepLargestConnectedComponent``, 26-connectivity); voxels outside the kept
    components are set to 0, the others keep their value (a probability map stays one, so that metrics thresholded
    later see the filtered mask).

    The vertebral bodies are separate components in the mask (the discs between them are background), so "keep the
    largest component" would keep one vertebra: ``keep_largest`` is the number of vertebrae to keep (5 for L1-L5), and
    ``min_component_mm3`` removes the small distant false positives behind the large HD95 of some subjects (the
    spine bundle's cross-validation, docs). Either is off at 0.

    ``fragment_margin_mm`` (with ``keep_largest``): also keep the components within that distance (mm) of the kept
    ones, so that a vertebra the network split in two keeps its smaller piece (a piece of a poorly segmented L1 was
    the 6th-largest component of one validation subject), while a distant false positive, or the next vertebra
    beyond the disc, stays removed (lumbar discs are 8-12 mm high).

    Spacing (mm) for ``min_component_mm3`` and ``fragment_margin_mm``: the map's own affine (a MetaTensor's
    ``pixdim``), else that of ``reference_key`` (the label, in evaluation), else 1 mm.

    Raises:
        ValueError: for a negative size or count.
    """

    def __init__(self, keys, min_component_mm3: float = 0.0, keep_largest: int = 0, threshold: float = 0.5,
                 reference_key: str | None = None, allow_missing_keys: bool = False,
                 fragment_margin_mm: float = 0.0) -> None:
        super().__init__(keys, allow_missing_keys)
        if float(min_component_mm3) < 0 or int(keep_largest) < 0 or float(fragment_margin_mm) < 0:
            raise ValueError(f"min_component_mm3 ({min_component_mm3}), keep_largest ({keep_largest}) and "
                             f"fragment_margin_mm ({fragment_margin_mm}) must be >= 0.")
        self.min_mm3, self.keep, self.threshold = float(min_component_mm3), int(keep_largest), float(threshold)
        self.margin = float(fragment_margin_mm)
        self.reference_key = reference_key

    def _pixdim(self, d: Mapping, key: str) -> Sequence[float]:
        for item in (d[key], d.get(self.reference_key) if self.reference_key else None):
            if getattr(item, "affine", None) is not None:
                return [float(v) for v in item.pixdim]
        return [1.0, 1.0, 1.0]

    def _with_fragments(self, mask, kept, pixdim: Sequence[float]):
        """``kept`` plus the components of ``mask`` with a voxel within ``margin`` mm of it (SciPy's labelling and
        Euclidean distance transform, in mm: MONAI has no distance-to-component transform)."""
        import numpy as np
        from scipy import ndimage

        m, k = np.asarray(mask[0].cpu()) > 0, np.asarray(kept[0].cpu()) > 0
        if not k.any():
            return kept
        labels, _ = ndimage.label(m & ~k, structure=np.ones((3, 3, 3)))
        near = ndimage.distance_transform_edt(~k, sampling=list(pixdim)[:3]) <= self.margin
        close = np.unique(labels[near & (labels > 0)])
        out = k | np.isin(labels, close[close > 0])
        return torch.as_tensor(out[None], device=kept.device).to(kept.dtype)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        if not self.min_mm3 and not self.keep:
            return d
        for key in self.key_iterator(d):
            value = d[key]
            mask = (value >= self.threshold).to(torch.uint8)
            if self.min_mm3:
                mask = RemoveSmallObjects(min_size=self.min_mm3, connectivity=3, by_measure=True,
                                          pixdim=self._pixdim(d, key))(mask)
            if self.keep:
                kept = KeepLargestConnectedComponent(applied_labels=[1], num_components=self.keep,
                                                     connectivity=3)(mask.clone())  # it writes into its input
                mask = self._with_fragments(mask, kept, self._pixdim(d, key)) if self.margin else kept
            d[key] = value * torch.as_tensor(mask > 0, device=value.device).to(value.dtype)
        return d


def spine_postprocessing(preprocessing: Compose, output_dir: str, threshold: float = 0.5,
                         overwrite: bool = False, min_component_mm3: float = 0.0, keep_largest: int = 0,
                         output_format: str = "nifti", dicom_seg: Mapping | None = None,
                         fragment_margin_mm: float = 0.0) -> Compose:
    """Vertebra logits ``pred`` -> sigmoid -> back to the input's grid (``Invertd``: resampling and orientation,
    bilinear on probabilities) -> ``>= threshold`` -> connected components (:class:`FilterComponentsd`; off at 0, the
    default) -> NIfTI mask (uint8 0/1, the input's shape and affine) written by :func:`tools.pipelines.mask_saver` as
    ``<output_dir>/<input name>_mask.nii.gz`` and, with ``output_format`` ``"dicom_seg"``, for a DICOM series a DICOM
    SEG ``<input name>_seg.dcm`` beside it (:func:`tools.masks.mask_writers`)."""
    return Compose([
        Activationsd(keys="pred", sigmoid=True),
        Invertd(keys="pred", transform=preprocessing, orig_keys="image", nearest_interp=False, to_tensor=True,
                device="cpu"),
        AsDiscreted(keys="pred", threshold=threshold),
        FilterComponentsd(keys="pred", min_component_mm3=min_component_mm3, keep_largest=keep_largest,
                          fragment_margin_mm=fragment_margin_mm),
        *mask_writers(output_dir, volume=True, overwrite=overwrite, output_format=output_format, dicom_seg=dicom_seg),
    ])
