"""DICOM Segmentation objects (DICOM PS3.3 A.51 Segmentation IOD) of a volume's mask, for inputs read from a DICOM
series: the ``output_format: "dicom_seg"`` of the volume bundles' inference, written beside the NIfTI mask.

A SEG of binary segmentation type holds one segment per foreground class of the bundle (``channel_def`` of its
metadata's ``pred`` output but 0; segments numbered 1, 2, ... in class order, as the IOD requires) with coded terms
(the config's ``dicom_seg#segments``), in the source series' study and frame of reference, with one frame per source
slice that holds foreground and, per frame, the source instance it was derived from (SOP Instance UID) and that
slice's position and orientation.

Why highdicom rather than our own code: a valid SEG needs the IOD's modules, the per-frame functional groups, the
dimension index, the bit-packed frames and the coded-concept rules right; highdicom is a well-kept library written
for exactly this (by the Imaging Data Commons developers) that keeps them correct as the standard moves, so that only
the mapping of the mask onto the source slices is ours. The code uses only the API that highdicom 0.22 (the release
for pydicom 2, which the MONAI Label extra pins; it needs numpy < 2) and later releases share; the tests pass with
0.22.0 (pydicom 2.4.4, numpy 1.26) and 0.28.2 (pydicom 3.0.2, numpy 2.4).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data.folder_layout import FolderLayout
from monai.transforms import MapTransform

from tools.errors import InputError, OutputError
from tools.io import atomic_path
from tools.options import as_flag

__all__ = [
    "OUTPUT_FORMATS",
    "SEG_POSTFIX",
    "check_output_format",
    "seg_path",
    "check_seg_outputs",
    "dicom_seg_refusal",
    "read_source_series",
    "frames_on_source_slices",
    "write_dicom_seg",
    "SaveDicomSegd",
]

logger = logging.getLogger(__name__)

OUTPUT_FORMATS = ("nifti", "dicom_seg")
SEG_POSTFIX = "seg"
_TOLERANCE = 0.05  # voxels: how far a source pixel may lie from a mask voxel centre (float32 affines, rounding)


def check_output_format(value: Any) -> str:
    """The ``output_format`` option (``"nifti"``, the default, or ``"dicom_seg"``).

    Raises:
        ValueError: for another value.
    """
    fmt = "nifti" if value is None else str(value).strip().lower()
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"--output_format must be one of {', '.join(OUTPUT_FORMATS)}, got {value!r}.")
    return fmt


def seg_path(input_path: str | Path, output_dir: str | Path) -> Path:
    """The SEG file written for ``input_path``: ``output_dir/<input name>_seg.dcm`` (beside ``<name>_mask.nii.gz``)."""
    layout = FolderLayout(str(output_dir), postfix=SEG_POSTFIX, extension=".dcm", parent=False, makedirs=False)
    return Path(layout.filename(subject=str(input_path)))


def _series_files(folder: Path) -> list[Path]:
    from tools.data import is_dicom

    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.name.upper() != "DICOMDIR" and is_dicom(p))


def check_seg_outputs(inputs: Sequence[str | Path], output_dir: str | Path, overwrite: bool = False) -> list[str]:
    """Before an inference run with ``output_format`` ``"dicom_seg"``: the inputs that can get no SEG, each with why
    (:func:`dicom_seg_refusal`; their masks are still written), after refusing SEG files that exist.

    Raises:
        OutputError: if a SEG file of an input exists and not ``overwrite`` (nothing is written).
    """
    refusals = {str(src): dicom_seg_refusal(src) for src in inputs}
    existing = [str(seg_path(src, output_dir)) for src, why in refusals.items()
                if why is None and seg_path(src, output_dir).exists()]
    if existing and not overwrite:
        raise OutputError(f"{len(existing)} DICOM SEG file(s) exist already (an earlier run?): "
                          f"{', '.join(existing[:5])}{' ...' if len(existing) > 5 else ''}. Pass --overwrite true to "
                          "replace them, or give another --output_dir; nothing was written.")
    return [why for why in refusals.values() if why]


def dicom_seg_refusal(input_path: str | Path) -> str | None:
    """Why no SEG can be made for ``input_path``, or None when it is a folder holding a DICOM series whose headers
    carry what a SEG refers to (:func:`read_source_series`).

    A SEG refers to the source DICOM instances (their UIDs, study, frame of reference and slice geometry), which a
    NIfTI file or a 2D image do not carry, a lone DICOM file does not carry whole (give its series' folder), and an
    anonymised series may have lost (blank Study Instance UID).
    """
    p = Path(input_path)
    if p.is_dir():
        try:
            read_source_series(p)
            return None
        except InputError as e:
            return f"{p}: no DICOM SEG written: {e}"
    from tools.data import is_dicom

    what = ("a single DICOM file, not the folder of its series" if p.is_file() and is_dicom(p)
            else "not a DICOM series (a NIfTI file or a 2D image)")
    return (f"{p}: no DICOM SEG written: a DICOM SEG is built from the source DICOM instances (their UIDs, study, "
            f"frame of reference and slice positions) and this input is {what}; give the folder of the DICOM series, "
            "or use --output_format nifti.")


_REQUIRED = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "ImagePositionPatient",
             "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")


def read_source_series(folder: str | Path) -> list:
    """The headers (pydicom datasets, pixel data not read) of the single-frame images of a DICOM series folder; an
    empty SOP Class or Instance UID (blanked by some anonymisers) is taken from the file meta (Media Storage SOP
    Class/Instance UID, the same UIDs by PS3.10), in memory only.

    Raises:
        InputError: naming the folder when it holds no DICOM file, or the file that is multi-frame (not supported
            here) or lacks what a SEG must refer to (Study, Series, SOP and Frame of Reference UIDs, the slice
            geometry).
    """
    import pydicom

    folder = Path(folder)
    files = _series_files(folder) if folder.is_dir() else []
    if not files:
        raise InputError(f"{folder}: holds no DICOM file; a DICOM SEG needs the source series.")
    out = [pydicom.dcmread(str(f), stop_before_pixels=True) for f in files]
    for f, ds in zip(files, out):
        if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
            raise InputError(f"{f}: a multi-frame image; DICOM SEG output takes series of single-frame images.")
        for key in ("SOPClassUID", "SOPInstanceUID"):  # blanked by some anonymisers; the file meta keeps them
            if not str(getattr(ds, key, "") or ""):
                setattr(ds, key, str(getattr(getattr(ds, "file_meta", None), f"MediaStorage{key}", "") or ""))
        missing = [key for key in ("SOPClassUID", "SOPInstanceUID", *_REQUIRED) if ds.get(key) in (None, "")]
        if missing:
            raise InputError(f"{f}: has no {', '.join(missing)} (blank or absent, e.g. removed by anonymisation); a "
                             "DICOM SEG belongs to its source's study and frame of reference and refers to each "
                             "source instance.")
    return out


def frames_on_source_slices(mask: np.ndarray, affine: np.ndarray, sources: Sequence, space: str = "RAS") -> np.ndarray:
    """The mask's pixels on each source slice, as the SEG's frames are laid out (source image ``k``: its rows and
    columns).

    Each source pixel (row ``j``, column ``i``) lies at ``ImagePositionPatient + i * PixelSpacing[1] * row direction
    + j * PixelSpacing[0] * column direction`` (DICOM PS3.3 C.7.6.2.1.1, patient coordinates LPS); the mask voxel at
    that point is found through ``affine`` (whatever the mask's axis order and orientation), and must be a voxel
    centre: the mask is on the source's grid (the bundles invert their resampling before writing).

    Args:
        mask: ``(H, W, D)`` or ``(1, H, W, D)`` labels.
        affine: ``(4, 4)`` voxel -> world of ``mask`` (MONAI's and NIfTI's ``RAS``, or ``LPS``: ``space``).
        sources: the source images' headers (:func:`read_source_series`).
        space: ``"RAS"`` or ``"LPS"``, the world coordinates of ``affine``.

    Returns:
        ``(len(sources), Rows, Columns)`` of ``mask``'s dtype.

    Raises:
        ValueError: if a source pixel does not fall on a mask voxel centre inside the mask.
    """
    mask = np.asarray(mask)
    if mask.ndim == 4:
        mask = mask[0]
    if mask.ndim != 3:
        raise ValueError(f"mask must be (1, H, W, D) or (H, W, D), got shape {mask.shape}.")
    to_world = np.diag([-1.0, -1.0, 1.0]) if str(space).upper() == "RAS" else np.eye(3)
    inv = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    frames = np.zeros((len(sources), int(sources[0].Rows), int(sources[0].Columns)), dtype=mask.dtype)
    for k, ds in enumerate(sources):
        rows, cols = int(ds.Rows), int(ds.Columns)
        iop = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
        d_row, d_col = (float(v) for v in ds.PixelSpacing)  # spacing between rows, between columns
        origin = inv[:3, :3] @ (to_world @ np.asarray(ds.ImagePositionPatient, dtype=np.float64)) + inv[:3, 3]
        step_i = inv[:3, :3] @ (to_world @ (iop[:3] * d_col))  # one column to the right
        step_j = inv[:3, :3] @ (to_world @ (iop[3:] * d_row))  # one row down
        corners = np.stack([origin + a * (cols - 1) * step_i + b * (rows - 1) * step_j
                            for a in (0, 1) for b in (0, 1)])
        off = np.abs(corners - np.rint(corners)).max()
        if off > _TOLERANCE or (np.rint(corners) < 0).any() or (np.rint(corners) >= np.asarray(mask.shape)).any():
            raise ValueError(
                f"source slice {getattr(ds, 'SOPInstanceUID', k)} does not lie on the mask's voxel grid (corners at "
                f"voxels {np.round(corners, 2).tolist()} of a mask of shape {mask.shape}); the mask must be on the "
                "source series' grid.")
        jj, ii = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        idx = np.rint(origin[:, None, None] + ii[None] * step_i[:, None, None] + jj[None] * step_j[:, None, None])
        idx = idx.astype(np.int64)
        frames[k] = mask[idx[0], idx[1], idx[2]]
    return frames


def _code(term: Mapping | Any):  # type: ignore[no-untyped-def]
    from highdicom.sr import CodedConcept

    if isinstance(term, Mapping):
        return CodedConcept(value=str(term["value"]), scheme_designator=str(term["scheme"]),
                            meaning=str(term["meaning"]))
    return term  # a pydicom Code or highdicom CodedConcept already


def _segment_descriptions(classes: Mapping[int, str], segments: Mapping, algorithm):  # type: ignore[no-untyped-def]
    import highdicom as hd

    out = []
    for value, label in sorted(classes.items()):
        terms = segments.get(str(value), segments.get(value)) if segments else None
        if not terms:
            raise ValueError(f"dicom_seg#segments has no coded terms for class {value} ({label!r}); give its "
                             "'category', 'type' and optionally 'anatomic_region' as {value, scheme, meaning}.")
        region = terms.get("anatomic_region")
        out.append(hd.seg.SegmentDescription(
            segment_number=len(out) + 1, segment_label=str(label)[:64],
            segmented_property_category=_code(terms["category"]), segmented_property_type=_code(terms["type"]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
            anatomic_regions=[_code(region)] if region else None))
    return out


def _bundle_classes(metadata: Mapping) -> dict[int, str]:
    """Foreground classes ``{value: name}`` of a bundle: its ``pred`` output's ``channel_def`` but 0."""
    channel_def = metadata.get("network_data_format", {}).get("outputs", {}).get("pred", {}).get("channel_def", {})
    classes = {int(k): str(v) for k, v in channel_def.items() if int(k) != 0}
    return classes or {1: "foreground"}


def write_dicom_seg(mask: np.ndarray, affine: np.ndarray, source_folder: str | Path, path: str | Path,
                    metadata: Mapping, segments: Mapping, space: str = "RAS", overwrite: bool = False) -> Path:
    """Write the SEG of ``mask`` (labels on the grid of the DICOM series in ``source_folder``) to ``path``, whole or
    not at all (:func:`tools.io.atomic_path`).

    Args:
        mask: ``(1, H, W, D)`` labels (0 background, ``k`` the bundle's class ``k``), with ``affine`` (``space``).
        source_folder: the DICOM series the mask was segmented from.
        path: the ``.dcm`` file to write.
        metadata: the bundle's ``metadata.json`` (classes from ``channel_def``; algorithm name and version).
        segments: coded terms per class value, ``{"1": {"category": {value, scheme, meaning}, "type": ...,
            "anatomic_region": ...}}`` (e.g. SNOMED CT codes of ``pydicom.sr.codedict.codes.SCT``).
        overwrite: replace an existing ``path`` (else :class:`tools.errors.OutputError`).

    Returns:
        ``path``.

    Raises:
        InputError: if ``source_folder`` holds no DICOM series (:func:`read_source_series`).
        ValueError: if the mask is not on the series' grid (:func:`frames_on_source_slices`) or a class has no terms.
        OutputError: if ``path`` exists and not ``overwrite``.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sources = read_source_series(source_folder)
    frames = frames_on_source_slices(mask, affine, sources, space)
    classes = _bundle_classes(metadata)
    pixels = np.stack([frames == value for value in sorted(classes)], axis=-1)  # (frames, rows, cols, segments)
    algorithm = hd.AlgorithmIdentificationSequence(name=str(metadata.get("name", "seg-bundles"))[:64],
                                                   family=codes.cid7162.ArtificialIntelligence,
                                                   version=str(metadata.get("version", "0")))
    series_number = int(getattr(sources[0], "SeriesNumber", 0) or 0) + 1000
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segment_descriptions(classes, segments, algorithm),
        series_instance_uid=hd.UID(), series_number=series_number, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="seg-bundles", manufacturer_model_name=str(metadata.get("name", "seg-bundles"))[:64],
        software_versions=str(metadata.get("version", "0")), device_serial_number="0",
        content_label="SEGMENTATION", content_description=str(metadata.get("name", ""))[:64] or None,
        series_description=f"{metadata.get('name', 'segmentation')}"[:64],
        omit_empty_frames=True,  # frames without foreground are left out (highdicom keeps them all when all are empty)
    )
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        seg.save_as(str(tmp))
    logger.info("wrote %s", path)
    return path


class SaveDicomSegd(MapTransform):
    """Write the DICOM SEG of ``key`` (``(1, H, W, D)`` labels, a MetaTensor on the input's grid, as the NIfTI mask)
    for an input read from a DICOM series folder, as :func:`seg_path` (``<output_dir>/<name>_seg.dcm``), whole or not
    at all (:func:`write_dicom_seg`).

    An input that is not a DICOM series folder (:func:`dicom_seg_refusal`) gets no SEG: a warning is logged and the
    item passes unchanged (its NIfTI mask is written by the step before); :func:`tools.runner.run_inference` raises
    an :class:`tools.errors.InputError` naming such inputs after the run.

    Args:
        keys: the mask key (``"pred"``).
        output_dir: the masks' folder.
        metadata_file: the bundle's ``configs/metadata.json``.
        segments: coded terms per class value (:func:`write_dicom_seg`).
        overwrite: replace an existing SEG file (else :class:`tools.errors.OutputError`).
    """

    def __init__(self, keys, output_dir: str, metadata_file: str, segments: Mapping,  # type: ignore[no-untyped-def]
                 overwrite: Any = False, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir = str(output_dir)
        self.metadata = json.loads(Path(metadata_file).read_text())
        self.segments = dict(segments or {})
        self.overwrite = as_flag(overwrite, "overwrite")

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            meta = getattr(value, "meta", {}) or {}
            source = meta.get("filename_or_obj")
            if not source or not Path(str(source)).is_dir():
                logger.warning(dicom_seg_refusal(source) if source else f"<{key}>: no source known; no DICOM SEG.")
                continue
            mask = torch.as_tensor(value).detach().cpu().numpy().astype(np.uint8)
            try:
                write_dicom_seg(mask, np.asarray(torch.as_tensor(value.affine).cpu()), source,
                                seg_path(source, self.output_dir), self.metadata, self.segments,
                                str(meta.get("space", "RAS")), self.overwrite)
            except InputError as e:  # the series lacks what a SEG refers to: its NIfTI mask stands alone
                logger.warning("%s: no DICOM SEG written: %s", source, e)
            except OutputError:
                raise
            except ValueError as e:
                raise ValueError(f"{source}: DICOM SEG not written: {e}") from e
        return d
