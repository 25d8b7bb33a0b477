"""What an inference input is (2D image, folder of images, volume file, DICOM series) and its datalist."""

from __future__ import annotations

from pathlib import Path

from tools.data.files import IMAGE_EXTENSIONS, VOLUME_EXTENSIONS, has_ext, natural_key

__all__ = ["is_dicom", "input_kind", "inference_datalist", "by_input_kind"]


def is_dicom(path: Path) -> bool:
    """Whether ``path`` is a DICOM file: it ends in ``.dcm`` or carries the ``DICM`` preamble."""
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def input_kind(path: str | Path) -> str:
    """What an inference input is: ``"image2d"`` (a 2D image or a folder of them) or ``"volume"``.

    A volume is a NIfTI/NRRD/MetaImage file or a folder holding one DICOM series (files ending in ``.dcm`` or
    carrying the ``DICM`` preamble).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if it is neither a known image/volume file nor a folder of 2D images or DICOM files,
            or a folder that mixes them.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"inference input {p} does not exist.")
    if p.is_file():
        if has_ext(p, VOLUME_EXTENSIONS) or is_dicom(p):
            return "volume"
        if has_ext(p, IMAGE_EXTENSIONS):
            return "image2d"
        raise ValueError(f"{p}: unknown file type; expected a 2D image {IMAGE_EXTENSIONS} or a volume {VOLUME_EXTENSIONS}.")
    files = [f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")]
    n_dicom = sum(is_dicom(f) for f in files)
    n_images = sum(has_ext(f, IMAGE_EXTENSIONS) for f in files)
    if n_dicom and n_images:
        raise ValueError(f"{p} mixes DICOM files and 2D images; give one DICOM series or a folder of images.")
    if n_dicom:
        return "volume"
    if n_images:
        return "image2d"
    raise ValueError(f"{p} holds neither 2D images {IMAGE_EXTENSIONS} nor a DICOM series.")


def inference_datalist(path: str | Path) -> list[dict]:
    """Datalist ``[{"image": ...}]`` for an inference input (see :func:`input_kind`).

    A folder of 2D images gives one item per image (sorted); a DICOM folder gives one item, the folder, which
    MONAI's ``ITKReader`` reads as a series; a volume or image file gives one item.
    """
    p = Path(path).expanduser()
    kind = input_kind(p)
    if p.is_dir() and kind == "image2d":
        return [{"image": str(f)} for f in sorted(p.iterdir(), key=natural_key) if has_ext(f, IMAGE_EXTENSIONS)]
    return [{"image": str(p)}]


def by_input_kind(input: str | Path, slices, volume):  # noqa: A002 - the bundles' config key
    """``volume`` when ``input`` is a CT volume (a NIfTI file or a DICOM-series folder, :func:`input_kind`), else
    ``slices`` (a 2D image or a folder of them): the one place a bundle's inference chooses its volume path (its
    pre-processing, inferer and post-processing are each chosen with this)."""
    return volume if input_kind(input) == "volume" else slices
