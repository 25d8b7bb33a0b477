"""DICOM SEG output (``--output_format dicom_seg``) of the volume bundles: the SEG read back with pydicom and highdicom
maps onto the source slices voxel for voxel.

The bundles run their shipped configs with the network replaced by ``torch.nn.Identity`` (and the checkpoint not
loaded): the mask is then a threshold of the windowed CT on the input's own grid (the orientation, resizing and
their inversion are exact permutations on these small series), so that each SEG frame can be checked against the
source slice's own pixels, read by pydicom from that slice's file alone, as well as against the NIfTI mask written
beside it (through the NIfTI affine and each slice's ImagePositionPatient / ImageOrientationPatient / PixelSpacing,
in DICOM patient coordinates). The source series are made here (pydicom, CT Image Storage) in a few orientations,
with files named out of slice order; the real series of ``SEG_DATA_ROOT`` is used when present.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from monai.bundle import run
from nibabel.affines import apply_affine

from conftest import BUNDLES
from test_bundle_covid19_rcbunetpp import _messages

hd = pytest.importorskip("highdicom")

COVID = ("covid19_lesion_ct_rcbunetpp_segmentation", "covid19_lesion_ct_resattunet_segmentation")
SPINE = "spine_vertebra_msrunet_segmentation"
ROWS, COLS, SLICES = 24, 32, 5
IDENTITY = {"network_def": {"_target_": "torch.nn.Identity"}, "handlers#0#_disabled_": True}
# sigmoid(windowed HU) >= 0.55: -1000 HU is below it in both bundles' windows, 200 HU above
THRESHOLD, AIR, TISSUE = 0.55, -1000, 200
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
ORIENTATIONS = {
    "axial": ([1, 0, 0, 0, 1, 0], [0, 0, 2.5]),
    "axial_flipped": ([-1, 0, 0, 0, -1, 0], [0, 0, -2.5]),  # rows to patient right, columns anterior, slices down
    "sagittal": ([0, 1, 0, 0, 0, -1], [-3.0, 0, 0]),
}


def make_series(folder: Path, orientation: str = "axial", seed: int = 0) -> Path:
    """A CT series of SLICES single-frame images (ROWS x COLS, 0.8 x 0.7 mm pixels) of air and tissue blocks, in HU,
    stepping along ``ORIENTATIONS[orientation]``'s slice offset; files named in reverse slice order."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    iop, step = ORIENTATIONS[orientation]
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    study, series, frame_of_ref = generate_uid(), generate_uid(), generate_uid()
    for k in range(SLICES):
        hu = np.where(rng.random((ROWS // 4, COLS // 4)) < 0.4, TISSUE, AIR).repeat(4, 0).repeat(4, 1)
        hu[0, :3] = TISSUE  # an asymmetric corner: a flip or transposition would show
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_ref
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Synthetic", "SYN1", "", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = \
            "20260101", "120000", "1", "", ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.Manufacturer = "CT", 3, k + 1, "synthetic"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [float(v) for v in iop]
        ds.ImagePositionPatient = [10.0 + k * step[0], -20.0 + k * step[1], 30.0 + k * step[2]]
        ds.PixelSpacing, ds.SliceThickness = [0.8, 0.7], float(np.linalg.norm(step))
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = ROWS, COLS, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (hu + 1024).astype(np.int16).tobytes()
        path = folder / f"IM{SLICES - k:04d}.dcm"
        if int(pydicom.__version__.split(".")[0]) >= 3:
            ds.save_as(path, enforce_file_format=True)
        else:  # pydicom 2 (the MONAI Label extra)
            ds.save_as(path, write_like_original=False)
    return folder


def _infer(bundle: str, series: Path, out: Path, configs=("inference.json",), **override) -> None:
    root = BUNDLES / bundle
    run(config_file=[str(root / "configs" / c) for c in configs], logging_file=str(root / "configs" / "logging.conf"),
        bundle_root=str(root), input=str(series), output_dir=str(out), **override)


def _covid_overrides(orientation: str = "axial") -> dict:
    # no lung crop and a network input of the axial plane's own size (after orientation to PLS: posterior, left):
    # the chain is then orientation only
    plane = [COLS, SLICES] if orientation == "sagittal" else [ROWS, COLS]
    return {**IDENTITY, "threshold": THRESHOLD, "lung_crop": False, "spatial_size": plane,
            "preprocessing_3d#channels": 1}


def _group(seg, frame, name: str):  # noqa: ANN001, ANN202 - pydicom Datasets
    """A functional group of a frame: its own, else the one all frames share."""
    return (frame if name in frame else seg.SharedFunctionalGroupsSequence[0])[name][0]


def _frame_source_uid(frame) -> str:  # noqa: ANN001 - a pydicom Dataset
    return str(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)


def _nifti_slice(mask_file: Path, src) -> np.ndarray:  # noqa: ANN001
    """The NIfTI mask's values at the pixel centres of source slice ``src`` ((Rows, Columns)), through the NIfTI affine
    (RAS) and the slice's position, orientation and spacing (DICOM patient coordinates, LPS)."""
    img = nib.load(mask_file)
    data = np.asarray(img.dataobj)
    iop = np.asarray(src.ImageOrientationPatient, float)
    rows, cols = np.meshgrid(np.arange(src.Rows), np.arange(src.Columns), indexing="ij")
    lps = (np.asarray(src.ImagePositionPatient, float)
           + cols[..., None] * float(src.PixelSpacing[1]) * iop[:3]
           + rows[..., None] * float(src.PixelSpacing[0]) * iop[3:])
    ijk = apply_affine(np.linalg.inv(img.affine), lps * [-1, -1, 1])
    np.testing.assert_allclose(ijk, np.rint(ijk), atol=0.01)  # source pixels are voxel centres of the mask
    ijk = np.rint(ijk).astype(int)
    assert (ijk >= 0).all() and (ijk < data.shape).all()
    return data[ijk[..., 0], ijk[..., 1], ijk[..., 2]]


def check_round_trip(seg_file: Path, series: Path, mask_file: Path, bundle: str, from_pixels: bool = True) -> int:
    """Read the SEG back and check it against its source series and the NIfTI mask; returns its foreground voxels."""
    sources = {}
    for f in series.iterdir():
        ds = pydicom.dcmread(f)
        uid = str(ds.SOPInstanceUID or ds.file_meta.MediaStorageSOPInstanceUID)
        sources[uid] = ds
    first = next(iter(sources.values()))
    seg = pydicom.dcmread(seg_file)
    assert seg.SOPClassUID == SEG_STORAGE and seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == first.StudyInstanceUID
    assert seg.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert seg.SeriesInstanceUID != first.SeriesInstanceUID
    (ref_series,) = seg.ReferencedSeriesSequence
    assert ref_series.SeriesInstanceUID == first.SeriesInstanceUID
    assert {str(r.ReferencedSOPInstanceUID) for r in ref_series.ReferencedInstanceSequence} == set(sources)
    # one segment per foreground class of the bundle, named by its channel_def, with coded terms
    channel_def = json.loads((BUNDLES / bundle / "configs" / "metadata.json").read_text())[
        "network_data_format"]["outputs"]["pred"]["channel_def"]
    (segment,) = seg.SegmentSequence
    assert segment.SegmentNumber == 1 and segment.SegmentLabel == channel_def["1"]
    category, kind = segment.SegmentedPropertyCategoryCodeSequence[0], segment.SegmentedPropertyTypeCodeSequence[0]
    expected = {"covid": (("SCT", "49755003"), ("SCT", "52988006"), "39607008"),
                "spine": (("SCT", "85756007"), ("SCT", "272673000"), "122496007")}
    expected = expected["spine" if bundle == SPINE else "covid"]
    assert (category.CodingSchemeDesignator, category.CodeValue) == expected[0]
    assert (kind.CodingSchemeDesignator, kind.CodeValue) == expected[1]
    assert segment.AnatomicRegionSequence[0].CodeValue == expected[2]
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    # the frames, read by pydicom (bit-packed) and by highdicom
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns))
    np.testing.assert_array_equal(hd.seg.segread(seg_file).pixel_array.reshape(frames.shape), frames)
    seen, total = set(), 0
    for frame, pixels in zip(seg.PerFrameFunctionalGroupsSequence, frames):
        uid = _frame_source_uid(frame)
        src = sources[uid]
        assert uid not in seen
        seen.add(uid)
        assert _group(seg, frame, "SegmentIdentificationSequence").ReferencedSegmentNumber == 1
        np.testing.assert_allclose([float(v) for v in _group(seg, frame, "PlanePositionSequence").ImagePositionPatient],
                                   [float(v) for v in src.ImagePositionPatient], atol=1e-3)
        orientation = _group(seg, frame, "PlaneOrientationSequence").ImageOrientationPatient
        np.testing.assert_allclose([float(v) for v in orientation], [float(v) for v in src.ImageOrientationPatient],
                                   atol=1e-4)
        np.testing.assert_array_equal(pixels, _nifti_slice(mask_file, src))
        if from_pixels:  # the identity network: the mask is the tissue of the source slice's own pixels
            np.testing.assert_array_equal(pixels, (src.pixel_array * float(src.RescaleSlope)
                                                   + float(src.RescaleIntercept) > 0).astype(np.uint8))
        total += int(pixels.sum())
    for uid in set(sources) - seen:  # slices left out of the SEG are empty in the NIfTI mask
        assert not _nifti_slice(mask_file, sources[uid]).any(), uid
    pixel_measures = _group(seg, seg.PerFrameFunctionalGroupsSequence[0], "PixelMeasuresSequence")
    np.testing.assert_allclose([float(v) for v in pixel_measures.PixelSpacing],
                               [float(v) for v in first.PixelSpacing])
    return total


@pytest.mark.parametrize("bundle,orientation", [(COVID[0], "axial_flipped"), (COVID[1], "axial"),
                                                (COVID[0], "sagittal")])
def test_covid_dicom_seg_maps_onto_the_source_slices(bundle, orientation, tmp_path):
    series = make_series(tmp_path / "series", orientation)
    _infer(bundle, series, tmp_path / "out", output_format="dicom_seg", **_covid_overrides(orientation))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["series_mask.nii.gz", "series_seg.dcm"]
    total = check_round_trip(tmp_path / "out" / "series_seg.dcm", series, tmp_path / "out" / "series_mask.nii.gz",
                             bundle)
    assert total > 0


@pytest.mark.parametrize("orientation", ["sagittal", "axial_flipped"])
def test_spine_ct_dicom_seg_maps_onto_the_source_slices(orientation, tmp_path):
    series = make_series(tmp_path / "series", orientation, seed=1)
    _infer(SPINE, series, tmp_path / "out", configs=("inference.json", "inference_ct.json"),
           output_format="dicom_seg", pixdim="$None", threshold=THRESHOLD, **IDENTITY)
    total = check_round_trip(tmp_path / "out" / "series_seg.dcm", series, tmp_path / "out" / "series_mask.nii.gz",
                             SPINE)
    assert total > 0


def test_an_empty_mask_gives_a_seg_whose_frames_are_empty(tmp_path):
    series = make_series(tmp_path / "series")
    _infer(COVID[1], series, tmp_path / "out", output_format="dicom_seg", **{**_covid_overrides(), "threshold": 0.99})
    assert check_round_trip(tmp_path / "out" / "series_seg.dcm", series, tmp_path / "out" / "series_mask.nii.gz",
                            COVID[1], from_pixels=False) == 0
    assert int(pydicom.dcmread(tmp_path / "out" / "series_seg.dcm").NumberOfFrames) == SLICES  # highdicom keeps them


def test_spine_dicom_seg_through_resampling_and_a_real_network(tmp_path):
    """The CT configuration as shipped (1 mm resampling and its inversion) with a tiny random network: the SEG is
    the NIfTI mask, slice for slice."""
    series = make_series(tmp_path / "series", "axial")
    _infer(SPINE, series, tmp_path / "out", configs=("inference.json", "inference_ct.json"), output_format="dicom_seg",
           **{"network_def#features": [4, 8, 8, 8, 8], "handlers#0#_disabled_": True})
    check_round_trip(tmp_path / "out" / "series_seg.dcm", series, tmp_path / "out" / "series_mask.nii.gz", SPINE,
                     from_pixels=False)


def test_nifti_input_keeps_its_mask_and_names_why_there_is_no_seg(tmp_path):
    src = BUNDLES / COVID[0] / "sample_data" / "ct" / "example_ct_sm.nii.gz"
    with pytest.raises(Exception) as e:
        _infer(COVID[0], src, tmp_path, output_format="dicom_seg",
               **{"network_def#features": [4, 8, 8, 8, 8], "handlers#0#_disabled_": True})
    message = _messages(e.value)
    assert f"{src}: no DICOM SEG written" in message and "source DICOM instances" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["example_ct_sm_mask.nii.gz"]


def test_a_2d_slice_keeps_its_png_mask_and_names_why_there_is_no_seg(tmp_path):
    src = BUNDLES / COVID[0] / "sample_data" / "dataset" / "Imgs" / "1.jpg"
    with pytest.raises(Exception) as e:
        _infer(COVID[0], src, tmp_path, output_format="dicom_seg",
               **{"network_def#features": [4, 8, 8, 8, 8], "handlers#0#_disabled_": True})
    assert f"{src}: no DICOM SEG written" in _messages(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1_mask.png"]


def test_default_output_is_nifti_alone_and_unknown_formats_are_refused(tmp_path):
    series = make_series(tmp_path / "series")
    _infer(COVID[1], series, tmp_path / "out", **_covid_overrides())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["series_mask.nii.gz"]
    with pytest.raises(Exception) as e:
        _infer(COVID[1], series, tmp_path / "other", output_format="dicomseg", **_covid_overrides())
    assert "--output_format must be one of nifti, dicom_seg" in _messages(e.value)


def test_an_existing_seg_is_not_replaced_without_overwrite(tmp_path):
    series = make_series(tmp_path / "series")
    out = tmp_path / "out"
    out.mkdir()
    (out / "series_seg.dcm").write_bytes(b"earlier")
    with pytest.raises(Exception) as e:
        _infer(COVID[1], series, out, output_format="dicom_seg", **_covid_overrides())
    assert "DICOM SEG file(s) exist already" in _messages(e.value)
    assert sorted(p.name for p in out.iterdir()) == ["series_seg.dcm"]  # refused before the model ran
    _infer(COVID[1], series, out, output_format="dicom_seg", overwrite=True, **_covid_overrides())
    check_round_trip(out / "series_seg.dcm", series, out / "series_mask.nii.gz", COVID[1])


def test_a_mask_off_the_source_grid_is_refused():
    from tools.dicom_seg import frames_on_source_slices

    src = pydicom.Dataset()
    src.Rows, src.Columns, src.PixelSpacing = 4, 4, [1.0, 1.0]
    src.ImageOrientationPatient, src.ImagePositionPatient = [1, 0, 0, 0, 1, 0], [0.5, 0.0, 0.0]
    with pytest.raises(ValueError, match="does not lie on the mask's voxel grid"):
        frames_on_source_slices(np.zeros((1, 4, 4, 1), np.uint8), np.diag([-1.0, -1.0, 1.0, 1.0]), [src])
    src.ImagePositionPatient = [0.0, 0.0, 0.0]
    mask = np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1)
    # RAS affine diag(-1, -1, 1): voxel (i, j) is at LPS (i, j): column c, row r -> voxel (c, r)
    np.testing.assert_array_equal(frames_on_source_slices(mask, np.diag([-1.0, -1.0, 1.0, 1.0]), [src])[0],
                                  mask[0, :, :, 0].T)


def _real_series_with_uids(data_root: Path, dst: Path) -> Path:
    """The real series with the Study/Series/SOP UIDs its anonymisation blanked filled in (pixel data as it is)."""
    src = data_root / "ct_volumes_totalsegmentator" / "reference_files" / "example_ct_dicom"
    if not src.is_dir():
        pytest.skip(f"{src} not found")
    dst.mkdir()
    study, series = hd.UID(), hd.UID()
    for f in sorted(src.iterdir()):
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.save_as(dst / f.name)
    return dst


def test_real_series_round_trip(data_root, tmp_path):
    series = _real_series_with_uids(data_root, tmp_path / "example_ct_dicom")
    _infer(SPINE, series, tmp_path / "out", configs=("inference.json", "inference_ct.json"), output_format="dicom_seg",
           pixdim="$None", threshold=THRESHOLD, **IDENTITY)
    # JPEG 2000 pixel data: the mask is checked against the NIfTI (pydicom may lack a JPEG 2000 decoder here)
    total = check_round_trip(tmp_path / "out" / "example_ct_dicom_seg.dcm", series,
                             tmp_path / "out" / "example_ct_dicom_mask.nii.gz", SPINE, from_pixels=False)
    assert total > 0


def test_real_anonymised_series_without_study_uid_keeps_its_mask(data_root, tmp_path):
    src = data_root / "ct_volumes_totalsegmentator" / "reference_files" / "example_ct_dicom"
    if not src.is_dir():
        pytest.skip(f"{src} not found")
    series = tmp_path / "example_ct_dicom"
    shutil.copytree(src, series)
    with pytest.raises(Exception) as e:
        _infer(SPINE, series, tmp_path / "out", configs=("inference.json", "inference_ct.json"),
               output_format="dicom_seg", pixdim="$None", **IDENTITY)
    assert "has no StudyInstanceUID, SeriesInstanceUID" in _messages(e.value)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["example_ct_dicom_mask.nii.gz"]
