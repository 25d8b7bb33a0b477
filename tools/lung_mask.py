"""A lung mask of a CT volume in HU from thresholds and connected components (no learning), to keep lesion masks in
the lungs.

The COVID-19 bundles segment lesions slice by slice; on a whole CT volume the network also fires on air that looks
like diseased lung within one slice (bowel gas, the strip between the patient's back and the table). This module
finds the lungs, so that the volume is cropped to them and lesions outside them are dropped. The method follows the
classic threshold-and-components lung segmentation (Hu, Hoffman and Reinhardt, IEEE TMI 20(6):490-498, 2001,
doi:10.1109/42.929615), with a density rule added for abdominal gas.

Method (:func:`lung_mask`):

1. **Body**: voxels above ``body_hu`` (-500 HU), opened in-plane by ``table_mm`` (so a thin table or mattress line
   touching the back comes off), the largest 3D connected component, holes filled in each axial slice.
2. **Air inside the body**: voxels below ``air_hu`` (-400 HU) inside the body, split into 3D connected components
   (6-connectivity).
3. **Which air is lung**: a component is kept when all of these hold:

   - it does not come within ``surface_mm`` (5 mm) of the outside of the body, in-plane (air in skin folds, the
     table gap);
   - it is not gas: at most ``max_gas_fraction`` (30 %) of its voxels are below ``gas_hu`` (-950 HU, the emphysema
     index's threshold) once the volume is smoothed by a Gaussian of ``smoothing_mm``. Gas in the stomach and bowel
     is air, read at -1000 to -950 HU inside the body; aerated lung is air and tissue (about -850 HU; healthy lung
     has a few % of voxels below -950 HU, emphysema up to about 30 %);
   - it holds at least ``min_volume_ml`` (25 mL) and ``min_relative_volume`` (5 %) of the largest component that
     passes the other rules (small gas pockets, whose partial-volume rim makes them look like lung).

   Every threshold is in HU, mm or mL, and the voxel spacing converts them, so the same settings serve 1 mm and
   3 mm volumes.
4. **Filling**: hole filling in each axial slice puts vessels, airway walls and lesions enclosed by aerated lung
   (consolidation, nodules) into the mask, and a closing by ``closing_mm`` (10 mm) the lesions that bite less than
   about ``2 * closing_mm`` into the lung's border. No hole is filled after the closing, which may bridge the two
   lungs in front of the heart.

Why density and not size or extent: on TotalSegmentator's chest-to-pelvis reference CT (3 mm, lungs only as their
bases) two bowel-gas components (238 and 110 mL, spanning up to 57 slices) are larger and longer than the lung bases
(73 and 43 mL, 11 slices), so "keep the largest components" or "keep what spans many slices" picks bowel gas. Their
fractions below -950 HU are 0.57 and 0.69 against 0.00 for the lung bases; on the 1 mm abdominal DICOM reference the
two gas pockets have 0.39 and 0.37 and 17 and 13 mL, so they fail both the gas rule and the size rule.

Limits: a threshold method, not a lung segmentation network. A lesion reaching the pleura over more than about
``2 * closing_mm`` is not enclosed by aerated lung and is only partly inside the mask (the bundles keep lesions within
a margin of it, :func:`dilate_mm`, which also keeps thin pleural effusions); a lung dense throughout (no voxel below
``air_hu``) is not found; severe emphysema, giant bullae (more than ``max_gas_fraction`` of a component below
-950 HU) and pneumothorax count as gas; a trachea not connected to the lungs below ``air_hu`` is dropped as gas;
lung pieces under 25 mL (a sliver of lung base at the top of an abdominal scan) are dropped; on a slice where the two
lungs touch in front of and behind the mediastinum (above the aortic arch, where the junction lines are thinner
than the voxels) the mediastinum between them is a hole and counts as lung; a body wall thinner than about
``2 * table_mm`` is opened. The thresholds were set on two volumes only (TotalSegmentator's references, whose
labels are themselves model outputs); no full chest CT with lungs could be checked here.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing
from monai.transforms import MapTransform
from nibabel.orientations import aff2axcodes
from scipy import ndimage

__all__ = ["lung_mask", "dilate_mm", "axial_axis", "LungMaskd"]

logger = logging.getLogger(__name__)


def _inplane_cross(axial: int) -> np.ndarray:
    """3x3 cross in the axial plane, one voxel thick along the slice axis: operations act slice by slice."""
    s = ndimage.generate_binary_structure(2, 1)
    return np.expand_dims(s, axial)


def _steps(mm: float, spacing: Sequence[float], axial: int) -> int:
    """How many one-voxel in-plane steps make ``mm`` (at least one)."""
    inplane = [float(s) for i, s in enumerate(spacing) if i != axial]
    return max(1, int(round(mm / float(np.mean(inplane)))))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _edt_within(mask: np.ndarray, spacing: Sequence[float], pad_mm: float) -> tuple[tuple[slice, ...], np.ndarray]:
    """The bounding box of ``mask`` grown by ``pad_mm`` (clipped to the array), and the mask inside it."""
    nz = np.nonzero(mask)
    box = []
    for axis, (idx, size) in enumerate(zip(nz, mask.shape)):
        pad = int(np.ceil(pad_mm / float(spacing[axis]))) + 1
        box.append(slice(max(int(idx.min()) - pad, 0), min(int(idx.max()) + pad + 1, size)))
    box_t = tuple(box)
    return box_t, mask[box_t]


def dilate_mm(mask: np.ndarray, spacing: Sequence[float], mm: float) -> np.ndarray:
    """Grow a 3D binary mask by ``mm`` millimetres (Euclidean, with the voxel spacing).

    Args:
        mask: bool array ``(X, Y, Z)``.
        spacing: voxel size along each axis, mm.
        mm: margin, mm; 0 returns a copy.

    Returns:
        bool array of ``mask``'s shape: the voxels whose centre lies within ``mm`` of a voxel of ``mask``.
        The distance transform runs on the mask's bounding box only.
    """
    mask = np.asarray(mask, bool)
    if mm <= 0 or not mask.any():
        return mask.copy()
    box, sub = _edt_within(mask, spacing, mm)
    out = np.zeros_like(mask)
    out[box] = ndimage.distance_transform_edt(~sub, sampling=[float(s) for s in spacing]) <= mm
    return out


def _close_mm(mask: np.ndarray, spacing: Sequence[float], mm: float) -> np.ndarray:
    """Morphological closing by a ball of ``mm`` millimetres, the gaps it fills found on a grid of about ``mm / 4``.

    The closing only adds voxels; they are found on a coarser grid (blocks holding no lung that the closing fills; two
    distance transforms on the mask's bounding box), which at 0.7 x 0.7 x 1 mm has 18 times fewer voxels. Voxels
    of ``mask`` are kept as they are.
    """
    if mm <= 0 or not mask.any():
        return mask
    box, sub = _edt_within(mask, spacing, 2 * mm)  # padded by 2 * mm: the grown mask never reaches the box's edge
    f = [max(1, int(mm / 4.0 / float(s))) for s in spacing]
    padded = np.pad(sub, [(0, (-n) % k) for n, k in zip(sub.shape, f)])
    c = padded.shape
    coarse = padded.reshape(c[0] // f[0], f[0], c[1] // f[1], f[1], c[2] // f[2], f[2]).any((1, 3, 5))
    sampling = [float(s) * k for s, k in zip(spacing, f)]
    grown = ndimage.distance_transform_edt(~coarse, sampling=sampling) <= mm
    filled = (ndimage.distance_transform_edt(grown, sampling=sampling) > mm) & ~coarse
    for axis, k in enumerate(f):
        filled = np.repeat(filled, k, axis)
    out = mask.copy()
    out[box] |= filled[: sub.shape[0], : sub.shape[1], : sub.shape[2]]
    return out


def lung_mask(
    hu: np.ndarray,
    spacing: Sequence[float],
    axial: int = 2,
    *,
    body_hu: float = -500.0,
    air_hu: float = -400.0,
    gas_hu: float = -950.0,
    max_gas_fraction: float = 0.3,
    smoothing_mm: float = 1.0,
    table_mm: float = 3.0,
    surface_mm: float = 5.0,
    min_volume_ml: float = 25.0,
    min_relative_volume: float = 0.05,
    closing_mm: float = 10.0,
) -> np.ndarray:
    """The lungs (and the airways connected to them) of a CT volume in HU; see the module docstring for the method.

    Args:
        hu: CT volume ``(X, Y, Z)`` in Hounsfield units, any orientation.
        spacing: voxel size along each of the three axes, mm.
        axial: the axis that runs head to foot (slices are taken across it); :func:`axial_axis` finds it from an
            affine.
        body_hu: lower HU of the body (soft tissue, fat); the table's foam and the air around the patient are below.
        air_hu: upper HU of aerated lung.
        gas_hu: HU below which a voxel is counted as gas (air without tissue).
        max_gas_fraction: largest fraction of a component's voxels below ``gas_hu`` for it to count as lung.
        smoothing_mm: Gaussian sigma, mm, applied before counting gas voxels (sharp reconstruction kernels add noise
            that would push lung voxels below ``gas_hu``).
        table_mm: in-plane radius, mm, of the opening that detaches the table from the body.
        surface_mm: components reaching within this distance of the outside of the body (in-plane) are dropped.
        min_volume_ml: smallest lung component, mL.
        min_relative_volume: smallest lung component as a fraction of the largest that passes the other rules.
        closing_mm: radius, mm, of the closing that takes in lesions at the lung's border.

    Returns:
        bool array of ``hu``'s shape; all False when no component qualifies (a volume without lung, such as an
        abdominal CT below the lung bases).

    Raises:
        ValueError: if ``hu`` is not 3D, ``spacing`` does not give three positive sizes, or ``axial`` is not an axis.
    """
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"lung_mask expects a 3D volume (X, Y, Z); got shape {hu.shape}.")
    spacing = [float(s) for s in spacing]
    if len(spacing) != 3 or not all(s > 0 for s in spacing):
        raise ValueError(f"lung_mask expects three positive voxel sizes in mm; got {spacing}.")
    if axial not in (-3, -2, -1, 0, 1, 2):
        raise ValueError(f"axial must be an axis of a 3D volume (0, 1 or 2); got {axial}.")
    axial %= 3
    cross = _inplane_cross(axial)

    tissue = hu > body_hu
    opened = ndimage.binary_opening(tissue, cross, iterations=_steps(table_mm, spacing, axial))
    body = ndimage.binary_fill_holes(_largest_component(opened), cross)  # in-plane structure: slice by slice
    if not body.any():
        return np.zeros(hu.shape, bool)

    air = (hu < air_hu) & body
    labels, n = ndimage.label(air)
    if n == 0:
        return np.zeros(hu.shape, bool)
    inner = ndimage.binary_erosion(body, cross, iterations=_steps(surface_mm, spacing, axial), border_value=1)
    sigma = [smoothing_mm / s for s in spacing]
    gas = ndimage.gaussian_filter(hu.astype(np.float32), sigma) < gas_hu

    count = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    size = count * float(np.prod(spacing)) / 1000.0  # mL
    at_surface = np.bincount(labels[body & ~inner], minlength=n + 1)[1:] > 0
    gas_fraction = np.bincount(labels[gas & air], minlength=n + 1)[1:] / np.maximum(count, 1)
    candidate = (~at_surface) & (gas_fraction <= max_gas_fraction) & (size >= min_volume_ml)
    if not candidate.any():
        return np.zeros(hu.shape, bool)
    keep = candidate & (size >= min_relative_volume * size[candidate].max())
    lung = np.isin(labels, 1 + np.flatnonzero(keep))

    lung = ndimage.binary_fill_holes(lung, cross)  # vessels, airway walls, lesions enclosed in-plane
    return _close_mm(lung, spacing, closing_mm) & body  # no filling after: the heart between two closed lungs stays out


def axial_axis(affine: np.ndarray | torch.Tensor) -> int:
    """The array axis that runs head to foot (``S`` or ``I``) in a voxel-to-world (RAS) affine ``(4, 4)``.

    Raises:
        ValueError: if no axis is closest to the head-foot direction (a degenerate affine).
    """
    codes = aff2axcodes(np.asarray(affine, dtype=float))
    for i, c in enumerate(codes):
        if c in ("S", "I"):
            return i
    raise ValueError(f"no array axis runs head to foot in the affine (axis codes {codes}).")


def _source(data: Mapping, key: Hashable) -> str:
    meta = getattr(data[key], "meta", {}) or {}
    return str(meta.get("filename_or_obj", f"<{key}>"))


class LungMaskd(MapTransform):
    """Add the lung mask (:func:`lung_mask`) of a CT volume in HU, and optionally the same mask grown by a margin.

    The slice axis and the voxel spacing come from the image's affine (``MetaTensor``), so any orientation works; a
    plain tensor is taken as 1 mm voxels with slices along the last axis. The mask is computed with SciPy on the CPU
    and put on the image's device as a ``MetaTensor`` with the image's affine.

    When no lung is found the mask is empty and a warning names the file: no lesion can then be found in it.

    Args:
        keys: CT image key(s), channel-first ``(1, X, Y, Z)`` in HU.
        mask_key: where to store the lung mask ``(1, X, Y, Z)`` (float 0/1, so that MONAI's crop and resize
            transforms take it like an image); with several keys, ``<key>_<mask_key>``.
        margin_key: where to store the mask grown by ``margin_mm`` (the region where lesions are kept); ``None``
            for none.
        margin_mm: that margin, mm.
        lung_kwargs: keyword arguments of :func:`lung_mask` (thresholds, sizes).

    Raises:
        ValueError: naming the file, if the image is not ``(1, X, Y, Z)``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str = "lung",
        margin_key: str | None = None,
        margin_mm: float = 5.0,
        lung_kwargs: Mapping | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key, self.margin_key, self.margin_mm = mask_key, margin_key, float(margin_mm)
        self.lung_kwargs = dict(lung_kwargs or {})

    def _out_key(self, key: Hashable, name: str) -> str:
        return name if len(self.keys) == 1 else f"{key}_{name}"

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img, src = d[key], _source(d, key)
            if img.ndim != 4 or img.shape[0] != 1:
                raise ValueError(f"{src}: '{key}' has shape {tuple(img.shape)}; the lung mask needs (1, X, Y, Z).")
            affine = getattr(img, "affine", None)
            if affine is None:
                spacing, axial = [1.0, 1.0, 1.0], 2
            else:
                affine = np.asarray(torch.as_tensor(affine).detach().cpu(), dtype=float)
                spacing, axial = affine_to_spacing(affine, r=3).tolist(), axial_axis(affine)
            hu = torch.as_tensor(img).detach().cpu().numpy()[0]
            lung = lung_mask(hu, spacing, axial, **self.lung_kwargs)
            if not lung.any():
                logger.warning("%s: no lung found in the volume (no air-and-tissue region inside the body); "
                               "the lung mask is empty, so no lesion will be marked in this volume.", src)
            masks = {self.mask_key: lung}
            if self.margin_key is not None:
                masks[self.margin_key] = dilate_mm(lung, spacing, self.margin_mm)
            device = torch.as_tensor(img).device
            for name, m in masks.items():
                t = torch.as_tensor(m[None], dtype=torch.float32, device=device)
                d[self._out_key(key, name)] = MetaTensor(t, meta=dict(img.meta)) if isinstance(img, MetaTensor) else t
        return d
