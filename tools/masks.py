"""Writing binary masks, whole or not at all: PNG (0/255) for 2D inputs, NIfTI (0/1) for volumes, named after the
input (every bundle's inference writes through :func:`mask_saver`), and with ``output_format: "dicom_seg"`` a DICOM
SEG beside the NIfTI mask of a DICOM series (:func:`mask_writers`, :mod:`tools.dicom_seg`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from monai.data.folder_layout import FolderLayout
from monai.transforms import SaveImaged

from tools.dicom_seg import SaveDicomSegd, check_output_format
from tools.io import AtomicNibabelWriter, AtomicPILWriter
from tools.options import as_flag

__all__ = ["MASK_POSTFIX", "mask_path", "mask_saver", "mask_writers"]

MASK_POSTFIX = "mask"


def _mask_ext(volume: bool) -> str:
    return ".nii.gz" if volume else ".png"


def mask_path(input_path: str | Path, output_dir: str | Path, volume: bool) -> Path:
    """The file :func:`mask_saver` writes for ``input_path``: ``output_dir/<input name without extension>_mask.png``
    (``.nii.gz`` for volumes; a DICOM folder's name is kept whole). Two inputs that differ only in extension
    (``7.jpg``, ``7.png``) have the same mask path; :func:`tools.runner.check_mask_outputs` refuses them."""
    layout = FolderLayout(str(output_dir), postfix=MASK_POSTFIX, extension=_mask_ext(volume), parent=False,
                          makedirs=False)
    return Path(layout.filename(subject=str(input_path)))


def mask_saver(output_dir: str, volume: bool, key: str = "pred", overwrite: bool = False) -> SaveImaged:
    """Write binary masks whole or not at all: NIfTI (0/1, uint8, the input's affine) for volumes, PNG (0/255)
    for slices, at :func:`mask_path`. An existing file is replaced only with ``overwrite`` (else writing raises
    :class:`tools.errors.OutputError`; :func:`tools.runner.run_inference` refuses the run before the model runs)."""
    common = dict(keys=key, output_dir=output_dir, output_postfix=MASK_POSTFIX, output_dtype=np.uint8,
                  resample=False, separate_folder=False, output_ext=_mask_ext(volume))
    if volume:
        saver = SaveImaged(writer=AtomicNibabelWriter, **common)
    else:
        saver = SaveImaged(writer=AtomicPILWriter, scale=255, **common)
    return saver.set_options(write_kwargs={"overwrite": as_flag(overwrite, "overwrite")})


def mask_writers(output_dir: str, volume: bool, key: str = "pred", overwrite: bool = False,
                 output_format: str = "nifti", dicom_seg: Mapping | None = None) -> list:
    """The writing steps of a bundle's post-processing: :func:`mask_saver` and, with ``output_format`` ``"dicom_seg"``,
    :class:`tools.dicom_seg.SaveDicomSegd` after it (the NIfTI mask is written first and kept whatever the SEG's
    fate; slices and inputs that are not DICOM series get no SEG, :func:`tools.runner.run_inference` names them).

    Args:
        output_format: ``"nifti"`` (the default) or ``"dicom_seg"``.
        dicom_seg: the config's ``dicom_seg``: ``{"metadata_file": ..., "segments": {class value: coded terms}}``.

    Raises:
        ValueError: for another ``output_format``, or ``"dicom_seg"`` without ``dicom_seg``.
    """
    out = [mask_saver(output_dir, volume=volume, key=key, overwrite=overwrite)]
    if check_output_format(output_format) == "dicom_seg":
        if not dicom_seg:
            raise ValueError("output_format dicom_seg needs the config's dicom_seg (metadata_file, segments).")
        out.append(SaveDicomSegd(keys=key, output_dir=output_dir, metadata_file=dicom_seg["metadata_file"],
                                 segments=dicom_seg["segments"], overwrite=overwrite))
    return out
