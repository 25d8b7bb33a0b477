"""The ResAttUNet COVID-19 bundle on the CPU: its configs follow the paper and the first COVID bundle's interface,
one tiny epoch of training, evaluation, inference on slices and CT volumes, the baseline overlays, ImageNet-style
initialisation from a local file, and verification. Training runs a tiny network at 64x64 for one epoch on the
RCB-UNet++ bundle's six sample slices (this bundle ships no sample data of its own)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, run
from monai.data import ITKReader
from PIL import Image

from custom_networks.nets import ResAttUNet
from tools.commands.verify import BundleCheckError, verify_bundle, verify_dataset_dir

from conftest import BUNDLES
from test_bundle_covid19_rcbunetpp import METRIC_NAMES, SUMMARY_KEYS
from test_resattunet import fake_torchvision_resnet34

BUNDLE = BUNDLES / "covid19_lesion_ct_resattunet_segmentation"
CONFIGS = BUNDLE / "configs"
FIRST = BUNDLES / "covid19_lesion_ct_rcbunetpp_segmentation"
SAMPLE = BUNDLE / "sample_data"  # the bundle's own copy: a bundle stands alone
TINY = {
    "network_def#layers": [1, 1, 1, 1],
    "network_def#channels": [8, 16, 32, 64],
    "network_def#decoder_channels": [32, 16, 8, 8],
    "spatial_size": [64, 64],
}
BASELINES = {  # overlay -> (residual_encoder, attention_gates)
    "unet": (False, False),
    "res_unet": (True, False),
    "attention_unet": (False, True),
}


def _parser(files, **override) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    parser.update({"bundle_root": str(BUNDLE), **override})
    return parser


def _train(out: Path, **override) -> float:
    start = time.perf_counter()
    run(
        "training", config_file=str(CONFIGS / "train.json"), logging_file=str(CONFIGS / "logging.conf"),
        bundle_root=str(BUNDLE), dataset_dir=str(SAMPLE / "dataset"), output_dir=str(out), ckpt_dir=str(out / "models"),
        **{"train#trainer#max_epochs": 1, "val_interval": 1, "val_count": 2, "train#handlers#-1#persist": False,
           **TINY, **override},
    )
    return time.perf_counter() - start


def _infer(input_path, out: Path, **override) -> None:
    run(
        config_file=str(CONFIGS / "inference.json"), logging_file=str(CONFIGS / "logging.conf"),
        bundle_root=str(BUNDLE), input=str(input_path), output_dir=str(out), **override,
    )


def _tiny_weights(trained: Path) -> dict:
    """Overrides running inference with the tiny network trained by the ``trained`` fixture (the shipped weights
    are loaded by ``verify``'s TorchScript check)."""
    return {**TINY, "handlers#0#load_path": str(trained / "models" / "model.pt")}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train")
    _train(out)
    return out


def test_training_config_is_the_papers_and_shares_the_first_bundles_split():
    parser = _parser([CONFIGS / "train.json"])
    net = parser["network_def"]
    assert net["_target_"].endswith("ResAttUNet") and parser["in_channels"] == 3
    assert net["attention_gates"] is True and net["residual_encoder"] is True and net["pretrained_path"] is None
    assert parser["spatial_size"] == [256, 256]
    assert isinstance(parser.get_parsed_content("loss"), torch.nn.BCEWithLogitsLoss)
    assert "loss_function" not in parser  # no deep supervision
    assert parser["optimizer"]["_target_"] == "torch.optim.Adam" and parser["learning_rate"] == 1e-4
    assert "weight_decay" not in parser["optimizer"]
    assert parser["train"]["dataloader"]["batch_size"] == 2 and parser["train"]["trainer"]["max_epochs"] == 200
    assert parser["train"]["augmentation"] == []
    first = _parser([FIRST / "configs" / "train.json"])
    for key in ("val_count", "split_seed", "seed", "val_interval", "dataset_dir", "datalist", "split"):
        assert parser[key] == first[key], key
    assert parser["training"] == "@run"


def test_every_config_instantiates_its_workflow_objects():
    parser = _parser([CONFIGS / "train.json", CONFIGS / "evaluate.json"], dataset_dir=str(SAMPLE / "dataset"), **TINY)
    assert parser.get_parsed_content("validate#evaluator") is not None
    infer = _parser([CONFIGS / "inference.json"], **TINY)
    assert infer.get_parsed_content("evaluator") is not None
    assert Path(infer.get_parsed_content("input")).resolve() == (SAMPLE / "dataset" / "Imgs").resolve()
    assert infer["hu_window"] == [-1100, 250] and infer["slice_axcodes"] == "PLS"


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_overlays_set_the_network_flags_over_every_config(name):
    residual, gates = BASELINES[name]
    overlay = CONFIGS / "baselines" / f"{name}.json"
    for files in ([CONFIGS / "train.json"], [CONFIGS / "inference.json"], [CONFIGS / "train.json", CONFIGS / "evaluate.json"]):
        net = _parser([*files, overlay], **TINY).get_parsed_content("network_def")
        assert isinstance(net, ResAttUNet)
        assert (net.residual_encoder, net.attention_gates) == (residual, gates), files
        assert (net.decoder1.gate is not None) == gates
    assert _parser([CONFIGS / "train.json", overlay])["variant_name"] == name
    # a baseline never overwrites the shipped weights, and its evaluation and inference find its checkpoint
    ckpt = (BUNDLE / "models" / "baselines" / name / "model.pt").resolve()
    assert Path(_parser([CONFIGS / "train.json", overlay]).get_parsed_content("ckpt_dir")).resolve() == ckpt.parent
    evaluate = _parser([CONFIGS / "train.json", overlay, CONFIGS / "evaluate.json"])
    assert Path(evaluate.get_parsed_content("checkpoint")).resolve() == ckpt
    infer = _parser([CONFIGS / "inference.json", overlay])
    assert Path(infer.get_parsed_content("handlers#0#load_path")).resolve() == ckpt


def test_pretrained_path_loads_a_local_torchvision_resnet34_into_the_encoder(tmp_path):
    weights = fake_torchvision_resnet34()
    torch.save(weights, tmp_path / "resnet34.pth")
    parser = _parser([CONFIGS / "inference.json"], **{"network_def#pretrained_path": str(tmp_path / "resnet34.pth"),
                                                      "network_def#decoder_channels": [8, 8, 8, 8]})
    state = parser.get_parsed_content("network_def").state_dict()
    for key in ("conv1.weight", "layer4.2.conv2.weight", "layer2.0.downsample.1.running_var"):
        torch.testing.assert_close(state[f"encoder.{key}"], weights[key])


def test_one_epoch_of_training_writes_best_iou_checkpoint_and_logs(trained):
    state = torch.load(trained / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert "encoder.conv1.weight" in state and not any("optimizer" in k for k in state)
    assert list(trained.glob("resume_checkpoint_epoch=1.pt"))
    assert "val_iou" in (trained / "log.txt").read_text()


def test_evaluating_writes_the_shared_metric_names_on_the_validation_split(trained, tmp_path):
    run(
        "evaluating", config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")],
        logging_file=str(CONFIGS / "logging.conf"), bundle_root=str(BUNDLE), dataset_dir=str(SAMPLE / "dataset"),
        output_dir=str(tmp_path), checkpoint=str(trained / "models" / "model.pt"), eval_split="validation",
        val_count=2, **TINY,
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == METRIC_NAMES | SUMMARY_KEYS
    assert metrics["n_images"] == 2
    assert len((tmp_path / "per_image.csv").read_text().strip().splitlines()) == 3


def test_inference_on_slices_writes_masks_of_each_slice_size(trained, tmp_path):
    _infer(SAMPLE / "dataset" / "Imgs", tmp_path, **_tiny_weights(trained))
    for img in (SAMPLE / "dataset" / "Imgs").iterdir():
        mask = Image.open(tmp_path / f"{img.stem}_mask.png")
        assert mask.size == Image.open(img).size
        assert set(np.unique(np.asarray(mask))) <= {0, 255}


def test_inference_on_nifti_volume_keeps_shape_and_affine(trained, tmp_path):
    src = SAMPLE / "ct" / "example_ct_sm.nii.gz"
    _infer(src, tmp_path, **_tiny_weights(trained))
    ref, out = nib.load(src), nib.load(tmp_path / "example_ct_sm_mask.nii.gz")
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-4)
    assert set(np.unique(np.asarray(out.dataobj))) <= {0, 1}


def test_inference_on_dicom_series_keeps_series_geometry(data_root, trained, tmp_path):
    series = data_root / "ct_volumes_totalsegmentator" / "reference_files" / "example_ct_dicom"
    _infer(series, tmp_path, **_tiny_weights(trained))
    out = nib.load(tmp_path / "example_ct_dicom_mask.nii.gz")
    _, meta = ITKReader().get_data(ITKReader().read(str(series)))
    assert out.shape == tuple(int(s) for s in meta["spatial_shape"])
    np.testing.assert_allclose(out.affine, np.asarray(meta["affine"]), atol=1e-3)


def test_verify_uses_the_sample_data_named_in_train_json_and_passes():
    assert verify_dataset_dir(BUNDLE).resolve() == (SAMPLE / "dataset").resolve()
    assert verify_dataset_dir(FIRST) == FIRST / "sample_data" / "dataset"  # no verify_dataset_dir: the default
    assert verify_bundle(BUNDLE)[-1] == "TorchScript round trip"


def test_verify_names_a_verify_dataset_dir_that_is_not_a_folder(tmp_path):
    copy = tmp_path / BUNDLE.name
    shutil.copytree(CONFIGS, copy / "configs")  # the sibling bundle's sample data is not next to the copy
    with pytest.raises(BundleCheckError, match="verify_dataset_dir .* is not a folder"):
        verify_dataset_dir(copy)
