"""Full-size CT volumes through a volume bundle's CT inference (``python -m tools benchmark B --volume_shape X,Y,Z``).

The shipped sample CT is small (122x101x30 at 3 mm); a chest CT from a scanner is 512x512 with 200-400 slices. This
resamples a real CT volume of the repository (a bundle's ``sample_data/ct/*.nii.gz``, trilinear, the field of view
kept, so the voxels shrink to about 0.7 x 0.6 x 0.3 mm at 512x512x300) into a volume of the asked shape, int16 HU, and
runs the bundle's own CT configuration on it as a user would: ``python -m monai.bundle run`` in a child process
(``configs/inference.json``, with ``configs/inference_ct.json`` merged over it where the bundle has one), whose
progress bar (MONAI's ``SliceInferer`` ``progress``) is passed through to the terminal. Reported: the child's wall
time (start-up and model loading included), seconds per slice, its peak resident memory (``RUSAGE_CHILDREN``
``ru_maxrss``), the device, and that the written mask has the volume's shape.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from tools.io import atomic_write_text

__all__ = ["VolumeBenchmarkError", "full_size_ct", "benchmark_volume"]


class VolumeBenchmarkError(RuntimeError):
    """A bundle without a volume configuration, no CT to resample, or a run that failed or wrote a wrong mask."""


def _source_ct(bundle: Path) -> Path:
    for folder in (bundle, *sorted(p for p in bundle.parent.iterdir() if p.is_dir())):
        found = sorted((folder / "sample_data" / "ct").glob("*.nii.gz"))
        if found:
            return found[0]
    raise VolumeBenchmarkError(f"{bundle}: no sample_data/ct/*.nii.gz in it or beside it to resample.")


def full_size_ct(source: str | Path, shape: Sequence[int], output: str | Path) -> Path:
    """Resample the CT ``source`` (NIfTI, HU) to ``shape`` voxels (trilinear; the affine's voxel size scaled so that
    the field of view is kept) and write it as int16 NIfTI to ``output``.

    Raises:
        VolumeBenchmarkError: for a shape that is not three positive sizes.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise VolumeBenchmarkError(f"volume_shape must be three positive sizes, got {shape}.")
    img = nib.load(str(source))
    data = torch.from_numpy(np.asarray(img.dataobj, dtype=np.float32))[None, None]
    big = torch.nn.functional.interpolate(data, size=shape, mode="trilinear", align_corners=False)[0, 0]
    scale = np.array(img.shape[:3], dtype=float) / np.array(shape, dtype=float)
    affine = img.affine.copy()
    affine[:3, :3] = img.affine[:3, :3] * scale  # each column: one voxel step along that axis
    affine[:3, 3] = img.affine[:3, :3] @ ((scale - 1) / 2) + img.affine[:3, 3]  # the same box corner
    out = nib.Nifti1Image(big.round().clamp(-32768, 32767).to(torch.int16).numpy(), affine)
    out.header.set_xyzt_units("mm")
    nib.save(out, str(output))
    return Path(output)


def benchmark_volume(bundle_dir: str | Path, volume_shape: Sequence[int] = (512, 512, 300),
                     output_json: str | Path | None = None) -> dict:
    """Time the bundle's CT inference on a full-size volume (module docstring); write and return the results.

    Raises:
        VolumeBenchmarkError: for a bundle that takes no volumes, a failed run, or a mask of another shape.
    """
    bundle = Path(bundle_dir).resolve()
    configs = [bundle / "configs" / "inference.json"]
    if (bundle / "configs" / "inference_ct.json").is_file():
        configs.append(bundle / "configs" / "inference_ct.json")
    if len(configs) == 1 and "preprocessing_3d" not in json.loads(configs[0].read_text()):
        raise VolumeBenchmarkError(f"{bundle}: it takes no CT volumes (no configs/inference_ct.json, no "
                                   "preprocessing_3d in configs/inference.json).")
    shape = tuple(int(s) for s in volume_shape)
    with tempfile.TemporaryDirectory() as tmp:
        source = _source_ct(bundle)
        volume = full_size_ct(source, shape, Path(tmp) / "full_size_ct.nii")  # gzip of 150 MB: slower than the run
        cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", json.dumps([str(c) for c in configs]),
               "--logging_file", str(bundle / "configs" / "logging.conf"), "--bundle_root", str(bundle),
               "--input", str(volume), "--output_dir", str(Path(tmp) / "out")]
        start = time.perf_counter()
        res = subprocess.run(cmd, stdout=sys.stderr, stderr=None, check=False)  # the progress bar reaches the user
        seconds = time.perf_counter() - start
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if res.returncode != 0:
            raise VolumeBenchmarkError(f"{bundle}: inference on {shape} failed (exit {res.returncode}): {' '.join(cmd)}")
        masks = list((Path(tmp) / "out").glob("full_size_ct*mask*.nii*"))
        if len(masks) != 1 or nib.load(str(masks[0])).shape[:3] != shape:
            raise VolumeBenchmarkError(f"{bundle}: expected one mask of shape {shape}, got "
                                       f"{[nib.load(str(m)).shape for m in masks]}.")
        spacing = [round(float(v), 3) for v in nib.load(str(volume)).header.get_zooms()[:3]]
    result = {
        "bundle": bundle.name, "configs": [c.name for c in configs], "volume_shape": list(shape),
        "voxel_mm": spacing, "source": source.name,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
        "seconds_wall": round(seconds, 1), "seconds_per_slice": round(seconds / shape[2], 4),
        "peak_memory_mib": round(peak_mib, 1), "peak_memory_kind": "child_process_max_rss",
        "mask_shape": list(shape),
    }
    out = Path(output_json) if output_json else bundle / "benchmark_volume.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    return result
