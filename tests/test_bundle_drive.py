"""The DRIVE retinal-vessel bundle (U-Net variants) on the CPU, end to end on its two sample images: one tiny epoch of
patch training, evaluation writing the five FOV metrics with intervals (training/ and test/ naming), inference writing
a probability map and a mask of the input's size (FOV from the release's mask or derived), the grid command on the
2-variant smoke grid, and the survey grid covering every mechanism and option."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from monai.bundle import ConfigParser, run
from PIL import Image

from conftest import BUNDLES
from tools.errors import OutputError, cause_chain

BUNDLE = BUNDLES / "retinal_vessel_fundus_unetvariants_segmentation"
CONFIGS = BUNDLE / "configs"
SAMPLE = BUNDLE / "sample_data" / "dataset"
TINY = {"features": [4, 8, 16, 32], "patches_per_image": 2, "roi_size": [64, 64]}
FIVE = ("dice", "auc", "sensitivity", "specificity", "accuracy")


def _train(out: Path, **override) -> Path:
    run("training", config_file=str(CONFIGS / "train.json"), logging_file=str(CONFIGS / "logging.conf"),
        bundle_root=str(BUNDLE), dataset_dir=str(SAMPLE), output_dir=str(out), ckpt_dir=str(out / "models"),
        **{"train#trainer#max_epochs": 1, "val_interval": 1, "val_fraction": 0.5, "train#handlers#4#persist": False,
           **TINY, **override})
    return out / "models" / "model.pt"


def _evaluate(dataset_dir: Path, out: Path, checkpoint: Path, **override) -> dict:
    run("evaluating", config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")],
        logging_file=str(CONFIGS / "logging.conf"), bundle_root=str(BUNDLE), dataset_dir=str(dataset_dir),
        output_dir=str(out), checkpoint=str(checkpoint), **TINY, **override)
    return json.loads((out / "metrics.json").read_text())


def _infer(input_path: Path, out: Path, ckpt_dir: Path, **override) -> None:
    run(config_file=str(CONFIGS / "inference.json"), logging_file=str(CONFIGS / "logging.conf"),
        bundle_root=str(BUNDLE), input=str(input_path), output_dir=str(out), ckpt_dir=str(ckpt_dir),
        features=TINY["features"], roi_size=TINY["roi_size"], **override)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny network trained one epoch on one sample image (validated on the other)."""
    out = tmp_path_factory.mktemp("drive_train")
    checkpoint = _train(out)
    assert checkpoint.is_file()
    return checkpoint


def test_one_tiny_epoch_of_patch_training_saves_the_best_checkpoint_in_the_output_folder(trained):
    log = (trained.parents[1] / "log.txt").read_text()
    assert "val_dice" in log
    assert not (BUNDLE / "eval").exists() or not any((BUNDLE / "eval").rglob("model.pt"))


def test_evaluation_writes_the_five_fov_metrics_with_intervals_and_per_image_rows(trained, tmp_path):
    metrics = _evaluate(SAMPLE, tmp_path / "eval", trained)
    for name in FIVE:
        assert 0.0 <= metrics[name] <= 1.0, name
        low, high = metrics[f"{name}_ci95"]
        assert low <= metrics[name] <= high
    assert metrics["n_images"] == 2 and "bootstrap" in metrics["ci_method"] and "FOV" in metrics["fov"]
    with open(tmp_path / "eval" / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["image"] for r in rows] == ["35_training.tif", "39_training.tif"]
    assert float(rows[0]["auc"]) == pytest.approx(float(rows[0]["auc"]))


def test_evaluation_reads_the_test_naming_and_its_validation_split(trained, tmp_path):
    test = tmp_path / "test"
    for i, (image, manual, fov) in enumerate(zip(*(sorted((SAMPLE / d).iterdir()) for d in
                                                   ("images", "1st_manual", "mask"))), start=1):
        for src, folder, name in ((image, "images", f"{i:02d}_test.tif"), (manual, "1st_manual", f"{i:02d}_manual1.gif"),
                                  (fov, "mask", f"{i:02d}_test_mask.gif")):
            (test / folder).mkdir(parents=True, exist_ok=True)
            shutil.copy(src, test / folder / name)
    assert _evaluate(test, tmp_path / "all", trained)["n_images"] == 2
    assert _evaluate(test, tmp_path / "val", trained, eval_split="validation", val_fraction=0.5)["n_images"] == 1


def test_inference_writes_probability_map_and_mask_of_the_input_size_zero_outside_the_fov(trained, tmp_path):
    _infer(SAMPLE, tmp_path / "out", trained.parent)
    for image in sorted((SAMPLE / "images").iterdir()):
        size = Image.open(image).size
        prob = Image.open(tmp_path / "out" / f"{image.stem}_prob.png")
        mask = Image.open(tmp_path / "out" / f"{image.stem}_mask.png")
        assert prob.size == mask.size == size and prob.mode == mask.mode == "L"
        fov = np.asarray(Image.open(SAMPLE / "mask" / f"{image.stem}_mask.gif")) > 128
        p, m = np.asarray(prob), np.asarray(mask)
        assert set(np.unique(m)) <= {0, 255}
        assert not p[~fov].any() and not m[~fov].any()
        # the mask is the map at p >= 0.5; the PNG holds floor(255 p), so 127 is on both sides of 0.5
        assert (p[m > 0] >= 127).all() and (p[m == 0] <= 127).all()


def test_inference_on_a_single_image_derives_its_fov_and_refuses_to_overwrite(trained, tmp_path):
    image = next((SAMPLE / "images").iterdir())
    _infer(image, tmp_path / "out", trained.parent)
    prob = np.asarray(Image.open(tmp_path / "out" / f"{image.stem}_prob.png"))
    assert prob.shape == np.asarray(Image.open(image)).shape[:2]
    assert not prob[:3, :3].any()  # the black corner is outside the derived FOV
    with pytest.raises(Exception) as refused:  # MONAI wraps the OutputError in its RuntimeError
        _infer(image, tmp_path / "out", trained.parent)
    assert any(isinstance(e, OutputError) and "exist already" in str(e) for e in cause_chain(refused.value))


def test_benchmark_variants_on_the_smoke_grid_writes_csv_table_and_plot(tmp_path):
    from tools.commands.benchmark_variants import benchmark_variants

    result = benchmark_variants(BUNDLE, CONFIGS / "grids" / "smoke.json", output_dir=tmp_path / "grid",
                                dataset_dir=SAMPLE)
    with open(tmp_path / "grid" / "benchmark.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["variant"] for r in rows] == ["unet", "res_att_unet_mish"]
    assert all(0 <= float(r["dice"]) <= 1 and float(r["train_seconds"]) > 0 and int(r["params"]) > 0 for r in rows)
    assert "auc_ci95_low" in rows[0]
    table = (tmp_path / "grid" / "benchmark.md").read_text()
    assert "| unet |" in table and "`network_def#act`=\"mish\"" in table
    assert (tmp_path / "grid" / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["files"]["csv"] == str(tmp_path / "grid" / "benchmark.csv")


def _grid_values(grid: dict, key: str) -> set:
    return {v.get(key) for v in grid["variants"].values() if key in v}


def test_the_survey_grid_covers_every_mechanism_and_option():
    from tools.training_options import AUGMENTATIONS, LOSSES, OPTIMIZERS

    grid = json.loads((CONFIGS / "grids" / "survey.json").read_text())
    assert {"residual", "inception", "dense"} <= _grid_values(grid, "network_def#unit")
    assert "attention_gate" in _grid_values(grid, "network_def#skip_attention")
    assert "aspp" in _grid_values(grid, "network_def#bottleneck")
    assert {"cbam", "se"} <= _grid_values(grid, "network_def#block_attention")
    assert any(v.get("network_def", {}).get("_target_", "").endswith("variant_cascade") for v in grid["variants"].values())
    assert set(AUGMENTATIONS) - {"flip_rotate"} <= _grid_values(grid, "augmentation_name")  # flip_rotate: the default
    assert set(OPTIMIZERS) - {"adam"} <= _grid_values(grid, "optimizer_name")
    assert set(LOSSES) - {"bce_dice"} <= _grid_values(grid, "loss_name")
    assert {"mish", "prelu", "leakyrelu"} <= _grid_values(grid, "network_def#act")


@pytest.mark.parametrize("grid_name", ["survey", "smoke"])
def test_every_grid_variant_builds_its_network_loss_and_optimizer(grid_name):
    import torch

    grid = json.loads((CONFIGS / "grids" / f"{grid_name}.json").read_text())
    for name, overlay in grid["variants"].items():
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / "train.json"))
        parser.update({"bundle_root": str(BUNDLE), "features": [4, 8, 16, 32], **overlay})
        net = parser.get_parsed_content("network_def")
        parser.get_parsed_content("optimizer")
        loss = parser.get_parsed_content("loss")
        y = net.train()(torch.rand(2, 1, 32, 32))
        assert y.shape == (2, 1, 32, 32), name
        assert torch.isfinite(loss(y, (torch.rand(2, 1, 32, 32) > 0.8).float())), name


def test_inference_and_training_build_the_same_network():
    parsers = []
    for name in ("train.json", "inference.json"):
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / name))
        parsers.append(parser)
    assert parsers[0]["network_def"] == parsers[1]["network_def"]
    for key in ("features", "clahe", "intensity_mean", "intensity_std", "roi_size", "sw_overlap", "threshold"):
        assert parsers[0][key] == parsers[1][key], key
