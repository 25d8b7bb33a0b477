"""The MSR-UNet spine bundle end to end on the CPU: train on sagittal slices, evaluate whole volumes (Dice, IoU, HD95
with intervals), infer on NIfTI volumes, DICOM series and real CT, and the errors bad input gets. Training runs a tiny
network for one epoch on the bundle's one sample volume."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, run
from monai.data import ITKReader

from conftest import BUNDLES

BUNDLE = BUNDLES / "spine_vertebra_msrunet_segmentation"
CONFIGS = BUNDLE / "configs"
SAMPLE = BUNDLE / "sample_data" / "dataset"
SAMPLE_IMAGE = SAMPLE / "images" / "17.nii.gz"
TINY = {"network_def#features": [4, 8, 8, 8, 8]}
UNTRAINED = {**TINY, "handlers#0#_disabled_": True}  # inference with a tiny random network (geometry checks)
METRICS = ("dice", "iou", "hd95")


def _messages(exc: BaseException) -> str:
    out = []
    while exc is not None:
        out.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(out)


def _train(out: Path, dataset_dir: Path = SAMPLE, **override) -> None:
    run(
        "training", config_file=str(CONFIGS / "train.json"), logging_file=str(CONFIGS / "logging.conf"),
        bundle_root=str(BUNDLE), dataset_dir=str(dataset_dir), output_dir=str(out), ckpt_dir=str(out / "models"),
        **{"train#trainer#max_epochs": 1, "val_interval": 1, "slices_per_volume": 2, "train#handlers#4#persist": False,
           **TINY, **override},
    )


def _evaluate(out: Path, **override) -> dict:
    run(
        "evaluating", config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")],
        logging_file=str(CONFIGS / "logging.conf"), bundle_root=str(BUNDLE), output_dir=str(out), **override,
    )
    return json.loads((out / "metrics.json").read_text())


def _infer(input_path, out: Path, configs=("inference.json",), **override) -> None:
    run(
        config_file=[str(CONFIGS / c) for c in configs], logging_file=str(CONFIGS / "logging.conf"),
        bundle_root=str(BUNDLE), input=str(input_path), output_dir=str(out), **override,
    )


def _two_volume_dataset(root: Path, label_values=None) -> Path:
    """Two copies of the sample subject (names a and b), optionally the second label's values replaced."""
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
        for name in ("a.nii.gz", "b.nii.gz"):
            shutil.copy(SAMPLE / sub / "17.nii.gz", root / sub / name)
    if label_values is not None:
        ref = nib.load(SAMPLE / "labels" / "17.nii.gz")
        nib.save(nib.Nifti1Image(label_values(np.asarray(ref.dataobj)), ref.affine), root / "labels" / "b.nii.gz")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train")
    _train(out)
    return out


def test_every_config_instantiates_its_workflow_objects():
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")])
    parser.update({"bundle_root": str(BUNDLE), "dataset_dir": str(SAMPLE), **TINY})
    assert parser.get_parsed_content("validate#evaluator") is not None
    assert parser["training"] == "@run"
    for extra in ("inference_ct.json", "inference_3d.json"):
        infer = ConfigParser()
        infer.read_config([str(CONFIGS / "inference.json"), str(CONFIGS / extra)])
        infer.update({"bundle_root": str(BUNDLE)})
        assert infer.get_parsed_content("evaluator") is not None
    three_d = ConfigParser()
    three_d.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "train_3d.json")])
    three_d.update({"bundle_root": str(BUNDLE), "dataset_dir": str(SAMPLE)})
    assert three_d.get_parsed_content("network_def").spatial_dims == 3
    assert type(three_d.get_parsed_content("validate#volume_inferer")).__name__ == "SlidingWindowInferer"


@pytest.mark.parametrize("overlay", sorted(p.relative_to(CONFIGS) for d in ("losses", "ablation")
                                           for p in (CONFIGS / d).glob("*.json")))
def test_every_paper_table_overlay_builds_its_network_and_loss(overlay):
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / overlay)])
    parser.update({"bundle_root": str(BUNDLE)})
    net, loss = parser.get_parsed_content("network_def"), parser.get_parsed_content("loss")
    x = torch.rand(2, 1, 32, 32)
    assert loss(net(x), (x > 0.5).float()).ndim == 0


def test_training_samples_batches_of_16_slices_of_224x224():
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update({"bundle_root": str(BUNDLE), "dataset_dir": str(SAMPLE)})
    loader = parser.get_parsed_content("train#dataloader")
    batch = next(iter(loader))
    assert parser.get_parsed_content("volumes_per_batch") * parser.get_parsed_content("slices_per_volume") == 16
    assert batch["image"].shape[1:] == (1, 208, 192)  # whole sagittal slices of the (cropped) sample
    assert batch["image"].shape[0] == parser.get_parsed_content("slices_per_volume")  # one volume in the sample


def test_one_epoch_of_training_writes_best_dice_checkpoint_and_logs(trained):
    state = torch.load(trained / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert any(k.startswith("encoder.") for k in state) and not any("optimizer" in k for k in state)
    assert list(trained.glob("resume_checkpoint_epoch=1.pt"))
    assert "val_dice" in (trained / "log.txt").read_text()


def test_evaluating_writes_dice_iou_hd95_with_intervals(trained, tmp_path):
    data = _two_volume_dataset(tmp_path / "data")
    metrics = _evaluate(tmp_path / "eval", dataset_dir=str(data), checkpoint=str(trained / "models" / "model.pt"),
                        **TINY)
    parts = [f"dice_L{k}" for k in range(1, 6)]  # per vertebra, from the label files' L1..L5
    assert set(metrics) == {*METRICS, *parts, *(f"{m}_ci95" for m in [*METRICS, *parts]), "n_volumes", "ci_method",
                            "hd95_unit"}
    assert metrics["n_volumes"] == 2 and "volumes" in metrics["ci_method"] and metrics["hd95_unit"] == "mm"
    assert 0.0 <= metrics["dice"] <= 1.0 and 0.0 <= metrics["iou"] <= 1.0
    for m in METRICS:  # two copies of one volume: the interval is the value itself, or null if undefined
        assert metrics[f"{m}_ci95"] is None or metrics[f"{m}_ci95"] == [metrics[m], metrics[m]]
    rows = list(csv.DictReader((tmp_path / "eval" / "per_volume.csv").open()))
    assert [r["image"] for r in rows] == ["a.nii.gz", "b.nii.gz"]


def test_evaluating_the_shipped_weights_on_the_sample_finds_the_vertebrae(tmp_path):
    metrics = _evaluate(tmp_path, dataset_dir=str(SAMPLE))
    assert metrics["n_volumes"] == 1 and metrics["dice_ci95"] is None  # one volume: no interval
    # the shipped 0.1.0 weights are a short CPU run (validation Dice 0.33); a network that marks everything scores
    # 0.16 here (the vertebrae are 8.7 % of the cropped volume), one that marks nothing 0
    assert metrics["dice"] > 0.2, metrics


def test_evaluating_names_a_label_with_other_values(trained, tmp_path):
    data = _two_volume_dataset(tmp_path / "data", label_values=lambda a: (a > 0).astype(np.uint8) * 255)
    with pytest.raises(Exception) as e:
        _evaluate(tmp_path / "eval", dataset_dir=str(data), checkpoint=str(trained / "models" / "model.pt"), **TINY)
    assert "b.nii.gz: a label map with values 0, 255, outside 0..5" in _messages(e.value)


def test_evaluating_the_validation_split_from_seg_data_root(data_root, trained, tmp_path, monkeypatch):
    # no dataset_dir: the training data from the environment, and then its validation subjects by default
    monkeypatch.setenv("SEG_DATA_ROOT", str(data_root))
    _evaluate(tmp_path, checkpoint=str(trained / "models" / "model.pt"), **TINY)
    rows = list(csv.DictReader((tmp_path / "per_volume.csv").open()))
    assert [r["image"] for r in rows] == ["11.nii.gz", "15.nii.gz", "17.nii.gz", "19.nii.gz"]


def test_inference_on_nifti_keeps_shape_and_affine(tmp_path):
    _infer(SAMPLE_IMAGE, tmp_path)  # the shipped weights
    ref, out = nib.load(SAMPLE_IMAGE), nib.load(tmp_path / "17_mask.nii.gz")
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-5)
    mask = np.asarray(out.dataobj)
    assert set(np.unique(mask)) <= {0, 1}
    label = np.asarray(nib.load(SAMPLE / "labels" / "17.nii.gz").dataobj) > 0
    assert 2 * (mask.astype(bool) & label).sum() / (mask.sum() + label.sum()) > 0.2  # vertebrae, in place


def test_inference_on_a_folder_of_volumes_writes_one_mask_each(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    img = nib.load(SAMPLE_IMAGE)
    small = np.asarray(img.dataobj)[:64, :64, :8]
    for name, affine in (("a.nii.gz", img.affine), ("b.nii.gz", np.diag([0.8, 0.8, 2.0, 1.0]))):
        nib.save(nib.Nifti1Image(small, affine), src / name)
    _infer(src, tmp_path / "out", **UNTRAINED)
    for name in ("a", "b"):
        out, ref = nib.load(tmp_path / "out" / f"{name}_mask.nii.gz"), nib.load(src / f"{name}.nii.gz")
        assert out.shape == ref.shape
        np.testing.assert_allclose(out.affine, ref.affine, atol=1e-5)


# a tiny random network, 2D or 2.5D (5-channel slabs): geometry, not accuracy
SLAB = {**UNTRAINED, "slab_neighbours": 2}


@pytest.mark.parametrize("network", [UNTRAINED, SLAB], ids=["2d", "2p5d"])
def test_ct_configuration_keeps_the_geometry_of_a_real_ct_volume(network, data_root, tmp_path):
    src = data_root / "ct_volumes_totalsegmentator" / "v1_full" / "example_ct.nii.gz"
    # pixdim 4 mm instead of 1 mm keeps the test fast; the resampling and its inversion are the same code path
    _infer(src, tmp_path, configs=("inference.json", "inference_ct.json"), pixdim=[4.0, 4.0, 4.0], **network)
    ref, out = nib.load(src), nib.load(tmp_path / "example_ct_mask.nii.gz")
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-4)


def test_ct_configuration_keeps_the_geometry_of_a_real_dicom_series(data_root, tmp_path):
    series = data_root / "ct_volumes_totalsegmentator" / "reference_files" / "example_ct_dicom"
    _infer(series, tmp_path, configs=("inference.json", "inference_ct.json"), pixdim=[4.0, 4.0, 4.0], **UNTRAINED)
    out = nib.load(tmp_path / "example_ct_dicom_mask.nii.gz")
    _, meta = ITKReader().get_data(ITKReader().read(str(series)))
    assert out.shape == tuple(int(s) for s in meta["spatial_shape"])
    np.testing.assert_allclose(out.affine, np.asarray(meta["affine"]), atol=1e-3)


def test_ct_configuration_refuses_an_mri(tmp_path):
    with pytest.raises(Exception) as e:
        _infer(SAMPLE_IMAGE, tmp_path, configs=("inference.json", "inference_ct.json"), **UNTRAINED)
    assert "17.nii.gz: intensities are not Hounsfield units" in _messages(e.value)


def test_inference_rejects_a_2d_image_saved_as_nifti(tmp_path):
    path = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 32), np.uint8), np.eye(4)), path)
    with pytest.raises(Exception) as e:
        _infer(path, tmp_path / "out", **UNTRAINED)
    assert "flat.nii.gz: 'image' has 2 spatial dimensions" in _messages(e.value)
    assert not (tmp_path / "out" / "flat_mask.nii.gz").exists()


def test_inference_rejects_a_4d_volume(tmp_path):
    path = tmp_path / "series.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 8, 3), np.uint8), np.eye(4)), path)
    with pytest.raises(Exception) as e:
        _infer(path, tmp_path / "out", **UNTRAINED)
    assert "series.nii.gz: 'image' has 3 channels; expected one of (1,)" in _messages(e.value)


def test_inference_rejects_a_volume_with_nan(tmp_path):
    path = tmp_path / "nan.nii.gz"
    vol = np.full((32, 32, 8), 50.0, np.float32)
    vol[3, 3, 1] = np.nan
    nib.save(nib.Nifti1Image(vol, np.eye(4)), path)
    with pytest.raises(Exception) as e:
        _infer(path, tmp_path / "out", **UNTRAINED)
    assert "nan.nii.gz: 'image' holds NaN" in _messages(e.value)


def test_fold_ensemble_of_two_equal_members_writes_the_single_models_mask_with_its_geometry(tmp_path):
    import shutil

    folds = tmp_path / "models"
    for k in range(2):
        (folds / f"fold{k}").mkdir(parents=True)
        shutil.copy(BUNDLE / "models" / "model.pt", folds / f"fold{k}" / "model.pt")
    img = nib.load(SAMPLE_IMAGE)
    small = tmp_path / "in" / "a.nii.gz"
    small.parent.mkdir()
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:96, :96, 24:40], img.affine), small)
    _infer(small, tmp_path / "single")
    _infer(small, tmp_path / "ensemble", configs=("inference.json", "inference_ensemble.json"), ensemble_dir=str(folds))
    a, b = nib.load(tmp_path / "single" / "a_mask.nii.gz"), nib.load(tmp_path / "ensemble" / "a_mask.nii.gz")
    assert a.shape == b.shape == (96, 96, 16)
    np.testing.assert_allclose(b.affine, a.affine, atol=1e-6)
    x, y = np.asarray(a.dataobj), np.asarray(b.dataobj)
    assert x.any() and np.mean(x != y) < 1e-3  # the mean of equal members' probabilities is the member's


def test_the_all_subjects_recipe_trains_on_every_subject_without_validation_and_ships_the_last_weights(tmp_path):
    configs = [str(CONFIGS / n) for n in ("train.json", "recipes/cosine_lr.json", "recipes/all_subjects.json")]
    parser = ConfigParser()
    parser.read_config(configs)
    parser.update({"bundle_root": str(BUNDLE), "dataset_dir": str(SAMPLE)})
    train, val = parser.get_parsed_content("split")
    assert [Path(d["image"]).name for d in train] == ["17.nii.gz"] and val == []
    run("training", config_file=configs, logging_file=str(CONFIGS / "logging.conf"), bundle_root=str(BUNDLE),
        dataset_dir=str(SAMPLE), output_dir=str(tmp_path), ckpt_dir=str(tmp_path / "models"),
        **{"train#trainer#max_epochs": 2, "slices_per_volume": 2, "train#handlers#4#persist": False, **TINY})
    final = torch.load(tmp_path / "models" / "model.pt", map_location="cpu")
    last = torch.load(tmp_path / "resume_checkpoint_epoch=2.pt", map_location="cpu")["model"]
    assert final.keys() == last.keys() and all(torch.equal(final[k], last[k]) for k in final)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["model.pt"]  # nothing chosen by a validation
    assert "val_" not in (tmp_path / "log.txt").read_text()


def test_the_2p5d_recipe_trains_and_validates_whole_volumes_on_slabs_of_five_slices(tmp_path):
    configs = [str(CONFIGS / n) for n in ("train.json", "recipes/context_2p5d.json")]
    parser = ConfigParser()
    parser.read_config(configs)
    parser.update({"bundle_root": str(BUNDLE), "dataset_dir": str(SAMPLE), "slices_per_volume": 2})
    batch = next(iter(parser.get_parsed_content("train#dataloader")))
    assert batch["image"].shape[1:] == (5, 208, 192) and batch["label"].shape[1:] == (1, 208, 192)
    run("training", config_file=configs, logging_file=str(CONFIGS / "logging.conf"), bundle_root=str(BUNDLE),
        dataset_dir=str(SAMPLE), output_dir=str(tmp_path), ckpt_dir=str(tmp_path / "models"),
        **{"train#trainer#max_epochs": 1, "val_interval": 1, "slices_per_volume": 2, "train#handlers#4#persist": False,
           **TINY})
    assert "val_dice" in (tmp_path / "log.txt").read_text()  # the validation ran on the whole 5-channel volume
    state = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert any(v.ndim == 4 and v.shape[1] == 5 for v in state.values())  # a first convolution that takes 5 channels



def test_2p5d_inference_stacks_slabs_and_writes_the_mask_on_the_mri_inputs_grid(tmp_path):
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser.update({"bundle_root": str(BUNDLE), **SLAB})
    assert parser.get_parsed_content("network_def#in_channels") == 5
    assert type(parser.get_parsed_content("preprocessing").transforms[-1]).__name__ == "NeighbourSlicesd"
    _infer(SAMPLE_IMAGE, tmp_path, **SLAB)
    out, ref = nib.load(tmp_path / "17_mask.nii.gz"), nib.load(SAMPLE_IMAGE)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-5)
