"""Datalists and splits built from the datasets' own folder layouts.

Every function returns MONAI-style datalists: lists of ``{"image": path, "label": path}`` dicts that
``monai.data.Dataset`` and the bundles' ``LoadImaged`` take directly (:func:`ma_covid_datalist` adds ``"lung"``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "IMAGE_EXTENSIONS",
    "VOLUME_EXTENSIONS",
    "infnet_datalist",
    "split_datalist",
    "is_dicom",
    "input_kind",
    "inference_datalist",
    "MA_COVID_FOLDERS",
    "ma_covid_datalist",
    "MASK_SUFFIXES",
    "paired_datalist",
    "ISIC2018_FOLDERS",
    "isic2018_datalist",
    "skin_lesion_datalist",
    "contiguous_split",
    "CVC_CLINICDB_CLIPS",
    "clip_split",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
VOLUME_EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")
# Inf-Net's release nests its folders under the dataset root; accept the root or the Doctor-label folder.
_INFNET_SUBDIR = Path("TrainingSet/LungInfection-Train/Doctor-label")
# Ma et al.'s COVID-19-CT-Seg release (Zenodo 3757476): CT volumes, infection masks, lung masks.
MA_COVID_FOLDERS = ("COVID-19-CT-Seg_20cases", "Infection_Mask", "Lung_Mask")
_NIFTI_EXTENSIONS = (".nii.gz", ".nii")


def _natural_key(path: Path) -> tuple:
    return _natural_name_key(path.name)


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
        if _has_ext(p, VOLUME_EXTENSIONS) or is_dicom(p):
            return "volume"
        if _has_ext(p, IMAGE_EXTENSIONS):
            return "image2d"
        raise ValueError(f"{p}: unknown file type; expected a 2D image {IMAGE_EXTENSIONS} or a volume {VOLUME_EXTENSIONS}.")
    files = [f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")]
    n_dicom = sum(is_dicom(f) for f in files)
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


# --------------------------------------------------------------------------------------------------------------
# 2D image/mask folders: CVC-ClinicDB (colonoscopy polyps), PH2 and ISIC 2018 Task 1 (dermoscopic skin lesions)
# --------------------------------------------------------------------------------------------------------------

# Mask name = image stem + one of these (tried in this order) + any image extension.
MASK_SUFFIXES = ("_segmentation", "_lesion", "_mask", "")
# ISIC 2018 Task 1 release (Codella et al. 2019, arXiv:1902.03368): "{part}" is Training, Validation or Test.
ISIC2018_FOLDERS = ("ISIC2018_Task1-2_{part}_Input", "ISIC2018_Task1_{part}_GroundTruth")


def _split_ext(path: Path) -> tuple[str, str] | None:
    """``(stem, extension)`` of a visible 2D image file (extension matched case-insensitively), else None."""
    if path.name.startswith(".") or not path.is_file():
        return None
    lower = path.name.lower()
    for ext in IMAGE_EXTENSIONS:
        if lower.endswith(ext) and len(lower) > len(ext):
            return path.name[: -len(ext)], path.name[-len(ext):]
    return None


def _natural_name_key(name: str) -> tuple:
    """Natural sort key of a file name: digit runs compare as numbers (``img2`` < ``img10``, ``2`` < ``10``)."""
    parts = re.split(r"(\d+)", name)
    return tuple(int(t) if i % 2 else t.lower() for i, t in enumerate(parts)) + (name,)


def _image_name_key(item: dict) -> tuple:
    """Default ordering of datalist items: natural order of the image's file name (not its folder)."""
    return _natural_name_key(Path(item["image"]).name)


def paired_datalist(
    dataset_dir: str | Path,
    image_dir: str = "images",
    mask_dir: str = "masks",
    mask_suffixes: Sequence[str] = MASK_SUFFIXES,
) -> list[dict]:
    """Pair ``<image_dir>/<stem>.<ext>`` with ``<mask_dir>/<stem><suffix>.<ext>`` in a flat 2D dataset folder.

    Layouts this covers (masks binary, 0/255; binarise at 128)::

        cvc_clinicdb/images/1.jpg     + masks/1.png               CVC-ClinicDB, suffix ""
        ph2/images/IMD002.jpg         + masks/IMD002_lesion.png   PH2, suffix "_lesion"
        <Input>/ISIC_0000000.jpg      + <GroundTruth>/ISIC_0000000_segmentation.png   ISIC 2018 Task 1

    CVC-ClinicDB: Bernal et al., Comput. Med. Imaging Graph. 2015 (frames of 29 colonoscopy clips; split them with
    :func:`clip_split` or :func:`contiguous_split`, not :func:`split_datalist`). PH2: Mendonca et al., IEEE EMBC
    2013. ISIC 2018: Codella et al. 2019, arXiv:1902.03368 (see :func:`isic2018_datalist`).

    For each image the suffixes are tried in order and the first one with a mask file wins; the mask may have
    any extension of ``IMAGE_EXTENSIONS`` (``.png`` masks for ``.jpg`` images), case-insensitively. Hidden files
    (``.DS_Store``, ``._1.jpg``) and non-image files are ignored; masks matched by no image are ignored.

    Args:
        dataset_dir: the folder holding ``image_dir`` and ``mask_dir``.
        image_dir: name of the image folder (relative to ``dataset_dir``).
        mask_dir: name of the mask folder (relative to ``dataset_dir``).
        mask_suffixes: suffixes appended to the image stem to name its mask, tried in order; ``""`` = same stem.

    Returns:
        ``[{"image": str, "label": str}, ...]`` in natural order of the image file names (``2`` before ``10``).

    Raises:
        FileNotFoundError: if ``image_dir`` or ``mask_dir`` is not a folder (naming it), or ``image_dir`` holds no
            image with an extension of ``IMAGE_EXTENSIONS``.
        ValueError: if ``mask_suffixes`` is empty; if an image has no mask (naming the image and the mask names
            tried); if one image has two candidate masks for the same suffix (e.g. ``1.png`` and ``1.tif``,
            naming both); or if two images match the same mask (e.g. ``1.jpg`` and ``1.png``, naming them).
    """
    suffixes = tuple(mask_suffixes)
    if not suffixes:
        raise ValueError("mask_suffixes is empty: give at least one suffix ('' = mask has the image's stem).")
    root = Path(dataset_dir).expanduser()
    img_root, mask_root = root / image_dir, root / mask_dir
    for folder in (img_root, mask_root):
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder} is not a folder: expected images in '{image_dir}/' and masks in '{mask_dir}/' under {root}."
            )
    images = [(p, split[0]) for p in img_root.iterdir() if (split := _split_ext(p)) is not None]
    if not images:
        raise FileNotFoundError(f"{img_root} holds no images with extensions {IMAGE_EXTENSIONS}.")
    masks: dict[str, list[Path]] = {}
    for p in mask_root.iterdir():
        if (split := _split_ext(p)) is not None:
            masks.setdefault(split[0], []).append(p)

    datalist, owner = [], {}
    for image, stem in sorted(images, key=lambda t: _natural_name_key(t[0].name)):
        label = None
        for suffix in suffixes:
            candidates = sorted(masks.get(stem + suffix, ()))
            if len(candidates) > 1:
                raise ValueError(
                    f"{image} has {len(candidates)} candidate masks: {', '.join(str(c) for c in candidates)}; "
                    "keep one of them."
                )
            if candidates:
                label = candidates[0]
                break
        if label is None:
            tried = ", ".join(f"'{stem}{s}.*'" for s in suffixes)
            raise ValueError(f"{image} has no mask in {mask_root}: tried {tried} with extensions {IMAGE_EXTENSIONS}.")
        if label in owner:
            raise ValueError(f"{label} is the mask of two images: {owner[label]} and {image}; remove one of them.")
        owner[label] = image
        datalist.append({"image": str(image), "label": str(label)})
    return datalist


def isic2018_datalist(dataset_dir: str | Path, part: str = "Training") -> list[dict]:
    """Pair the images and lesion masks of the ISIC 2018 Task 1 (lesion boundary segmentation) release.

    Layout, as downloaded from the ISIC challenge site (Codella et al. 2019, arXiv:1902.03368)::

        dataset_dir/ISIC2018_Task1-2_Training_Input/ISIC_0000000.jpg                  RGB dermoscopy, sizes vary
        dataset_dir/ISIC2018_Task1_Training_GroundTruth/ISIC_0000000_segmentation.png  mask 0/255

    The release's ``ATTRIBUTION.txt``/``LICENSE.txt`` files are ignored. The ISIC archive holds some lesions
    imaged more than once and Task 1 gives no lesion identifier, so :func:`split_datalist` on this list is a
    split by image, not by lesion.

    Args:
        dataset_dir: the folder holding the two release folders.
        part: ``"Training"`` (2594 images), ``"Validation"`` or ``"Test"`` -- the word in the folder names.

    Returns:
        ``[{"image": str, "label": str}, ...]`` sorted by image name.

    Raises:
        FileNotFoundError, ValueError: as :func:`paired_datalist` (folder missing, no images, image without
            ``<stem>_segmentation`` mask, ambiguous masks).
    """
    image_dir, mask_dir = (name.format(part=part) for name in ISIC2018_FOLDERS)
    return paired_datalist(dataset_dir, image_dir, mask_dir, mask_suffixes=("_segmentation",))


def skin_lesion_datalist(dataset_dir: str | Path) -> list[dict]:
    """Datalist of a dermoscopic skin-lesion dataset, detecting its layout.

    Layouts tried, in order:

    1. ISIC 2018 Task 1 training release: ``ISIC2018_Task1-2_Training_Input/`` present (see
       :func:`isic2018_datalist`; Codella et al. 2019, arXiv:1902.03368).
    2. Flat ``images/`` + ``masks/`` (see :func:`paired_datalist`), e.g. PH2 flattened as
       ``images/IMD002.jpg`` + ``masks/IMD002_lesion.png`` (Mendonca et al., IEEE EMBC 2013). PH2's original
       nested release (``PH2 Dataset images/IMD002/IMD002_Dermoscopic_Image/IMD002.bmp``) is not read.

    PH2 has one image per lesion (200 lesions, 160 here), so the images are independent and
    :func:`split_datalist` (a seeded random split by image) is a valid validation split for it.

    Raises:
        FileNotFoundError: if neither layout is found, naming ``dataset_dir`` and both layouts; otherwise as
            :func:`paired_datalist`.
        ValueError: as :func:`paired_datalist`.
    """
    root = Path(dataset_dir).expanduser()
    isic_images = ISIC2018_FOLDERS[0].format(part="Training")
    if (root / isic_images).is_dir():
        return isic2018_datalist(root)
    if (root / "images").is_dir():
        return paired_datalist(root)
    raise FileNotFoundError(
        f"{root} holds no skin-lesion dataset layout: tried ISIC 2018 Task 1 "
        f"('{isic_images}/' + '{ISIC2018_FOLDERS[1].format(part='Training')}/') and "
        "'images/' + 'masks/' (PH2: '<name>.jpg' + '<name>_lesion.png')."
    )


def contiguous_split(
    datalist: list[dict],
    n_val: int | None = None,
    val_fraction: float = 0.2,
    n_blocks: int = 5,
    seed: int = 0,
    key: Callable[[dict], object] = _image_name_key,
    gap: int = 0,
) -> tuple[list[dict], list[dict]]:
    """Split video frames into ``(train, validation)`` so that validation is a few contiguous runs of frames.

    Neighbouring frames of a clip are near copies, so a random frame split puts near duplicates of validation
    frames into training and overstates accuracy. Here:

    1. the items are sorted by ``key`` (by default the natural order of the image file name: frame 2 before 10);
    2. the ordered sequence of ``N`` items is cut into ``n_blocks`` contiguous strata of (almost) equal size
       (stratum ``i`` = positions ``round(i*N/n_blocks)`` to ``round((i+1)*N/n_blocks) - 1``);
    3. validation takes one contiguous run from each stratum, the run lengths proportional to the strata sizes
       and summing to exactly ``n_val``; each run starts at a seeded random offset inside its stratum.

    So validation is the union of at most ``n_blocks`` contiguous ranges of the frame order (adjacent runs may
    touch and merge), spread over the whole recording (start, middle, end), and the split depends only on the
    items' keys and ``seed``. Only the ``2 * n_blocks`` run edges still border training frames; ``gap`` removes
    that many frames on each side of every run from training as well (they end up in neither list). When the
    clip boundaries are known (:data:`CVC_CLINICDB_CLIPS`), prefer :func:`clip_split`, which has no such edges.

    Contiguity is in the sorted order: if frame numbers have holes, a run may span them.

    Args:
        datalist: items with at least the fields ``key`` reads (``"image"`` by default).
        n_val: number of validation items; if None, ``round(val_fraction * len(datalist))``.
        val_fraction: validation fraction in ``(0, 1)``, used when ``n_val`` is None.
        n_blocks: number of strata = maximum number of validation runs; reduced to ``n_val`` when larger.
        seed: seed of the run offsets.
        key: sort key of an item; the default sorts by the natural order of the image file name.
        gap: frames dropped from training on each side of each validation run (0 = none).

    Returns:
        ``(train, val)``, each in sorted order; with ``gap=0`` together they are all items.

    Raises:
        ValueError: if ``n_val`` (given or from ``val_fraction``) is not in ``[1, len(datalist) - 1]``, if
            ``val_fraction`` is not in ``(0, 1)``, if ``n_blocks < 1`` or ``gap < 0``, or if ``gap`` leaves no
            training item.
    """
    n = len(datalist)
    if n_val is None:
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}.")
        n_val = round(val_fraction * n)
    if not 0 < n_val < n:
        raise ValueError(f"n_val must be between 1 and {n - 1} for {n} items, got {n_val}.")
    if n_blocks < 1:
        raise ValueError(f"n_blocks must be at least 1, got {n_blocks}.")
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap}.")
    items = sorted(datalist, key=key)
    k = min(n_blocks, n_val)
    bounds = [round(i * n / k) for i in range(k + 1)]
    # Run lengths by cumulative rounding: sum to n_val exactly and never exceed their stratum (n_val < n).
    cuts = [round(n_val * b / n) for b in bounds]
    rng = random.Random(seed)
    val_idx: set[int] = set()
    for i in range(k):
        size, length = bounds[i + 1] - bounds[i], cuts[i + 1] - cuts[i]
        start = bounds[i] + rng.randint(0, size - length)
        val_idx.update(range(start, start + length))
    blocked = {j for v in val_idx for j in range(v - gap, v + gap + 1)}
    train = [d for j, d in enumerate(items) if j not in blocked]
    val = [d for j, d in enumerate(items) if j in val_idx]
    if not train:
        raise ValueError(f"gap={gap} around {n_val} validation items leaves no training item out of {n}.")
    return train, val


# CVC-ClinicDB frame ranges (first, last; inclusive) of its 29 clips, from the dataset's README.txt ("correspondence
# between the number of frame and the video sequence"), restricted to frames 1-550: clip 27 is 547-571 in the full
# release and is cut to 547-550 here; clips 28 (572-591) and 29 (592-612) are wholly outside 1-550. The README also
# says the 29 clips come from 25 video studies without saying which clips share a study, so a clip split is a split
# by clip, not strictly by patient.
CVC_CLINICDB_CLIPS = (
    (1, 25), (26, 50), (51, 67), (68, 78), (79, 103), (104, 126), (127, 151), (152, 177), (178, 199),
    (200, 205), (206, 227), (228, 252), (253, 277), (278, 297), (298, 317), (318, 342), (343, 363), (364, 383),
    (384, 408), (409, 428), (429, 447), (448, 466), (467, 478), (479, 503), (504, 528), (529, 546), (547, 550),
)


def _frame_number(item: dict) -> int:
    """Frame number of an item: its image's file stem as an integer (CVC-ClinicDB's ``images/123.jpg`` -> 123)."""
    name = Path(item["image"]).name
    stem = name.split(".")[0]
    if not stem.isdigit():
        raise ValueError(f"{item['image']}: the file name '{name}' is not a frame number (expected e.g. '123.jpg').")
    return int(stem)


def clip_split(
    datalist: list[dict],
    clips: Sequence[tuple[int, int]] = CVC_CLINICDB_CLIPS,
    n_val_clips: int = 5,
    seed: int = 0,
    frame: Callable[[dict], int] = _frame_number,
) -> tuple[list[dict], list[dict]]:
    """Split video frames into ``(train, validation)`` by whole clips: no clip has frames in both parts.

    Each item is assigned to the clip whose inclusive range ``(first, last)`` holds its frame number; among the
    clips that hold at least one item, ``n_val_clips`` are drawn with a seeded ``random.Random(seed).sample`` and
    all their frames go to validation. The clips differ in length (4 to 26 frames in CVC-ClinicDB frames 1-550),
    so the validation size varies with the seed; with the defaults on those frames it is 5 of 27 clips.

    Args:
        datalist: items whose frame number ``frame`` reads (by default the integer image file stem).
        clips: inclusive ``(first, last)`` frame ranges, one per clip, not overlapping; default
            :data:`CVC_CLINICDB_CLIPS` (Bernal et al., Comput. Med. Imaging Graph. 2015, dataset README.txt).
        n_val_clips: number of clips for validation.
        seed: seed of the clip draw.
        frame: frame number of an item.

    Returns:
        ``(train, val)``, each sorted by frame number.

    Raises:
        ValueError: if a clip range is empty (``first > last``) or two ranges overlap; if an item's frame number
            is in no clip (naming the item) or cannot be read; if ``n_val_clips`` is not in
            ``[1, clips holding items - 1]``.
    """
    ranges = sorted((int(a), int(b)) for a, b in clips)
    for a, b in ranges:
        if a > b:
            raise ValueError(f"clip range ({a}, {b}) is empty: first frame after last.")
    for (a0, b0), (a1, b1) in zip(ranges, ranges[1:]):
        if a1 <= b0:
            raise ValueError(f"clip ranges ({a0}, {b0}) and ({a1}, {b1}) overlap.")
    by_clip: dict[int, list[tuple[int, dict]]] = {}
    for item in datalist:
        f = frame(item)
        clip = next((i for i, (a, b) in enumerate(ranges) if a <= f <= b), None)
        if clip is None:
            raise ValueError(f"{item['image']}: frame {f} lies in no clip range.")
        by_clip.setdefault(clip, []).append((f, item))
    present = sorted(by_clip)
    if not 0 < n_val_clips < len(present):
        raise ValueError(
            f"n_val_clips must be between 1 and {len(present) - 1} for {len(present)} clips holding items, "
            f"got {n_val_clips}."
        )
    val_clips = set(random.Random(seed).sample(present, n_val_clips))
    train = sorted((fi for c in present if c not in val_clips for fi in by_clip[c]), key=lambda t: t[0])
    val = sorted((fi for c in val_clips for fi in by_clip[c]), key=lambda t: t[0])
    return [d for _, d in train], [d for _, d in val]
