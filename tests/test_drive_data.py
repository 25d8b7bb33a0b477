"""DRIVE's release layout (``tools.data.drive``): the three files of a case are paired by their leading number under
both the ``training/`` and the ``test/`` naming, a missing partner is an error naming the file, and inference inputs
find their FOV masks."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.data.drive import case_number, drive_datalist, drive_inference_datalist
from tools.errors import InputError


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def _layout(root: Path, numbers, split: str) -> Path:
    """Empty files named as the DRIVE release names them (pairing reads names only)."""
    for n in numbers:
        _touch(root / "images" / f"{n:02d}_{split}.tif")
        _touch(root / "1st_manual" / f"{n:02d}_manual1.gif")
        _touch(root / "mask" / f"{n:02d}_{split}_mask.gif")
    return root


def test_case_number_reads_the_leading_number_of_both_namings():
    assert [case_number(n) for n in ("21_training.tif", "01_manual1.gif", "01_test_mask.gif", "7.png")] == [21, 1, 1, 7]
    assert case_number("manual_21.gif") is None


@pytest.mark.parametrize("split, numbers", [("training", (21, 22, 40)), ("test", (1, 2, 10))])
def test_training_and_test_naming_pair_image_manual_and_fov_by_case_number(tmp_path, split, numbers):
    root = _layout(tmp_path / split, numbers, split)
    (root / "1st_manual" / ".DS_Store").write_bytes(b"")  # hidden files are not cases
    items = drive_datalist(root)
    assert [Path(d["image"]).name for d in items] == [f"{n:02d}_{split}.tif" for n in numbers]
    for d, n in zip(items, numbers):
        assert Path(d["label"]).name == f"{n:02d}_manual1.gif"
        assert Path(d["fov"]).name == f"{n:02d}_{split}_mask.gif"


def test_an_image_without_its_manual_mask_is_named(tmp_path):
    root = _layout(tmp_path / "test", (1, 2), "test")
    (root / "1st_manual" / "02_manual1.gif").unlink()
    with pytest.raises(InputError, match=r"02_test\.tif: no manual vessel mask with case number 2 .*02_manual1\.gif"):
        drive_datalist(root)


def test_an_image_without_its_fov_mask_is_named_unless_fov_is_optional(tmp_path):
    root = _layout(tmp_path / "training", (21, 22), "training")
    (root / "mask" / "22_training_mask.gif").unlink()
    with pytest.raises(InputError, match=r"22_training\.tif: no FOV mask with case number 22"):
        drive_datalist(root)
    items = drive_datalist(root, require_fov=False)
    assert "fov" in items[0] and "fov" not in items[1]


def test_a_manual_mask_without_its_image_is_named(tmp_path):
    root = _layout(tmp_path / "training", (21,), "training")
    _touch(root / "1st_manual" / "23_manual1.gif")
    with pytest.raises(InputError, match=r"23_manual1\.gif: no image with case number 23"):
        drive_datalist(root)


def test_a_missing_folder_and_the_release_root_are_explained(tmp_path):
    root = _layout(tmp_path / "drive" / "training", (21,), "training").parent
    with pytest.raises(InputError, match=r"has no images/ folder; it holds training/: pass .*training"):
        drive_datalist(root)
    (root / "training" / "mask" / "21_training_mask.gif").unlink()
    (root / "training" / "mask").rmdir()
    with pytest.raises(InputError, match=r"missing the mask/ folder"):
        drive_datalist(root / "training")


def test_a_file_without_a_case_number_and_a_repeated_number_are_refused(tmp_path):
    root = _layout(tmp_path / "training", (21,), "training")
    _touch(root / "images" / "retina.tif")
    with pytest.raises(InputError, match=r"retina\.tif: not a DRIVE file name"):
        drive_datalist(root)
    (root / "images" / "retina.tif").unlink()
    _touch(root / "images" / "21_copy.png")
    with pytest.raises(InputError, match="same case number 21"):
        drive_datalist(root)


def test_inference_on_a_drive_folder_takes_its_fov_masks(tmp_path):
    root = _layout(tmp_path / "test", (1, 2), "test")
    items = drive_inference_datalist(root)
    assert [(Path(d["image"]).name, Path(d["fov"]).name) for d in items] == [
        ("01_test.tif", "01_test_mask.gif"), ("02_test.tif", "02_test_mask.gif")]


def test_inference_on_images_pairs_a_fov_folder_by_name_or_number_and_names_a_missing_one(tmp_path):
    images, fovs = tmp_path / "in", tmp_path / "fov"
    _touch(images / "eye.png"), _touch(images / "05_test.tif"), _touch(images / "other.jpg")
    _touch(fovs / "eye_mask.png"), _touch(fovs / "05_test_mask.gif")
    assert all("fov" not in d for d in drive_inference_datalist(images))  # derived by the bundle
    with pytest.raises(InputError, match=r"other\.jpg: no FOV mask in"):
        drive_inference_datalist(images, fovs)
    (images / "other.jpg").unlink()
    pairs = {Path(d["image"]).name: Path(d["fov"]).name for d in drive_inference_datalist(images, fovs)}
    assert pairs == {"eye.png": "eye_mask.png", "05_test.tif": "05_test_mask.gif"}
