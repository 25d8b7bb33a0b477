"""The spine volumes (MyoSegmenTUM lumbar MRI: ``images/NN.nii.gz`` + ``labels/NN.nii.gz``), their datalist and the
train/validation split by subject.

The spine bundle's configs call these as ``tools.data.spine.<name>`` (``$import tools.data.spine``).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from tools.data.files import VOLUME_EXTENSIONS, has_ext, natural_key

__all__ = ["SPINE_FOLDERS", "volume_stem", "subject_id", "spine_datalist", "split_by_subject", "default_eval_split"]

logger = logging.getLogger(__name__)

SPINE_FOLDERS = ("images", "labels")
"""Sub-folders of a spine dataset folder: the volumes and their label maps, paired by file name."""


def volume_stem(path: str | Path) -> str:
    """A volume file's name without its extension (``01.nii.gz`` -> ``01``)."""
    name = Path(path).name
    for ext in sorted(VOLUME_EXTENSIONS, key=len, reverse=True):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


def subject_id(item: dict) -> str:
    """The subject of a datalist item: its image's :func:`volume_stem` up to the first ``_`` (``01.nii.gz`` and
    ``01_fu.nii.gz`` are both subject ``01``), so that every scan of a subject lands on the same side of a split."""
    return volume_stem(item["image"]).split("_", 1)[0]


def spine_datalist(dataset_dir: str | Path) -> list[dict]:
    """Datalist ``[{"image": images/X, "label": labels/X}, ...]`` of a spine dataset folder, in natural name order.

    Images and labels are paired by file name: ``images/01.nii.gz`` with ``labels/01.nii.gz``. Files whose names are
    not volumes (:data:`tools.data.VOLUME_EXTENSIONS`) and hidden files are ignored.

    Raises:
        FileNotFoundError: if ``dataset_dir`` or one of its ``images/``, ``labels/`` folders does not exist.
        ValueError: if ``images/`` holds no volume, or an image has no label of the same name (naming the image).
    """
    root = Path(dataset_dir).expanduser()
    for sub in SPINE_FOLDERS:
        if not (root / sub).is_dir():
            raise FileNotFoundError(
                f"{root / sub} does not exist: a spine dataset folder holds images/*.nii.gz and labels/*.nii.gz "
                "paired by name (set --dataset_dir, or SEG_DATA_ROOT to the folder holding spine_mri_vertebrae/)."
            )
    images = sorted((p for p in (root / "images").iterdir()
                     if p.is_file() and not p.name.startswith(".") and has_ext(p, VOLUME_EXTENSIONS)), key=natural_key)
    if not images:
        raise ValueError(f"{root / 'images'} holds no volume {VOLUME_EXTENSIONS}.")
    out = []
    for image in images:
        label = root / "labels" / image.name
        if not label.is_file():
            raise ValueError(f"{image}: no label of the same name ({label} does not exist).")
        out.append({"image": str(image), "label": str(label)})
    return out


def split_by_subject(datalist: list[dict], n_val: int = 4, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Split a datalist into ``(train, validation)`` by subject (:func:`subject_id`), reproducibly.

    The subjects are sorted, shuffled with ``random.Random(seed)``, and the first ``n_val`` go to validation; every
    item of a subject goes where its subject goes. The split depends only on the subject names and the seed (not on
    the order of ``datalist``). Each part is returned in the datalist's own order.

    Small folders (a demo, the bundle's one-volume ``sample_data``) are not refused: with fewer than ``n_val + 1``
    subjects, ``len(subjects) - 1`` validate; with a single subject it is both the training and the validation set.
    Either case is logged as a warning, since such a validation says little or nothing.

    Raises:
        ValueError: if the datalist is empty or ``n_val < 1``.
    """
    if n_val < 1:
        raise ValueError(f"n_val must be at least 1, got {n_val}.")
    subjects = sorted({subject_id(d) for d in datalist})
    if not subjects:
        raise ValueError("the datalist is empty: no subject to split.")
    if len(subjects) == 1:
        logger.warning("only one subject (%s): it is used for both training and validation; the validation "
                       "metrics are then not a held-out measure.", subjects[0])
        return list(datalist), list(datalist)
    if n_val >= len(subjects):
        logger.warning("%d subjects, fewer than n_val + 1 = %d: %d validate instead of %d.", len(subjects),
                       n_val + 1, len(subjects) - 1, n_val)
        n_val = len(subjects) - 1
    random.Random(seed).shuffle(subjects)
    val = set(subjects[:n_val])
    return [d for d in datalist if subject_id(d) not in val], [d for d in datalist if subject_id(d) in val]


def default_eval_split(dataset_dir: str | Path, training_dataset_dir: str | Path) -> str:
    """``evaluating``'s split when ``--eval_split`` is not given: ``"validation"`` (the training run's validation
    subjects) when ``dataset_dir`` is the training data, ``"all"`` (every volume) for a folder of the user's."""
    same = Path(dataset_dir).expanduser().resolve() == Path(training_dataset_dir).expanduser().resolve()
    return "validation" if same else "all"


def spine_inference_datalist(path: str | Path) -> list[dict]:
    """Datalist ``[{"image": ...}]`` of the spine bundle's inference input: a volume file (NIfTI, NRRD, MetaImage), a
    folder holding one DICOM series (one item, the folder), or a folder of those (one item each: its volume files and
    its sub-folders that hold DICOM files), in natural name order.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if it is a file that is not a volume (a 2D image, say), or a folder with no volume in it, naming it.
    """
    from tools.data.inputs import is_dicom

    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"inference input {p} does not exist.")
    if p.is_file():
        if not (has_ext(p, VOLUME_EXTENSIONS) or is_dicom(p)):
            raise ValueError(f"{p}: not a volume; this bundle segments 3D volumes {VOLUME_EXTENSIONS} or DICOM series "
                             "folders.")
        return [{"image": str(p)}]
    entries = sorted((e for e in p.iterdir() if not e.name.startswith(".")), key=natural_key)
    if any(e.is_file() and is_dicom(e) for e in entries):
        return [{"image": str(p)}]
    items = [e for e in entries if (e.is_file() and has_ext(e, VOLUME_EXTENSIONS))
             or (e.is_dir() and any(f.is_file() and is_dicom(f) for f in e.iterdir()))]
    if not items:
        raise ValueError(f"{p} holds no volume {VOLUME_EXTENSIONS}, no DICOM series and no folder of one.")
    return [{"image": str(e)} for e in items]


__all__ += ["spine_inference_datalist"]
