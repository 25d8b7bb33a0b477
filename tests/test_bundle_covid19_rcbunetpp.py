"""The RCB-UNet++ COVID-19 bundle end to end on the CPU: train, resume, evaluate, infer on slices and CT volumes,
and the errors bad input gets. Training runs a tiny network for one epoch on the bundle's six sample slices."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, run
from monai.data import ITKReader
from PIL import Image

from conftest import BUNDLES

BUNDLE = BUNDLES / "covid19_lesion_ct_rcbunetpp_segmentation"
CONFIGS = BUNDLE / "configs"
SAMPLE = BUNDLE / "sample_data"
TINY = {"network_def#features": [4, 8, 8, 8, 8]}
METRIC_NAMES = {
    "dice", "iou", "precision", "sensitivity", "specificity", "accuracy", "mean_dice_256",
    "mean_sensitivity_256", "mean_specificity_256", "mean_e_measure_256", "s_measure", "mae",
}
# metrics.json beside the means: their bootstrap intervals, the image count, and the protocol's named choices
SUMMARY_KEYS = {"n_images", "ci_method", "infnet_emeasure_op", "infnet_quantised_8bit"} | {f"{k}_ci95" for k in METRIC_NAMES}


def _messages(exc: BaseException) -> str:
    """All messages of an exception chain: the workflow wraps a transform's error in its own."""
    out = []
    while exc is not None:
        out.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(out)


def _train(out: Path, dataset_dir: Path = SAMPLE / "dataset", **override) -> None:
    run(
        "training", config_file=str(CONFIGS / "train.json"), logging_file=str(CONFIGS / "logging.conf"),
        bundle_root=str(BUNDLE), dataset_dir=str(dataset_dir), output_dir=str(out), ckpt_dir=str(out / "models"),
        **{"train#trainer#max_epochs": 1, "val_interval": 1, "train#handlers#-1#persist": False, **TINY, **override},
    )


def _infer(input_path, out: Path, **override) -> None:
    run(
        config_file=str(CONFIGS / "inference.json"), logging_file=str(CONFIGS / "logging.conf"),
        bundle_root=str(BUNDLE), input=str(input_path), output_dir=str(out), **override,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train")
    _train(out)
    return out


def test_every_config_instantiates_its_workflow_objects():
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")])
    parser.update({"bundle_root": str(BUNDLE), "dataset_dir": str(SAMPLE / "dataset"), **TINY})
    assert parser.get_parsed_content("validate#evaluator") is not None
    assert parser["training"] == "@run"  # MONAI Label runs the id "run"; "training" is the same list
    infer = ConfigParser()
    infer.read_config(str(CONFIGS / "inference.json"))
    infer.update({"bundle_root": str(BUNDLE)})
    assert infer.get_parsed_content("evaluator") is not None


def test_one_epoch_of_training_writes_best_iou_checkpoint_and_logs(trained):
    state = torch.load(trained / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert any(k.startswith("heads.") for k in state)  # weights only: no optimizer state in model.pt
    assert not any("optimizer" in k for k in state)
    assert list(trained.glob("resume_checkpoint_epoch=1.pt"))
    assert list(trained.glob("events.out.tfevents.*"))
    assert "val_iou" in (trained / "log.txt").read_text()


def test_training_resumes_from_checkpoint(trained, tmp_path):
    resume = next(trained.glob("resume_checkpoint_epoch=1.pt"))
    _train(tmp_path, resume_from=str(resume), **{"train#trainer#max_epochs": 2})
    log = (tmp_path / "log.txt").read_text()
    assert "Restored all variables" in log
    assert "Epoch[2] Complete" in log and "Epoch[1] Complete" not in log
    assert list(tmp_path.glob("resume_checkpoint_epoch=2.pt"))


def _resume_and_look(out: Path, resume: Path, early_stopping: dict) -> dict:
    """Resume ``resume`` into ``out`` for one more epoch with early stopping attached (as ``tools crossval`` does);
    return the evaluator's best score and early stopping's state as the first resumed iteration sees them."""
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    from tools.run_control import attach_early_stopping

    wf = ConfigWorkflow(config_file=str(CONFIGS / "train.json"), logging_file=str(CONFIGS / "logging.conf"),
                        meta_file=str(CONFIGS / "metadata.json"), workflow_type="train", bundle_root=str(BUNDLE),
                        dataset_dir=str(SAMPLE / "dataset"), output_dir=str(out), ckpt_dir=str(out / "models"),
                        resume_from=str(resume), **{"train#trainer#max_epochs": 2, "val_interval": 1,
                                                    "train#handlers#-1#persist": False, **TINY})
    wf.initialize()
    trainer, evaluator = wf.parser.get_parsed_content("train#trainer"), wf.parser.get_parsed_content("validate#evaluator")
    stop = attach_early_stopping(trainer, evaluator, 5)
    seen: dict = {}

    @trainer.on(Events.ITERATION_STARTED)  # after the resume handlers (Events.STARTED) have loaded
    def _look(_):
        seen.setdefault("best", (evaluator.state.best_metric, evaluator.state.best_metric_epoch))
        seen.setdefault("early_stopping", (stop.counter, stop.best_score))

    state = torch.load(resume, map_location="cpu", weights_only=True)
    state["run_state"]["early_stopping"] = early_stopping
    torch.save(state, resume)
    wf.run()
    wf.finalize()
    return seen


def test_a_resumed_run_goes_on_with_the_best_score_and_patience_of_the_interrupted_one(tmp_path):
    out = tmp_path / "run"
    _train(out)  # epoch 1: its validation is the best so far, models/model.pt
    resume = next(out.glob("resume_checkpoint_epoch=1.pt"))
    saved = torch.load(resume, map_location="cpu", weights_only=True)["run_state"]
    assert saved["best_metric_epoch"] == 1 and len(saved["key_metric_checkpoint"]["_saved"]) == 1
    # as if the interrupted run had had early stopping, 2 validations without improvement
    seen = _resume_and_look(out, resume, {"counter": 2, "best_score": saved["best_metric"], "threshold_mode": "abs"})
    # MONAI's evaluator would start again at -1 (a worse validation then overwrote models/model.pt), ignite's early
    # stopping at 0
    assert seen["best"] == (saved["best_metric"], 1)
    assert seen["early_stopping"] == (2, saved["best_metric"])


def test_a_run_resumed_into_another_folder_tracks_its_best_model_afresh(tmp_path):
    _train(tmp_path / "first")
    resume = next((tmp_path / "first").glob("resume_checkpoint_epoch=1.pt"))
    seen = _resume_and_look(tmp_path / "second", resume, {"counter": 1, "best_score": 0.5, "threshold_mode": "abs"})
    assert seen["best"] == (-1, -1) and seen["early_stopping"] == (1, 0.5)  # the best model is not in "second"
    assert (tmp_path / "second" / "models" / "model.pt").is_file()


def test_training_names_a_slice_whose_mask_is_empty(tmp_path):
    data = tmp_path / "data"
    for sub in ("Imgs", "GT"):
        (data / sub).mkdir(parents=True)
        for f in (SAMPLE / "dataset" / sub).iterdir():
            (data / sub / f.name).write_bytes(f.read_bytes())
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(data / "GT" / "0.png")
    with pytest.raises(Exception) as e:
        _train(tmp_path / "out", dataset_dir=data)
    assert "0.png: mask 'label' is empty" in _messages(e.value)


def test_evaluating_writes_metrics_json_and_per_image_csv(trained, tmp_path):
    run(
        "evaluating", config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")],
        logging_file=str(CONFIGS / "logging.conf"), bundle_root=str(BUNDLE), dataset_dir=str(SAMPLE / "dataset"),
        output_dir=str(tmp_path), checkpoint=str(trained / "models" / "model.pt"), **TINY,
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == METRIC_NAMES | SUMMARY_KEYS
    assert metrics["n_images"] == 6
    assert all(0.0 <= metrics[k] <= 1.0 for k in METRIC_NAMES - {"mean_e_measure_256"})
    assert len((tmp_path / "per_image.csv").read_text().strip().splitlines()) == 7


def test_evaluating_a_folder_smaller_than_the_validation_split(tmp_path):
    # 2 slices, fewer than val_count + 1: the training split cannot be drawn, and evaluating a folder must not need it
    data = tmp_path / "data"
    for sub in ("Imgs", "GT"):
        (data / sub).mkdir(parents=True)
        for f in sorted((SAMPLE / "dataset" / sub).iterdir())[:2]:
            (data / sub / f.name).write_bytes(f.read_bytes())
    run(
        "evaluating", config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")],
        logging_file=str(CONFIGS / "logging.conf"), bundle_root=str(BUNDLE), dataset_dir=str(data),
        output_dir=str(tmp_path / "eval"),
    )
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["n_images"] == 2


def test_inference_on_slices_writes_masks_of_each_slice_size(tmp_path):
    _infer(SAMPLE / "dataset" / "Imgs", tmp_path)
    for img in (SAMPLE / "dataset" / "Imgs").iterdir():
        mask = Image.open(tmp_path / f"{img.stem}_mask.png")
        assert mask.size == Image.open(img).size
        assert set(np.unique(np.asarray(mask))) <= {0, 255}


def test_inference_on_nifti_volume_keeps_shape_and_affine(tmp_path):
    src = SAMPLE / "ct" / "example_ct_sm.nii.gz"
    _infer(src, tmp_path)
    ref, out = nib.load(src), nib.load(tmp_path / "example_ct_sm_mask.nii.gz")
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-4)
    assert set(np.unique(np.asarray(out.dataobj))) <= {0, 1}


def test_inference_on_dicom_series_keeps_series_geometry(data_root, tmp_path):
    series = data_root / "ct_volumes_totalsegmentator" / "reference_files" / "example_ct_dicom"
    _infer(series, tmp_path)
    out = nib.load(tmp_path / "example_ct_dicom_mask.nii.gz")
    img = ITKReader().read(str(series))
    _, meta = ITKReader().get_data(img)
    assert out.shape == tuple(int(s) for s in meta["spatial_shape"])
    np.testing.assert_allclose(out.affine, np.asarray(meta["affine"]), atol=1e-3)
    # TotalSegmentator's NIfTI of the same series (other axis order) describes the same voxel grid.
    ref = nib.load(series.parent / "example_seg_dicom.nii.gz")
    np.testing.assert_allclose(nib.as_closest_canonical(out).affine, nib.as_closest_canonical(ref).affine, atol=1e-3)
    assert nib.as_closest_canonical(out).shape == nib.as_closest_canonical(ref).shape


def test_inference_names_a_truncated_slice_and_writes_nothing(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "9.jpg").write_bytes((SAMPLE / "dataset" / "Imgs" / "1.jpg").read_bytes()[:3000])
    with pytest.raises(Exception) as e:
        _infer(src, tmp_path / "out")
    assert "9.jpg: cannot be read" in _messages(e.value)
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


def test_inference_rejects_a_2d_nifti_as_volume(tmp_path):
    path = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 32), np.int16), np.eye(4)), path)
    with pytest.raises(Exception) as e:
        _infer(path, tmp_path / "out")
    assert "flat.nii.gz: 'image' has 2 spatial dimensions" in _messages(e.value)


def test_inference_rejects_a_volume_with_nan(tmp_path):
    path = tmp_path / "nan.nii.gz"
    vol = np.full((16, 16, 4), -500.0, np.float32)
    vol[3, 3, 1] = np.nan
    nib.save(nib.Nifti1Image(vol, np.eye(4)), path)
    with pytest.raises(Exception) as e:
        _infer(path, tmp_path / "out")
    assert "nan.nii.gz: 'image' holds NaN" in _messages(e.value)


def test_evaluating_the_validation_split_from_seg_data_root(data_root, tmp_path, monkeypatch):
    # no dataset_dir override: the data root comes from the environment, as documented
    monkeypatch.setenv("SEG_DATA_ROOT", str(data_root))
    run(
        "evaluating", config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")],
        logging_file=str(CONFIGS / "logging.conf"), bundle_root=str(BUNDLE), eval_split="validation",
        output_dir=str(tmp_path),
    )
    rows = (tmp_path / "per_image.csv").read_text().strip().splitlines()[1:]
    assert sorted(r.split(",")[0] for r in rows) == ["1.jpg", "24.jpg", "39.jpg", "46.jpg", "53.jpg"]  # the images, not their masks


def test_cosine_recipe_decays_the_learning_rate_over_max_epochs_and_a_resumed_run_keeps_its_place(tmp_path):
    recipe = str(CONFIGS / "recipes" / "cosine_lr.json")
    common = {"config_file": [str(CONFIGS / "train.json"), recipe], "logging_file": str(CONFIGS / "logging.conf"),
              "bundle_root": str(BUNDLE), "dataset_dir": str(SAMPLE / "dataset"), "val_interval": 3,
              "train#handlers#4#persist": False, **TINY}  # the recipe appends its handler after the progress bar

    def train(out: Path, **override) -> dict:
        run("training", output_dir=str(out), ckpt_dir=str(out / "models"), **{**common, **override})
        return torch.load(max(out.glob("resume_checkpoint_epoch=*.pt"), key=lambda p: p.stat().st_mtime),
                          map_location="cpu", weights_only=True)

    whole = train(tmp_path / "whole", **{"train#trainer#max_epochs": 3})
    assert whole["lr_scheduler"]["last_epoch"] == 3 and whole["lr_scheduler"]["T_max"] == 3
    assert whole["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-9)  # eta_min at T_max
    # the same schedule interrupted after epoch 1 (T_max held at 3) and resumed to the end
    first = tmp_path / "first"
    train(first, **{"train#trainer#max_epochs": 1, "lr_scheduler#T_max": 3})
    lr_1 = torch.load(next(first.glob("resume_checkpoint_epoch=1.pt")), map_location="cpu",
                      weights_only=True)["optimizer"]["param_groups"][0]["lr"]
    assert lr_1 == pytest.approx(1e-3 * (1 + np.cos(np.pi / 3)) / 2)
    resumed = train(tmp_path / "resumed", resume_from=str(next(first.glob("resume_checkpoint_epoch=1.pt"))),
                    **{"train#trainer#max_epochs": 3})
    assert resumed["lr_scheduler"]["last_epoch"] == 3
    assert resumed["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-9)
