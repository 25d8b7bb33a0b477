"""Datalists from folder layouts, the seeded split, and the kind of an inference input."""

import shutil

import numpy as np
import pytest
from PIL import Image

from tools.data import infnet_datalist, input_kind, inference_datalist, split_datalist

from conftest import BUNDLES

SAMPLE = BUNDLES / "covid19_lesion_ct_rcbunetpp_segmentation" / "sample_data"


def _png(path, size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros(size, np.uint8)).save(path)


def test_infnet_datalist_pairs_images_and_masks_by_stem_in_numeric_order(tmp_path):
    for n in (10, 2, 1):
        _png(tmp_path / "Imgs" / f"{n}.png")
        _png(tmp_path / "GT" / f"{n}.png")
    items = infnet_datalist(tmp_path)
    assert [p["image"].rsplit("/", 1)[1] for p in items] == ["1.png", "2.png", "10.png"]
    assert all(p["label"].endswith(p["image"].rsplit("/", 1)[1]) for p in items)


def test_infnet_datalist_names_an_image_without_mask(tmp_path):
    _png(tmp_path / "Imgs" / "3.png")
    _png(tmp_path / "GT" / "4.png")
    with pytest.raises(ValueError, match="3.png has no mask"):
        infnet_datalist(tmp_path)


def test_infnet_datalist_names_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="Imgs"):
        infnet_datalist(tmp_path)


def test_infnet_datalist_finds_doctor_label_under_dataset_root(tmp_path):
    sub = tmp_path / "TrainingSet" / "LungInfection-Train" / "Doctor-label"
    _png(sub / "Imgs" / "1.png")
    _png(sub / "GT" / "1.png")
    assert len(infnet_datalist(tmp_path)) == 1


def test_split_is_seeded_disjoint_and_order_independent():
    items = [{"image": f"{i}.jpg"} for i in range(50)]
    train, val = split_datalist(items, n_val=5, seed=0)
    train2, val2 = split_datalist(list(reversed(items)), n_val=5, seed=0)
    assert (len(train), len(val)) == (45, 5)
    assert val == val2 and train == train2
    assert not {d["image"] for d in train} & {d["image"] for d in val}
    assert split_datalist(items, n_val=5, seed=1)[1] != val


def test_split_rejects_impossible_validation_size():
    with pytest.raises(ValueError, match="n_val"):
        split_datalist([{"image": "a"}, {"image": "b"}], n_val=2)


def test_covid_validation_split_on_real_data_is_the_documented_one(data_root):
    _, val = split_datalist(infnet_datalist(data_root / "covid19_ct_lesion_medseg"), n_val=5, seed=0)
    assert sorted(v["image"].rsplit("/", 1)[1] for v in val) == ["1.jpg", "24.jpg", "39.jpg", "46.jpg", "53.jpg"]


def test_input_kind_of_images_volumes_and_dicom_folders(tmp_path):
    assert input_kind(SAMPLE / "dataset" / "Imgs") == "image2d"
    assert input_kind(SAMPLE / "dataset" / "Imgs" / "1.jpg") == "image2d"
    assert input_kind(SAMPLE / "ct" / "example_ct_sm.nii.gz") == "volume"
    dicom = tmp_path / "series"
    dicom.mkdir()
    (dicom / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)
    assert input_kind(dicom) == "volume"
    assert inference_datalist(dicom) == [{"image": str(dicom)}]


def test_input_kind_rejects_missing_and_mixed_inputs(tmp_path):
    with pytest.raises(FileNotFoundError):
        input_kind(tmp_path / "nope")
    shutil.copy(SAMPLE / "dataset" / "Imgs" / "1.jpg", tmp_path / "1.jpg")
    (tmp_path / "x.dcm").write_bytes(b"")
    with pytest.raises(ValueError, match="mixes"):
        input_kind(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown file type"):
        input_kind(tmp_path / "notes.txt")
