"""2D image/mask datalists (CVC-ClinicDB, PH2, ISIC 2018 Task 1) and the video-frame validation splits."""

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tools.data import (
    CVC_CLINICDB_CLIPS,
    clip_split,
    isic2018_datalist,
    paired_datalist,
    skin_lesion_datalist,
)


def _img(path, size=(6, 8)):
    """A tiny image; the format follows the extension (PNG, JPEG, TIFF, BMP)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((*size, 3) if path.suffix.lower() in (".jpg", ".jpeg") else size, np.uint8)).save(path)
    return path


def _names(items, field):
    return [Path(d[field]).name for d in items]


def _frames(n):
    return [{"image": f"/clip/images/{i}.jpg", "label": f"/clip/masks/{i}.png"} for i in range(1, n + 1)]


def _frame_numbers(items):
    return [int(Path(d["image"]).stem) for d in items]


# ---------------------------------------------------------------------------------------------- paired_datalist


def test_paired_datalist_pairs_jpg_images_with_png_lesion_masks(tmp_path):
    for name in ("IMD003", "IMD002"):
        _img(tmp_path / "images" / f"{name}.jpg")
        _img(tmp_path / "masks" / f"{name}_lesion.png")
    items = paired_datalist(tmp_path)
    assert _names(items, "image") == ["IMD002.jpg", "IMD003.jpg"]
    assert _names(items, "label") == ["IMD002_lesion.png", "IMD003_lesion.png"]


def test_paired_datalist_pairs_segmentation_suffix(tmp_path):
    _img(tmp_path / "images" / "ISIC_0000001.jpg")
    _img(tmp_path / "masks" / "ISIC_0000001_segmentation.png")
    assert _names(paired_datalist(tmp_path), "label") == ["ISIC_0000001_segmentation.png"]


def test_paired_datalist_pairs_same_stem_with_different_extensions(tmp_path):
    _img(tmp_path / "images" / "1.tif")
    _img(tmp_path / "masks" / "1.bmp")
    _img(tmp_path / "images" / "2.PNG")
    _img(tmp_path / "masks" / "2.jpeg")
    items = paired_datalist(tmp_path)
    assert list(zip(_names(items, "image"), _names(items, "label"))) == [("1.tif", "1.bmp"), ("2.PNG", "2.jpeg")]


def test_paired_datalist_sorts_numeric_stems_in_numeric_order(tmp_path):
    for n in (10, 2, 1, 100):
        _img(tmp_path / "images" / f"{n}.jpg")
        _img(tmp_path / "masks" / f"{n}.png")
    assert _names(paired_datalist(tmp_path), "image") == ["1.jpg", "2.jpg", "10.jpg", "100.jpg"]


def test_paired_datalist_prefers_the_first_suffix_that_has_a_mask(tmp_path):
    _img(tmp_path / "images" / "a.jpg")
    _img(tmp_path / "masks" / "a.png")
    _img(tmp_path / "masks" / "a_lesion.png")
    assert _names(paired_datalist(tmp_path), "label") == ["a_lesion.png"]
    assert _names(paired_datalist(tmp_path, mask_suffixes=("",)), "label") == ["a.png"]


def test_paired_datalist_ignores_hidden_and_non_image_files_and_unused_masks(tmp_path):
    _img(tmp_path / "images" / "1.jpg")
    _img(tmp_path / "masks" / "1.png")
    _img(tmp_path / "masks" / "7.png")  # a mask without image
    (tmp_path / "images" / "._1.jpg").write_bytes(b"AppleDouble")
    (tmp_path / "images" / "notes.txt").write_text("x")
    assert _names(paired_datalist(tmp_path), "image") == ["1.jpg"]


def test_paired_datalist_uses_custom_folder_names(tmp_path):
    _img(tmp_path / "original" / "5.png")
    _img(tmp_path / "ground truth" / "5.tif")
    assert _names(paired_datalist(tmp_path, "original", "ground truth"), "label") == ["5.tif"]


def test_paired_datalist_names_a_missing_image_folder(tmp_path):
    _img(tmp_path / "masks" / "1.png")
    with pytest.raises(FileNotFoundError, match=r"images is not a folder"):
        paired_datalist(tmp_path)


def test_paired_datalist_names_a_missing_mask_folder(tmp_path):
    _img(tmp_path / "images" / "1.png")
    with pytest.raises(FileNotFoundError, match=r"masks is not a folder"):
        paired_datalist(tmp_path)


def test_paired_datalist_rejects_an_image_folder_without_images(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "readme.txt").write_text("x")
    _img(tmp_path / "masks" / "1.png")
    with pytest.raises(FileNotFoundError, match="holds no images"):
        paired_datalist(tmp_path)


def test_paired_datalist_names_the_image_without_mask_and_the_names_tried(tmp_path):
    _img(tmp_path / "images" / "3.jpg")
    _img(tmp_path / "masks" / "4.png")
    with pytest.raises(ValueError, match=r"3\.jpg has no mask") as err:
        paired_datalist(tmp_path)
    for tried in ("3_segmentation.*", "3_lesion.*", "3_mask.*", "'3.*'"):
        assert tried in str(err.value)


def test_paired_datalist_rejects_two_candidate_masks_for_one_image(tmp_path):
    _img(tmp_path / "images" / "1.jpg")
    _img(tmp_path / "masks" / "1.png")
    _img(tmp_path / "masks" / "1.tif")
    with pytest.raises(ValueError, match=r"2 candidate masks.*1\.png.*1\.tif"):
        paired_datalist(tmp_path)


def test_paired_datalist_rejects_a_mask_matched_by_two_images(tmp_path):
    _img(tmp_path / "images" / "1.jpg")
    _img(tmp_path / "images" / "1.png")
    _img(tmp_path / "masks" / "1.png")
    with pytest.raises(ValueError, match=r"mask of two images: .*1\.(jpg|png) and .*1\.(jpg|png)"):
        paired_datalist(tmp_path)


def test_paired_datalist_rejects_empty_suffix_list(tmp_path):
    with pytest.raises(ValueError, match="mask_suffixes"):
        paired_datalist(tmp_path, mask_suffixes=())


# ----------------------------------------------------------------------------------- ISIC 2018 and layout detection


def _isic(root, names=("ISIC_0000000", "ISIC_0000001")):
    for name in names:
        _img(root / "ISIC2018_Task1-2_Training_Input" / f"{name}.jpg")
        _img(root / "ISIC2018_Task1_Training_GroundTruth" / f"{name}_segmentation.png")
    (root / "ISIC2018_Task1-2_Training_Input" / "LICENSE.txt").write_text("CC-BY-NC")


def test_isic2018_datalist_pairs_training_input_with_segmentation_masks(tmp_path):
    _isic(tmp_path)
    items = isic2018_datalist(tmp_path)
    assert _names(items, "image") == ["ISIC_0000000.jpg", "ISIC_0000001.jpg"]
    assert _names(items, "label") == ["ISIC_0000000_segmentation.png", "ISIC_0000001_segmentation.png"]


def test_isic2018_datalist_requires_the_segmentation_suffix(tmp_path):
    _img(tmp_path / "ISIC2018_Task1-2_Training_Input" / "ISIC_0000000.jpg")
    _img(tmp_path / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000000.png")
    with pytest.raises(ValueError, match="ISIC_0000000_segmentation"):
        isic2018_datalist(tmp_path)


def test_isic2018_datalist_reads_the_validation_part(tmp_path):
    _img(tmp_path / "ISIC2018_Task1-2_Validation_Input" / "ISIC_0000009.jpg")
    _img(tmp_path / "ISIC2018_Task1_Validation_GroundTruth" / "ISIC_0000009_segmentation.png")
    assert _names(isic2018_datalist(tmp_path, part="Validation"), "image") == ["ISIC_0000009.jpg"]


def test_skin_lesion_datalist_detects_the_isic2018_layout(tmp_path):
    _isic(tmp_path)
    _img(tmp_path / "images" / "IMD002.jpg")  # the ISIC layout wins when both are present
    _img(tmp_path / "masks" / "IMD002_lesion.png")
    assert _names(skin_lesion_datalist(tmp_path), "image") == ["ISIC_0000000.jpg", "ISIC_0000001.jpg"]


def test_skin_lesion_datalist_detects_the_ph2_images_masks_layout(tmp_path):
    _img(tmp_path / "images" / "IMD002.jpg")
    _img(tmp_path / "masks" / "IMD002_lesion.png")
    assert _names(skin_lesion_datalist(tmp_path), "label") == ["IMD002_lesion.png"]


def test_skin_lesion_datalist_names_the_folder_and_both_layouts_when_neither_is_found(tmp_path):
    (tmp_path / "other").mkdir()
    with pytest.raises(FileNotFoundError) as err:
        skin_lesion_datalist(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message
    assert "ISIC2018_Task1-2_Training_Input" in message and "'images/' + 'masks/'" in message


def test_skin_lesion_datalist_reports_a_missing_isic_ground_truth_folder(tmp_path):
    _img(tmp_path / "ISIC2018_Task1-2_Training_Input" / "ISIC_0000000.jpg")
    with pytest.raises(FileNotFoundError, match="ISIC2018_Task1_Training_GroundTruth is not a folder"):
        skin_lesion_datalist(tmp_path)


# ------------------------------------------------------------------------------------------------------ clip_split

CLIPS = ((1, 10), (11, 15), (16, 30), (31, 33), (34, 50))


def test_clip_split_never_puts_frames_of_one_clip_in_both_parts():
    train, val = clip_split(_frames(50), CLIPS, n_val_clips=2, seed=5)
    clip_of = {f: i for i, (a, b) in enumerate(CLIPS) for f in range(a, b + 1)}
    train_clips = {clip_of[f] for f in _frame_numbers(train)}
    val_clips = {clip_of[f] for f in _frame_numbers(val)}
    assert len(val_clips) == 2 and not train_clips & val_clips
    assert sorted(_frame_numbers(train) + _frame_numbers(val)) == list(range(1, 51))


def test_clip_split_is_reproducible_and_seed_dependent():
    items = _frames(50)
    assert clip_split(items, CLIPS, 2, seed=1) == clip_split(items[::-1], CLIPS, 2, seed=1)
    assert len({tuple(_frame_numbers(clip_split(items, CLIPS, 2, seed=s)[1])) for s in range(6)}) > 1


def test_clip_split_ignores_clips_without_items():
    train, val = clip_split(_frames(15), CLIPS, n_val_clips=1, seed=0)  # only clips (1, 10), (11, 15) hold items
    assert sorted(_frame_numbers(val)) in (list(range(1, 11)), list(range(11, 16)))
    with pytest.raises(ValueError, match="n_val_clips must be between 1 and 1"):
        clip_split(_frames(15), CLIPS, n_val_clips=2)


def test_clip_split_names_a_frame_outside_every_clip():
    with pytest.raises(ValueError, match=r"51\.jpg: frame 51 lies in no clip"):
        clip_split(_frames(51), CLIPS, n_val_clips=1)


def test_clip_split_rejects_overlapping_clips():
    with pytest.raises(ValueError, match="overlap"):
        clip_split(_frames(20), ((1, 10), (10, 20)), n_val_clips=1)


def test_clip_split_rejects_non_numeric_frame_names():
    with pytest.raises(ValueError, match="not a frame number"):
        clip_split([{"image": "/x/frame_a.jpg"}], CLIPS, n_val_clips=1)


def test_cvc_clinicdb_clips_tile_frames_1_to_550_without_gaps():
    assert len(CVC_CLINICDB_CLIPS) == 27
    assert CVC_CLINICDB_CLIPS[0][0] == 1 and CVC_CLINICDB_CLIPS[-1][1] == 550
    for (a0, b0), (a1, b1) in zip(CVC_CLINICDB_CLIPS, CVC_CLINICDB_CLIPS[1:]):
        assert a0 <= b0 and a1 == b0 + 1


# ------------------------------------------------------------------------------------------------------ real data


def test_cvc_clinicdb_clips_match_the_dataset_readme(data_root):
    text = (data_root / "cvc_clinicdb" / "README.txt").read_text(encoding="latin-1")
    table = [(int(a), int(b)) for a, b, _ in re.findall(r"(\d+)\s+to\s+(\d+)\s*\|\s*(\d+)", text)]
    assert len(table) == 29
    expected = tuple((a, min(b, 550)) for a, b in table if a <= 550)
    assert CVC_CLINICDB_CLIPS == expected


def test_real_cvc_clinicdb_gives_550_pairs_in_frame_order(data_root):
    items = paired_datalist(data_root / "cvc_clinicdb")
    assert len(items) == 550
    assert _frame_numbers(items) == list(range(1, 551))
    assert all(Path(d["label"]).stem == Path(d["image"]).stem for d in items)


def test_real_ph2_gives_160_lesion_pairs(data_root):
    items = skin_lesion_datalist(data_root / "ph2")
    assert len(items) == 160
    assert all(Path(d["label"]).name == Path(d["image"]).stem + "_lesion.png" for d in items)


def test_real_cvc_clinicdb_clip_split_keeps_each_clip_on_one_side(data_root):
    train, val = clip_split(paired_datalist(data_root / "cvc_clinicdb"), n_val_clips=5, seed=0)
    clip_of = {f: i for i, (a, b) in enumerate(CVC_CLINICDB_CLIPS) for f in range(a, b + 1)}
    train_clips = {clip_of[f] for f in _frame_numbers(train)}
    val_clips = {clip_of[f] for f in _frame_numbers(val)}
    assert len(val_clips) == 5 and len(train_clips) == 22 and not train_clips & val_clips
    assert len(train) + len(val) == 550
