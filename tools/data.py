"""Datalists and splits built from the datasets' own folder layouts.

Every function returns MONAI-style datalists: lists of ``{"image": path, "label": path}`` dicts that
``monai.data.Dataset`` and the bundles' ``LoadImaged`` take directly (:func:`ma_covid_datalist` adds ``"lung"``).
"""

from __future__ import annotations

import random
from pathlib import Path

__all__ = [
    "IMAGE_EXTENSIONS",
    "VOLUME_EXTENSIONS",
    "infnet_datalist",
    "split_datalist",
    "input_kind",
    "inference_datalist",
    "MA_COVID_FOLDERS",
    "ma_covid_datalist",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
VOLUME_EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")
# Inf-Net's release nests its folders under the dataset root; accept the root or the Doctor-label folder.
_INFNET_SUBDIR = Path("TrainingSet/LungInfection-Train/Doctor-label")
# Ma et al.'s COVID-19-CT-Seg release (Zenodo 3757476): CT volumes, infection masks, lung masks.
MA_COVID_FOLDERS = ("COVID-19-CT-Seg_20cases", "Infection_Mask", "Lung_Mask")
_NIFTI_EXTENSIONS = (".nii.gz", ".nii")


def _natural_key(path: Path) -> tuple:
    stem = path.name.split(".")[0]
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)


def _has_ext(path: Path, exts: tuple[str, ...]) -> bool:
    return path.name.lower().endswith(exts)


def infnet_datalist(dataset_dir: str | Path, image_dir: str = "Imgs", label_dir: str = "GT") -> list[dict]:
    """Pair ``Imgs/<name>.jpg`` with ``GT/<name>.png`` in the Inf-Net folder layout.

    Args:
        dataset_dir: a folder holding ``Imgs/`` and ``GT/`` (Inf-Net's ``Doctor-label`` folder, its ``TestingSet``
            folder, or a folder you make in that layout), or the dataset root that holds
            ``TrainingSet/LungInfection-Train/Doctor-label``.
        image_dir: name of the image folder.
        label_dir: name of the mask folder; masks pair with images by file stem, any image extension.

    Returns:
        ``[{"image": str, "label": str}, ...]`` sorted by the numeric file stem.

    Raises:
        FileNotFoundError: if the folders are missing or hold no images, naming the folder.
        ValueError: if an image has no mask, naming the image.
    """
    root = Path(dataset_dir).expanduser()
    if not (root / image_dir).is_dir() and (root / _INFNET_SUBDIR / image_dir).is_dir():
        root = root / _INFNET_SUBDIR
    img_root, lbl_root = root / image_dir, root / label_dir
    for folder in (img_root, lbl_root):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is not a folder: expected the Inf-Net layout '{image_dir}/' + '{label_dir}/'.")
    images = sorted((p for p in img_root.iterdir() if _has_ext(p, IMAGE_EXTENSIONS)), key=_natural_key)
    if not images:
        raise FileNotFoundError(f"{img_root} holds no images with extensions {IMAGE_EXTENSIONS}.")
    labels = {p.name.split(".")[0]: p for p in lbl_root.iterdir() if _has_ext(p, IMAGE_EXTENSIONS)}
    datalist = []
    for image in images:
        label = labels.get(image.name.split(".")[0])
        if label is None:
            raise ValueError(f"{image} has no mask with the same name in {lbl_root}.")
        datalist.append({"image": str(image), "label": str(label)})
    return datalist


def split_datalist(datalist: list[dict], n_val: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Split a datalist into ``(train, validation)`` with a seeded shuffle, reproducibly.

    The order of ``datalist`` is normalised (sorted by image path) before shuffling, so the split depends only
    on the file names and the seed. The Inf-Net COVID-19 bundles use ``n_val=5, seed=0``: 45 + 5 of the 50
    training slices.

    Raises:
        ValueError: if ``n_val`` is not in ``[1, len(datalist) - 1]``.
    """
    if not 0 < n_val < len(datalist):
        raise ValueError(f"n_val must be between 1 and {len(datalist) - 1} for {len(datalist)} items, got {n_val}.")
    items = sorted(datalist, key=lambda d: d["image"])
    random.Random(seed).shuffle(items)
    return items[n_val:], items[:n_val]


def _is_dicom(path: Path) -> bool:
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
        if _has_ext(p, VOLUME_EXTENSIONS) or _is_dicom(p):
            return "volume"
        if _has_ext(p, IMAGE_EXTENSIONS):
            return "image2d"
        raise ValueError(f"{p}: unknown file type; expected a 2D image {IMAGE_EXTENSIONS} or a volume {VOLUME_EXTENSIONS}.")
    files = [f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")]
    n_dicom = sum(_is_dicom(f) for f in files)
    n_images = sum(_has_ext(f, IMAGE_EXTENSIONS) for f in files)
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
        return [{"image": str(f)} for f in sorted(p.iterdir(), key=_natural_key) if _has_ext(f, IMAGE_EXTENSIONS)]
    return [{"image": str(p)}]


def _nifti_case(path: Path) -> str | None:
    """Case name of a NIfTI file (``coronacases_001.nii.gz`` -> ``coronacases_001``), None for other files."""
    for ext in _NIFTI_EXTENSIONS:
        if path.name.lower().endswith(ext) and not path.name.startswith("."):
            return path.name[: -len(ext)]
    return None


def ma_covid_datalist(
    dataset_dir: str | Path,
    image_dir: str = MA_COVID_FOLDERS[0],
    label_dir: str = MA_COVID_FOLDERS[1],
    lung_dir: str = MA_COVID_FOLDERS[2],
) -> list[dict]:
    """Pair the CT volumes of Ma et al.'s COVID-19-CT-Seg dataset with their infection and lung masks.

    Layout (as released on Zenodo, record 3757476; Ma et al., Med. Phys. 2021)::

        dataset_dir/COVID-19-CT-Seg_20cases/<case>.nii.gz   CT volume in HU
        dataset_dir/Infection_Mask/<case>.nii.gz            infection mask (0/1)
        dataset_dir/Lung_Mask/<case>.nii.gz                 lung mask (0 = outside, 1/2 = left/right lung)

    Files pair by case name (the file name without ``.nii.gz``/``.nii``; the extensions may differ between folders).
    Masks without a CT volume are ignored. Each item is one whole volume, so a split of this datalist
    (:func:`split_datalist`) is a split by case: slices of one case never fall in both parts.

    Args:
        dataset_dir: the folder holding the three folders.
        image_dir: name of the CT volume folder.
        label_dir: name of the infection mask folder.
        lung_dir: name of the lung mask folder.

    Returns:
        ``[{"image": str, "label": str, "lung": str}, ...]`` sorted by case name.

    Raises:
        FileNotFoundError: if one of the three folders is missing, or the volume folder holds no NIfTI file,
            naming the folder.
        ValueError: if a CT volume has no infection or no lung mask of the same case name, naming the volume and
            the folder searched.
    """
    root = Path(dataset_dir).expanduser()
    folders = {key: root / name for key, name in (("image", image_dir), ("label", label_dir), ("lung", lung_dir))}
    for folder in folders.values():
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder} is not a folder: expected Ma et al.'s COVID-19-CT-Seg layout "
                f"'{image_dir}/', '{label_dir}/', '{lung_dir}/' (NIfTI volumes with the same names) in {root}."
            )
    cases = {}
    for key, folder in folders.items():
        cases[key] = {name: p for p in folder.iterdir() if p.is_file() and (name := _nifti_case(p)) is not None}
    if not cases["image"]:
        raise FileNotFoundError(f"{folders['image']} holds no NIfTI volumes ({', '.join(_NIFTI_EXTENSIONS)}).")
    datalist = []
    for name in sorted(cases["image"]):
        item = {"image": str(cases["image"][name])}
        for key in ("label", "lung"):
            mask = cases[key].get(name)
            if mask is None:
                raise ValueError(
                    f"{cases['image'][name]} has no {'infection' if key == 'label' else 'lung'} mask "
                    f"'{name}.nii.gz' in {folders[key]}."
                )
            item[key] = str(mask)
        datalist.append(item)
    return datalist
