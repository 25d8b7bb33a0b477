"""Every input is checked for what the bundle expects before the network sees it (``tools.input_checks`` and the
transforms that apply it): bit depth and channels of images, binary masks, HU range of CT volumes, completeness of
DICOM series. Inputs are the bundles' sample files, and copies of them made wrong the way real files are."""

from __future__ import annotations

import io
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose
from PIL import Image, ImageFilter

from tools.errors import InputError
from tools.input_checks import check_binary_mask, check_dicom_series
from tools.pipelines.ct import ct_volume_preprocessing
from tools.pipelines.rgb import rgb_inference_preprocessing, rgb_loading
from tools.pipelines.slices import slice_inference_preprocessing, slice_loading
from tools.runner import clear_message

from conftest import BUNDLES

COVID = BUNDLES / "covid19_lesion_ct_rcbunetpp_segmentation" / "sample_data"
SLICE, SLICE_MASK = COVID / "dataset" / "Imgs" / "1.jpg", COVID / "dataset" / "GT" / "1.png"
CT = COVID / "ct" / "example_ct_sm.nii.gz"
POLYP = BUNDLES / "polyp_endoscopy_iacnn_segmentation" / "sample_data" / "dataset"
PHOTO, PHOTO_MASK = POLYP / "images" / "100.jpg", POLYP / "masks" / "100.png"


def _refusal(transform, data) -> str:
    """The message of the input error ``transform(data)`` raises (MONAI's Compose wraps it in RuntimeErrors)."""
    with pytest.raises(Exception) as e:
        transform(data)
    message, expected = clear_message(e.value)
    assert expected, message
    return message


# --- bit depth and channels of 2D images ---------------------------------------------------------------------------


def test_a_16_bit_slice_gives_the_network_the_same_input_as_its_8_bit_original(tmp_path):
    grey = np.asarray(Image.open(SLICE).convert("L"))
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "s16.png")  # 8 -> 16 bits as ImageJ, skimage do
    assert Image.open(tmp_path / "s16.png").mode == "I;16"
    pre = slice_inference_preprocessing([64, 64])
    torch.testing.assert_close(pre({"image": str(tmp_path / "s16.png")})["image"], pre({"image": str(SLICE)})["image"])


def test_a_16_bit_slice_of_raw_ct_numbers_is_refused_with_its_range(tmp_path):
    grey = np.asarray(Image.open(SLICE).convert("L")).astype(np.uint16)
    Image.fromarray(grey * 8 + 24).save(tmp_path / "raw.png")  # 12-bit values, as HU + 1024 would be
    message = _refusal(slice_inference_preprocessing([64, 64]), {"image": str(tmp_path / "raw.png")})
    assert "raw.png: a 16-bit image whose values span only 24..2064" in message


def test_a_greyscale_copy_of_a_colour_photograph_is_refused_by_the_rgb_bundles(tmp_path):
    Image.open(PHOTO).convert("L").save(tmp_path / "grey.png")
    Image.open(PHOTO).convert("L").convert("RGB").save(tmp_path / "grey_as_rgb.jpg")
    pre = rgb_inference_preprocessing([64, 64], [0.5] * 3, [0.5] * 3)
    assert "grey.png: a greyscale image (PIL mode L)" in _refusal(pre, {"image": str(tmp_path / "grey.png")})
    assert "grey_as_rgb.jpg: an RGB image whose three channels are equal" in _refusal(
        pre, {"image": str(tmp_path / "grey_as_rgb.jpg")})
    assert pre({"image": str(PHOTO)})["image"].shape == (3, 64, 64)


def test_a_blank_black_frame_is_not_refused_as_grey(tmp_path):
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "black.png")
    pre = rgb_inference_preprocessing([32, 32], [0.5] * 3, [0.5] * 3)
    assert pre({"image": str(tmp_path / "black.png")})["image"].shape == (3, 32, 32)


# --- binary masks ---------------------------------------------------------------------------------------------------


def test_a_graded_mask_is_refused_naming_the_file_and_the_share_of_grey_pixels(tmp_path):
    Image.open(SLICE_MASK).convert("L").filter(ImageFilter.GaussianBlur(6)).save(tmp_path / "1.png")
    message = _refusal(Compose(slice_loading(allow_empty_label=True)),
                       {"image": str(SLICE), "label": str(tmp_path / "1.png")})
    assert message.startswith(f"{tmp_path / '1.png'}: a graded mask: ") and "of its non-background pixels" in message


def test_a_label_map_mask_of_zeros_and_ones_is_refused_not_read_as_empty(tmp_path):
    Image.fromarray((np.asarray(Image.open(PHOTO_MASK).convert("L")) >= 128).astype(np.uint8)).save(tmp_path / "m.png")
    message = _refusal(Compose(rgb_loading(allow_empty_label=True)),
                       {"image": str(PHOTO), "label": str(tmp_path / "m.png")})
    assert "m.png: a mask with values 0, 1 and none at or above 128" in message


def test_a_jpeg_compressed_mask_is_binarised_at_128_as_the_datasets_readme_says(tmp_path):
    buffer = io.BytesIO()
    Image.open(PHOTO_MASK).convert("L").save(buffer, "JPEG", quality=75)
    grey = np.asarray(Image.open(buffer))
    assert len(np.unique(grey)) > 2  # JPEG left grey values near 0 and 255 and along the border
    Image.fromarray(grey).save(tmp_path / "m.png")
    out = Compose(rgb_loading())({"image": str(PHOTO), "label": str(tmp_path / "m.png")})
    np.testing.assert_array_equal(out["label"][0].numpy().T, grey >= 128)


def test_the_mask_rule_on_small_arrays():
    check_binary_mask(np.zeros((4, 4)))  # empty: allowed (evaluation may hold slices without lesion)
    edge = np.zeros((10, 10))
    edge[:5] = 255
    edge[5, :5] = 120  # 5 grey edge pixels of 55 non-background ones: 9 %
    check_binary_mask(edge)
    edge[5, 5:7] = 120  # 7 of 57: 12 %
    with pytest.raises(InputError, match="a graded mask: 12% of its non-background pixels"):
        check_binary_mask(edge)


# --- CT volumes: Hounsfield units -------------------------------------------------------------------------------------


def test_a_ct_volume_scaled_to_0_1_is_refused_naming_the_file_and_its_range(tmp_path):
    ref = nib.load(CT)
    hu = np.asarray(ref.dataobj, np.float32)
    nib.save(nib.Nifti1Image((hu - hu.min()) / (hu.max() - hu.min()), ref.affine), tmp_path / "ct01.nii.gz")
    pre = ct_volume_preprocessing([64, 64], [-1100, 250], "PLS")
    message = _refusal(pre, {"image": str(tmp_path / "ct01.nii.gz")})
    assert message.startswith(f"{tmp_path / 'ct01.nii.gz'}: intensities are not Hounsfield units")
    assert "1st-99th percentile 0.03771..0.5583" in message
    assert pre({"image": str(CT)})["image"].shape[:3] == (1, 64, 64)  # the HU original passes


def test_a_ct_stored_without_its_rescale_intercept_is_refused(tmp_path):
    ref = nib.load(CT)
    nib.save(nib.Nifti1Image(np.asarray(ref.dataobj, np.float32) + 1024, ref.affine), tmp_path / "raw.nii.gz")
    assert "intensities are not Hounsfield units" in _refusal(ct_volume_preprocessing([64, 64], [-1100, 250], "PLS"),
                                                               {"image": str(tmp_path / "raw.nii.gz")})


# --- DICOM series ----------------------------------------------------------------------------------------------------


@pytest.fixture
def dicom_series(data_root, tmp_path):
    src = data_root / "ct_volumes_totalsegmentator" / "reference_files" / "example_ct_dicom"
    dst = tmp_path / "series"
    shutil.copytree(src, dst)
    return dst


def test_a_dicom_series_with_one_file_cut_in_half_is_refused_naming_the_file(dicom_series):
    files = sorted(dicom_series.iterdir())
    assert check_dicom_series(dicom_series) == len(files) == 20
    cut = files[9]
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    message = _refusal(ct_volume_preprocessing([64, 64], [-1100, 250], "PLS", dicom=True),
                       {"image": str(dicom_series)})
    assert message.startswith(f"{cut}: the file is truncated")


def test_a_dicom_series_with_a_missing_slice_is_refused_naming_the_gap(dicom_series):
    import pydicom

    by_position = sorted(dicom_series.iterdir(), key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True)
                                                                      .ImagePositionPatient[2]))
    by_position[9].unlink()  # a slice in the middle
    with pytest.raises(InputError, match="uneven slice spacing: 4 mm between .* 2 mm between the others"):
        check_dicom_series(dicom_series)
