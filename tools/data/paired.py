"""2D image/mask folders: CVC-ClinicDB (colonoscopy polyps), PH2 and ISIC 2018 Task 1 (dermoscopic skin lesions)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tools.data.files import IMAGE_EXTENSIONS, natural_name_key

__all__ = ["MASK_SUFFIXES", "paired_datalist", "ISIC2018_FOLDERS", "isic2018_datalist", "skin_lesion_datalist"]

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
    :func:`tools.data.clip_split`, not :func:`tools.data.split_datalist`). PH2: Mendonca et al., IEEE EMBC
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
    for image, stem in sorted(images, key=lambda t: natural_name_key(t[0].name)):
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
    imaged more than once and Task 1 gives no lesion identifier, so :func:`tools.data.split_datalist` on this list is a
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
    :func:`tools.data.split_datalist` (a seeded random split by image) is a valid validation split for it.

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
