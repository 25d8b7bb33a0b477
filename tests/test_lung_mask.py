"""The lung mask of CT volumes (``tools.lung_mask``) and its use in the COVID-19 bundles' CT-volume path.

Real-data tests use TotalSegmentator's reference CTs under ``$SEG_DATA_ROOT/ct_volumes_totalsegmentator``: a
chest-to-pelvis volume at 3 mm whose only lung is the two bases (11 slices; the bowel gas next to them is larger and
spans more slices) and a 1 x 1 x 2 mm abdominal DICOM series without lung. Their labels are TotalSegmentator's
outputs, not manual: the Dice figures check the pipeline, they are not accuracy claims.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import run
from monai.data import ITKReader, MetaTensor
from monai.transforms import Activationsd, AsDiscreted, Invertd, LoadImaged, MaskIntensityd, SaveImaged
from scipy import ndimage

from conftest import BUNDLES
from tools.lung_mask import LungMaskd, axial_axis, dilate_mm, lung_mask
from tools.pipelines.ct import LUNG_REGION_KEY, ct_volume_preprocessing, lesion_postprocessing

COVID_BUNDLES = ["covid19_lesion_ct_rcbunetpp_segmentation", "covid19_lesion_ct_resattunet_segmentation"]
LOBES_V1 = [13, 14, 15, 16, 17]  # v1_full/map_to_binary_v1.py: lung_{upper,lower}_lobe_left, _{upper,middle,lower}_lobe_right
LOBES_V2 = [10, 11, 12, 13, 14]  # map_to_binary_v2.py ("total"): the same five lobes


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def _nifti(path: Path) -> tuple[np.ndarray, list[float], int]:
    img = nib.load(path)
    return np.asarray(img.dataobj, dtype=np.float32), [float(z) for z in img.header.get_zooms()[:3]], \
        axial_axis(img.affine)


@pytest.fixture(scope="module")
def ct_root(data_root) -> Path:
    root = data_root / "ct_volumes_totalsegmentator"
    if not root.is_dir():
        pytest.skip(f"{root} not found: the TotalSegmentator reference CTs are needed")
    return root


@pytest.fixture(scope="module")
def chest_to_pelvis(ct_root):
    """(HU volume, spacing, axial axis, TotalSegmentator lobes) of ``v1_full/example_ct.nii.gz`` (RAS, 3 mm)."""
    hu, spacing, axial = _nifti(ct_root / "v1_full" / "example_ct.nii.gz")
    seg = np.asarray(nib.load(ct_root / "v1_full" / "example_seg_v1_104class.nii.gz").dataobj).astype(int)
    return hu, spacing, axial, np.isin(seg, LOBES_V1)


def _phantom() -> np.ndarray:
    """(80, 64, 40) HU at 2 mm: a body with two lungs (-850 HU, 125 mL each, one with a vessel), a bowel-gas pocket
    (-1000 HU, 28 mL) in front of and below them, and a table under the back joined to it by a thin mattress line,
    which encloses an air gap; Gaussian noise of 15 HU."""
    hu = np.full((80, 64, 40), -1000.0, np.float32)
    hu[8:72, 8:58] = 40.0  # body; walls at least 12 mm thick
    hu[14:34, 14:40, 10:40] = -850.0  # right lung
    hu[46:66, 14:40, 10:40] = -850.0  # left lung
    hu[24:26, 24:26, 12:38] = 40.0  # a vessel inside the right lung
    hu[30:50, 43:50, 0:25] = -1000.0  # bowel gas
    hu[4:76, 2:4] = 200.0  # table
    hu[39:41, 4:8] = 0.0  # a thin contact line between the table and the back
    rng = np.random.default_rng(0)
    return hu + rng.normal(0.0, 15.0, hu.shape).astype(np.float32)


# --- lung_mask on synthetic volumes: the rules, one each ---------------------------------------------------------


def test_phantom_lungs_are_kept_with_their_vessel_and_gas_and_table_gap_dropped():
    hu = _phantom()
    mask = lung_mask(hu, [2.0, 2.0, 2.0])
    lungs = np.zeros_like(mask)
    lungs[14:34, 14:40, 10:40] = lungs[46:66, 14:40, 10:40] = True
    assert mask[lungs].all()  # the vessel (24:26, 24:26) is filled in
    assert not mask[30:50, 43:50, 0:10].any()  # the gas pocket, below the lungs
    assert not mask[:, 4:8].any()  # the gap between the back and the table
    assert _dice(mask, lungs) > 0.97


def test_the_same_phantom_at_half_the_voxel_size_gets_the_same_mask():
    coarse = lung_mask(_phantom(), [2.0, 2.0, 2.0])
    fine = lung_mask(np.repeat(np.repeat(np.repeat(_phantom(), 2, 0), 2, 1), 2, 2), [1.0, 1.0, 1.0])
    back = fine.reshape(80, 2, 64, 2, 40, 2).mean((1, 3, 5)) > 0.5
    assert _dice(back, coarse) > 0.97


def test_a_volume_without_air_in_the_body_gets_an_empty_mask():
    hu = np.full((40, 40, 10), 40.0, np.float32)
    hu[:, :3] = -1000.0
    assert not lung_mask(hu, [1.0, 1.0, 1.0]).any()


def test_lung_mask_rejects_a_2d_array_and_bad_spacing():
    with pytest.raises(ValueError, match="3D volume"):
        lung_mask(np.zeros((8, 8)), [1.0, 1.0])
    with pytest.raises(ValueError, match="three positive voxel sizes"):
        lung_mask(np.zeros((8, 8, 8)), [1.0, 0.0, 1.0])


def test_dilate_mm_grows_by_millimetres_along_each_axis():
    mask = np.zeros((21, 21, 11), bool)
    mask[10, 10, 5] = True
    grown = dilate_mm(mask, [1.0, 1.0, 2.5], 5.0)
    assert grown[5:16, 10, 5].all() and not grown[4, 10, 5] and not grown[16, 10, 5]  # 5 voxels of 1 mm
    assert grown[10, 10, 3:8].all() and not grown[10, 10, 2] and not grown[10, 10, 8]  # 2 voxels of 2.5 mm


def test_lung_maskd_warns_with_the_file_name_when_there_is_no_lung(caplog):
    img = MetaTensor(torch.full((1, 30, 30, 6), 40.0), meta={"filename_or_obj": "/data/abdomen.nii.gz"})
    with caplog.at_level(logging.WARNING):
        out = LungMaskd("image", margin_key="region")({"image": img})
    assert not bool(out["lung"].any()) and not bool(out["region"].any())
    assert "/data/abdomen.nii.gz: no lung found" in caplog.text


def test_lung_maskd_names_the_file_of_a_multichannel_image():
    img = MetaTensor(torch.zeros((2, 8, 8, 4)), meta={"filename_or_obj": "/data/x.nii.gz"})
    with pytest.raises(ValueError, match=r"/data/x.nii.gz: 'image' has shape \(2, 8, 8, 4\)"):
        LungMaskd("image")({"image": img})


def test_slice_postprocessing_is_unchanged_and_volume_postprocessing_masks_before_inverting(tmp_path):
    pre = ct_volume_preprocessing([64, 64], [-1100, 250], "PLS")
    slices = lesion_postprocessing(pre, str(tmp_path), volume=False)
    assert [type(t) for t in slices.transforms] == [Activationsd, Invertd, AsDiscreted, SaveImaged]
    volume = lesion_postprocessing(pre, str(tmp_path), volume=True)
    assert [type(t) for t in volume.transforms] == [Activationsd, MaskIntensityd, Invertd, AsDiscreted, SaveImaged]
    whole = lesion_postprocessing(pre, str(tmp_path), volume=True, lung_mask=False)
    assert [type(t) for t in whole.transforms] == [Activationsd, Invertd, AsDiscreted, SaveImaged]


def test_volume_without_lung_runs_one_small_slice_and_writes_an_empty_mask(tmp_path, caplog):
    path = tmp_path / "abdomen.nii.gz"
    hu = np.full((40, 36, 12), 40.0, np.float32)
    hu[:, :4] = -1000.0
    nib.save(nib.Nifti1Image(hu, np.diag([1.5, 1.5, 3.0, 1.0])), path)
    pre = ct_volume_preprocessing([64, 64], [-1100, 250], "PLS")
    with caplog.at_level(logging.WARNING):
        d = pre({"image": str(path)})
    assert "abdomen.nii.gz: no lung found" in caplog.text
    assert tuple(d["image"].shape) == (1, 64, 64, 1) and not bool(d[LUNG_REGION_KEY].any())
    d["pred"] = MetaTensor(torch.full_like(d["image"], 10.0), meta=d["image"].meta)  # a network marking everything
    lesion_postprocessing(pre, str(tmp_path / "out"), volume=True)(d)
    out = nib.load(tmp_path / "out" / "abdomen_mask.nii.gz")
    assert out.shape == hu.shape and not np.asarray(out.dataobj).any()


# --- lung_mask on the real CT volumes -----------------------------------------------------------------------------


def test_lung_mask_matches_totalsegmentator_lobes_on_the_chest_to_pelvis_ct(chest_to_pelvis):
    hu, spacing, axial, lobes = chest_to_pelvis
    dice = _dice(lung_mask(hu, spacing, axial), lobes)
    print(f"lung mask vs TotalSegmentator lobes (v1_full, 3 mm): Dice {dice:.4f}")
    assert dice > 0.9  # 0.963 when written


def test_lung_mask_matches_totalsegmentator_lobes_on_the_small_ct_with_v2_labels(ct_root):
    # example_seg.nii.gz (v2 classes) labels example_ct_sm.nii.gz (its 30 slices), not the 112-slice example_ct.nii.gz
    hu, spacing, axial = _nifti(ct_root / "reference_files" / "example_ct_sm.nii.gz")
    lobes = np.isin(np.asarray(nib.load(ct_root / "reference_files" / "example_seg.nii.gz").dataobj), LOBES_V2)
    dice = _dice(lung_mask(hu, spacing, axial), lobes)
    print(f"lung mask vs TotalSegmentator lobes (example_ct_sm, 3 mm): Dice {dice:.4f}")
    assert dice > 0.9  # 0.965 when written


def test_lung_mask_at_1_mm_matches_the_lobes_like_at_3_mm(chest_to_pelvis):
    # the top 22 slices (lung bases and the bowel gas beside them) resampled to 1 mm: 27 times the voxels
    hu, spacing, axial, lobes = chest_to_pelvis
    sub, ref = hu[..., 90:], lobes[..., 90:]
    fine = ndimage.zoom(sub, 3, order=1, grid_mode=True, mode="nearest")
    mask = lung_mask(fine, [s / 3 for s in spacing], axial)
    x, y, z = sub.shape
    back = mask.reshape(x, 3, y, 3, z, 3).mean((1, 3, 5)) > 0.5  # to the 3 mm grid: the fraction of each voxel
    dice = _dice(back, ref)
    print(f"lung mask at 1 mm vs TotalSegmentator lobes at 3 mm: Dice {dice:.4f}")
    assert dice > 0.9  # 0.964 when written


def test_abdominal_dicom_series_gets_no_lung(ct_root):
    series = ct_root / "reference_files" / "example_ct_dicom"
    seg = np.asarray(nib.load(ct_root / "reference_files" / "example_seg_dicom.nii.gz").dataobj)
    assert not np.isin(seg, LOBES_V2).any()  # TotalSegmentator finds no lung either
    reader = ITKReader()
    hu, meta = reader.get_data(reader.read(str(series)))
    spacing = [float(s) for s in meta["spacing"]]
    mask = lung_mask(hu.astype(np.float32), spacing, axial_axis(meta["affine"]))
    print(f"lung mask on the abdominal DICOM series: {int(mask.sum())} voxels")
    assert mask.sum() * np.prod(spacing) / 1000.0 < 1.0  # under 1 mL: none, or a partial-volume sliver


def test_reoriented_anisotropic_copy_gets_the_same_mask_in_world_space(chest_to_pelvis, ct_root, tmp_path):
    # the lung slices at 1.5 x 1.5 x 3 mm, saved as RAS and as a permuted, flipped copy (I, L, P) with its affine
    src = nib.load(ct_root / "v1_full" / "example_ct.nii.gz")
    hu = ndimage.zoom(chest_to_pelvis[0][..., 80:], (2, 2, 1), order=1, grid_mode=True, mode="nearest")
    shift = np.array([[0.5, 0, 0, -0.25], [0, 0.5, 0, -0.25], [0, 0, 1, 80], [0, 0, 0, 1]])
    ras = nib.Nifti1Image(hu, src.affine @ shift)
    ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(ras.affine),
                                           nib.orientations.axcodes2ornt(("I", "L", "P")))
    other = ras.as_reoriented(ornt)
    masks = {}
    for name, img in (("ras", ras), ("ilp", other)):
        nib.save(img, tmp_path / f"{name}.nii.gz")
        d = LoadImaged("image", image_only=True, ensure_channel_first=True)({"image": str(tmp_path / f"{name}.nii.gz")})
        m = LungMaskd("image")(d)["lung"][0].numpy().astype(np.uint8)
        masks[name] = nib.as_closest_canonical(nib.Nifti1Image(m, img.affine))
    assert nib.aff2axcodes(other.affine) == ("I", "L", "P")
    np.testing.assert_allclose(masks["ilp"].affine, masks["ras"].affine, atol=1e-4)
    a, b = np.asarray(masks["ras"].dataobj), np.asarray(masks["ilp"].dataobj)
    assert a.sum() > 1000 and np.array_equal(a, b)


def test_volume_preprocessing_crops_to_the_lung_slices_and_carries_the_lung_region(chest_to_pelvis, ct_root, tmp_path):
    path = ct_root / "v1_full" / "example_ct.nii.gz"
    pre = ct_volume_preprocessing([128, 128], [-1100, 250], "PLS")
    d = pre({"image": str(path)})
    lung_slices = np.flatnonzero(lung_mask(*chest_to_pelvis[:3]).any((0, 1)))
    assert tuple(d["image"].shape) == (1, 128, 128, len(lung_slices)) == tuple(d[LUNG_REGION_KEY].shape)
    # a network marking every voxel: the written mask is the lung grown by 5 mm, on the input's grid and affine
    d["pred"] = MetaTensor(torch.full_like(d["image"], 10.0), meta=d["image"].meta)
    lesion_postprocessing(pre, str(tmp_path), volume=True)(d)
    out = nib.load(tmp_path / "example_ct_mask.nii.gz")
    np.testing.assert_allclose(out.affine, nib.load(path).affine, atol=1e-4)
    hu, spacing, axial, lobes = chest_to_pelvis
    expected = dilate_mm(lung_mask(hu, spacing, axial), spacing, 5.0)
    written = np.asarray(out.dataobj) > 0
    assert written.shape == hu.shape and _dice(written, expected) > 0.9
    assert not written[..., : lung_slices.min()].any()  # the slices below the lungs are not segmented


# --- the bundles' shipped weights, end to end ---------------------------------------------------------------------


def _infer(bundle: str, input_path: Path, out: Path) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    run(config_file=str(BUNDLES / bundle / "configs" / "inference.json"),
        logging_file=str(BUNDLES / bundle / "configs" / "logging.conf"), bundle_root=str(BUNDLES / bundle),
        input=str(input_path), output_dir=str(out))
    seconds = time.perf_counter() - start
    return np.asarray(nib.load(next(out.glob("*_mask.nii.gz"))).dataobj) > 0, seconds


@pytest.mark.slow
@pytest.mark.parametrize("bundle", COVID_BUNDLES)
def test_shipped_weights_mark_lesions_only_inside_the_lungs_of_a_ct_without_covid(bundle, chest_to_pelvis, ct_root,
                                                                                   tmp_path):
    mask, seconds = _infer(bundle, ct_root / "v1_full" / "example_ct.nii.gz", tmp_path)
    lobes = chest_to_pelvis[3]
    near = ndimage.binary_dilation(lobes, ndimage.generate_binary_structure(3, 1), iterations=2)
    inside = float((mask & near).sum() / max(mask.sum(), 1))
    print(f"{bundle} on v1_full/example_ct.nii.gz: {int(mask.sum())} voxels, {inside:.1%} inside the lobes "
          f"dilated by 2 voxels, {seconds:.1f} s")
    assert mask.shape == lobes.shape
    assert inside >= 0.95


@pytest.mark.slow
@pytest.mark.parametrize("bundle", COVID_BUNDLES)
def test_shipped_weights_mark_almost_nothing_on_an_abdominal_dicom_series(bundle, ct_root, tmp_path):
    mask, seconds = _infer(bundle, ct_root / "reference_files" / "example_ct_dicom", tmp_path)
    print(f"{bundle} on the abdominal DICOM series: {int(mask.sum())} voxels, {seconds:.1f} s")
    assert mask.shape == (512, 512, 20)
    assert mask.sum() <= 50
