"""Train/validation splits of a datalist: a seeded shuffle (:func:`split_datalist`) and, for video frames, whole
clips (:func:`clip_split`, with CVC-ClinicDB's clip table)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

from tools.data.spine import subject_id

__all__ = [
    "split_datalist",
    "split_fraction",
    "evaluation_items",
    "CVC_CLINICDB_CLIPS",
    "clip_split",
    "clip_of",
    "FOLD_GROUPS",
    "fold_groups",
    "kfold_split",
]


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


def split_fraction(datalist: list[dict], val_fraction: float, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """:func:`split_datalist` with ``round(val_fraction * len(datalist))`` validation items (at least one).

    Raises:
        ValueError: if ``val_fraction`` is not in (0, 1), or the list is too short to leave a training item.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}.")
    return split_datalist(datalist, n_val=max(1, round(val_fraction * len(datalist))), seed=seed)


def evaluation_items(datalist: list[dict], make_split, eval_split: str = "all") -> list[dict]:
    """The items ``evaluating`` reads: the whole ``datalist`` (``eval_split="all"``, a folder of the user's) or the
    training run's validation split (``"validation"``: ``make_split()[1]``, the split the bundle trains with).

    ``make_split`` is called only for ``"validation"``, so evaluating a folder too small to split, or whose names
    a clip split cannot read, works.

    Raises:
        ValueError: for another ``eval_split``.
    """
    if eval_split == "all":
        return datalist
    if eval_split == "validation":
        return make_split()[1]
    raise ValueError(f"eval_split must be 'all' or 'validation', got {eval_split!r}.")


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


def clip_of(item: dict, clips: Sequence[tuple[int, int]] = CVC_CLINICDB_CLIPS,
            frame: Callable[[dict], int] = _frame_number) -> str:
    """The clip of a video frame item, as ``"clip<i>"`` (index into the sorted ``clips``), for :func:`kfold_split`.

    Raises:
        ValueError: if the frame number lies in no clip, naming the item.
    """
    f = frame(item)
    for i, (a, b) in enumerate(sorted((int(a), int(b)) for a, b in clips)):
        if a <= f <= b:
            return f"clip{i + 1:02d}"
    raise ValueError(f"{item['image']}: frame {f} lies in no clip range.")


FOLD_GROUPS = ("item", "clip", "subject")
"""What a cross-validation fold never splits: single items (COVID-19 slices), CVC-ClinicDB clips, spine subjects."""


def fold_groups(datalist: Sequence[dict], group: str = "item") -> list[str]:
    """The group name of each item of ``datalist`` (:data:`FOLD_GROUPS`): its image path (``"item"``), its video clip
    (``"clip"``, :func:`clip_of`) or its subject (``"subject"``, :func:`tools.data.spine.subject_id`).

    Raises:
        ValueError: for another ``group``, or an item whose clip or subject cannot be read (naming it).
    """
    if group == "item":
        return [str(d["image"]) for d in datalist]
    if group == "clip":
        return [clip_of(d) for d in datalist]
    if group == "subject":
        return [subject_id(d) for d in datalist]
    raise ValueError(f"group must be one of {FOLD_GROUPS}, got {group!r}.")


def kfold_split(datalist: list[dict], n_folds: int = 5, fold: int = 0, seed: int = 0,
                group: str = "item") -> tuple[list[dict], list[dict]]:
    """Fold ``fold`` of a ``n_folds``-fold cross-validation: ``(train, validation)``, whole groups on one side.

    The groups (:func:`fold_groups`) are sorted by name, shuffled with ``random.Random(seed)`` and dealt to the folds
    in turn (group ``i`` of the shuffled order goes to fold ``i % n_folds``), so the folds depend only on the file
    names and the seed, are disjoint, and together hold every item once. With ``group="item"`` and 50 slices each
    fold holds 10; with clips or subjects the fold sizes follow the groups' sizes.

    Args:
        datalist: items ``{"image": path, ...}``.
        n_folds: number of folds K (at least 2, at most the number of groups).
        fold: the held-out fold, ``0 <= fold < n_folds``.
        seed: seed of the shuffle.
        group: ``"item"``, ``"clip"`` (CVC-ClinicDB frames) or ``"subject"`` (spine volumes).

    Returns:
        ``(train, val)``, each in the datalist's order sorted by image path.

    Raises:
        ValueError: if ``n_folds`` < 2 or exceeds the number of groups, ``fold`` is out of range, or ``group`` is
            unknown.
    """
    # scikit-learn's GroupKFold does the same dealing but is not a dependency of the project (scikit-image is), and
    # its folds are balanced by size rather than drawn from a seed; eight lines here cost less than the dependency.
    items = sorted(datalist, key=lambda d: str(d["image"]))
    names = fold_groups(items, group)
    unique = sorted(set(names))
    if not 2 <= int(n_folds) <= len(unique):
        raise ValueError(f"n_folds must be between 2 and {len(unique)} (the number of {group} groups), got {n_folds}.")
    if not 0 <= int(fold) < int(n_folds):
        raise ValueError(f"fold must be in [0, {int(n_folds) - 1}], got {fold}.")
    random.Random(seed).shuffle(unique)
    held_out = {name for i, name in enumerate(unique) if i % int(n_folds) == int(fold)}
    train = [d for d, n in zip(items, names) if n not in held_out]
    val = [d for d, n in zip(items, names) if n in held_out]
    return train, val
