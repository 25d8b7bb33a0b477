"""The Inf-Net COVID-19 slice layout (``Imgs/`` + ``GT/``, Fan et al., IEEE TMI 2020): the datalist of the COVID-19
CT bundles' training and evaluation."""

from __future__ import annotations

from pathlib import Path

from tools.data.files import IMAGE_EXTENSIONS, has_ext, natural_key

__all__ = ["infnet_datalist"]

# Inf-Net's release nests its folders under the dataset root; accept the root or the Doctor-label folder.
_INFNET_SUBDIR = Path("TrainingSet/LungInfection-Train/Doctor-label")


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
    images = sorted((p for p in img_root.iterdir() if has_ext(p, IMAGE_EXTENSIONS)), key=natural_key)
    if not images:
        raise FileNotFoundError(f"{img_root} holds no images with extensions {IMAGE_EXTENSIONS}.")
    labels = {p.name.split(".")[0]: p for p in lbl_root.iterdir() if has_ext(p, IMAGE_EXTENSIONS)}
    datalist = []
    for image in images:
        label = labels.get(image.name.split(".")[0])
        if label is None:
            raise ValueError(f"{image} has no mask with the same name in {lbl_root}.")
        datalist.append({"image": str(image), "label": str(label)})
    return datalist
