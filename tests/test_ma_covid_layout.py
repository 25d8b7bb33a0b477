"""Ma et al.'s COVID-19-CT-Seg layout: the datalist, and training the ResAttUNet bundle on axial slices sampled
from NIfTI volumes (``configs/train_ma_covid.json`` over ``train.json``).

The volumes are made in that layout from a real CT (TotalSegmentator's ``example_ct_sm.nii.gz``, the lung bases
of an abdominal scan): lung mask = TotalSegmentator's lung lobes (1 = left, 2 = right, as in Ma et al.'s masks),
"infection" = lung voxels denser than -750 HU (vessels, partial volume). Those labels are a pipeline check
(loading, pairing, orientation, windowing, slice sampling, a training epoch), not ground truth: no accuracy is
claimed from them."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, run
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImage, Orientation, Resize, SpatialCrop

from tools.data import MA_COVID_FOLDERS, ma_covid_datalist, split_datalist

from conftest import BUNDLES

BUNDLE = BUNDLES / "covid19_lesion_ct_resattunet_segmentation"
CONFIGS = BUNDLE / "configs"
MA_CONFIGS = [str(CONFIGS / "train.json"), str(CONFIGS / "train_ma_covid.json")]
TINY = {
    "network_def#layers": [1, 1, 1, 1],
    "network_def#channels": [8, 16, 32, 64],
    "network_def#decoder_channels": [32, 16, 8, 8],
    "spatial_size": [64, 64],
    "val_count": 1,
}
LEFT_LUNG, RIGHT_LUNG = (10, 11), (12, 13, 14)  # TotalSegmentator v2 "total" classes (map_to_binary_v2.py)


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_datalist_pairs_volumes_with_infection_and_lung_masks_by_case(tmp_path):
    image_dir, label_dir, lung_dir = MA_COVID_FOLDERS
    for case in ("radiopaedia_4_85506_1", "coronacases_001"):
        _touch(tmp_path / image_dir / f"{case}.nii.gz")
        _touch(tmp_path / label_dir / f"{case}.nii.gz")
        _touch(tmp_path / lung_dir / f"{case}.nii")  # extensions may differ
    _touch(tmp_path / label_dir / "extra_case.nii.gz")  # a mask without volume is ignored
    items = ma_covid_datalist(tmp_path)
    assert [Path(i["image"]).name for i in items] == ["coronacases_001.nii.gz", "radiopaedia_4_85506_1.nii.gz"]
    assert all(Path(i["label"]).parent.name == label_dir and Path(i["lung"]).parent.name == lung_dir for i in items)
    assert Path(items[0]["lung"]).name == "coronacases_001.nii"


def test_datalist_names_the_missing_folder_and_the_volume_without_mask(tmp_path):
    with pytest.raises(FileNotFoundError, match="COVID-19-CT-Seg_20cases is not a folder"):
        ma_covid_datalist(tmp_path)
    for folder in MA_COVID_FOLDERS:
        (tmp_path / folder).mkdir()
    with pytest.raises(FileNotFoundError, match="holds no NIfTI volumes"):
        ma_covid_datalist(tmp_path)
    _touch(tmp_path / MA_COVID_FOLDERS[0] / "case1.nii.gz")
    _touch(tmp_path / MA_COVID_FOLDERS[1] / "case1.nii.gz")
    with pytest.raises(ValueError, match=r"case1.nii.gz has no lung mask 'case1.nii.gz' in .*Lung_Mask"):
        ma_covid_datalist(tmp_path)


def _save(array: torch.Tensor, affine, path: Path, dtype) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array[0]).astype(dtype), np.asarray(affine, dtype=np.float64)), path)


@pytest.fixture(scope="module")
def ma_dataset(data_root, tmp_path_factory) -> Path:
    """Two cases in Ma et al.'s layout, 64x64 in-plane, from the real CT (the second one stored in LPS order)."""
    ref = data_root / "ct_volumes_totalsegmentator" / "reference_files"
    load = LoadImage(image_only=True, ensure_channel_first=True)
    ct, seg = load(ref / "example_ct_sm.nii.gz"), load(ref / "example_seg.nii.gz")
    crop = SpatialCrop(roi_start=[0, 0, 14], roi_end=list(ct.shape[1:]))  # the slices holding the lung bases
    ct, seg = crop(ct), crop(seg)
    ct = Resize([64, 64, -1], mode="bilinear")(ct)
    seg = Resize([64, 64, -1], mode="nearest")(seg)
    lung = torch.zeros_like(seg.as_tensor(), dtype=torch.uint8)
    lung[torch.isin(seg.as_tensor(), torch.tensor(LEFT_LUNG))] = 1
    lung[torch.isin(seg.as_tensor(), torch.tensor(RIGHT_LUNG))] = 2
    infection = ((lung > 0) & (ct.as_tensor() > -750)).to(torch.uint8)
    assert int(infection.sum()) > 50 and int((lung > 0).sum()) > 500
    root = tmp_path_factory.mktemp("COVID-19-CT-Seg")
    volumes = {  # folder -> (volume with the CT's affine, dtype on disk)
        MA_COVID_FOLDERS[0]: (ct, np.int16),
        MA_COVID_FOLDERS[1]: (MetaTensor(infection, affine=ct.affine), np.uint8),
        MA_COVID_FOLDERS[2]: (MetaTensor(lung, affine=ct.affine), np.uint8),
    }
    for case, orient in (("case_a", lambda v: v), ("case_b", Orientation("LPS"))):
        for folder, (volume, dtype) in volumes.items():
            v = orient(volume.clone())
            _save(v, v.affine, root / folder / f"{case}.nii.gz", dtype)
    return root


def test_the_layout_splits_by_case_and_samples_axial_slices(ma_dataset):
    parser = ConfigParser()
    parser.read_config(MA_CONFIGS)
    parser.update({"bundle_root": str(BUNDLE), "dataset_dir": str(ma_dataset), **TINY})
    train, val = parser.get_parsed_content("split")
    assert len(train) == len(val) == 1 and train[0]["image"] != val[0]["image"]  # whole cases, never slices
    assert parser["ma_hu_window"] == [-1250, 250]
    samples = parser.get_parsed_content("train#dataset")[0]
    assert len(samples) == parser["ma_slices_per_volume"] == 2  # one step = 2 slices, the paper's batch
    for s in samples:
        assert tuple(s["image"].shape) == (3, 64, 64) and tuple(s["label"].shape) == (1, 64, 64)
        assert 0.0 <= float(s["image"].min()) and float(s["image"].max()) <= 1.0
        assert set(torch.unique(torch.as_tensor(s["label"])).tolist()) <= {0.0, 1.0}
        assert set(s) == {"image", "label"}  # lung mask and sampling indices are dropped before batching
    assert float(samples[0]["label"].sum()) > 0  # the "pos" sample is centred on an infection voxel
    volume = parser.get_parsed_content("validate#dataset")[0]
    assert volume["image"].shape[:3] == (3, 64, 64) and volume["label"].shape[:3] == (1, 64, 64)
    assert volume["image"].shape[-1] == volume["label"].shape[-1] > 1
    # the same CT stored in RAS and LPS order loads to the same arrays: orientation is applied to image and masks
    loading = Compose(parser.get_parsed_content("ma_volume_loading"))
    a, b = (loading(item) for item in sorted(train + val, key=lambda d: d["image"]))
    for key in ("image", "label", "lung"):
        torch.testing.assert_close(a[key].as_tensor(), b[key].as_tensor())


def test_one_epoch_of_training_on_the_layout(ma_dataset, tmp_path):
    run(
        "training", config_file=MA_CONFIGS, logging_file=str(CONFIGS / "logging.conf"), bundle_root=str(BUNDLE),
        dataset_dir=str(ma_dataset), output_dir=str(tmp_path), ckpt_dir=str(tmp_path / "models"),
        **{"train#trainer#max_epochs": 1, "val_interval": 1, "train#handlers#-1#persist": False, **TINY},
    )
    state = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert "encoder.conv1.weight" in state
    log = (tmp_path / "log.txt").read_text()
    assert "val_iou" in log and "Epoch[1] Complete" in log
