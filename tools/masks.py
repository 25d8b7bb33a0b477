"""Writing binary masks, whole or not at all: PNG (0/255) for 2D inputs, NIfTI (0/1) for volumes, named after the
input (every bundle's inference writes through :func:`mask_saver`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from monai.data.folder_layout import FolderLayout
from monai.transforms import SaveImaged

from tools.io import AtomicNibabelWriter, AtomicPILWriter
from tools.options import as_flag

__all__ = ["MASK_POSTFIX", "mask_path", "mask_saver"]

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
