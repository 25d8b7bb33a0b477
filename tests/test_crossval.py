"""k-fold cross-validation (``python -m tools crossval``), its promotion to a fold ensemble and the ensemble's
inference config, and the semi-supervised recipe (``configs/train_semi.json``), end to end on the RCB-UNet++ bundle's
six sample slices with a tiny network: 2 folds x 1 epoch, 2 rounds x 1 epoch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import run
from PIL import Image

from conftest import BUNDLES, REPO
from tools.commands.crossval import CrossvalError, crossval
from tools.commands.promote import promote_crossval
from tools.data import fold_groups, kfold_split
from tools.semi_supervised import LabelledPlusPseudoSampler

BUNDLE = BUNDLES / "covid19_lesion_ct_rcbunetpp_segmentation"
CONFIGS = BUNDLE / "configs"
SAMPLE = BUNDLE / "sample_data"
TINY = {"network_def#features": [4, 8, 8, 8, 8]}
QUIET = {"val_interval": 1, "train#handlers#-1#persist": False}


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cv")
    crossval(BUNDLE, folds=2, output_dir=out, max_epochs=1, overrides={**TINY, **QUIET},
             dataset_dir=SAMPLE / "dataset", patience=2)
    return out


def test_crossval_help_documents_the_command():
    res = subprocess.run([sys.executable, "-m", "tools", "crossval", "--help"], cwd=REPO, capture_output=True,
                         text=True, env={"PAGER": "cat", "PATH": "/usr/bin:/bin"}, timeout=120)
    assert res.returncode == 0, res.stderr
    text = res.stdout + res.stderr  # fire writes help to one or the other, depending on its pager
    for flag in ("--folds", "--output_dir", "--max_epochs", "--overrides", "--config", "--patience", "--keep"):
        assert flag in text


def test_folds_are_disjoint_cover_the_data_and_pool_every_item_once(cv_run):
    result = json.loads((cv_run / "crossval.json").read_text())
    images = sorted(str(p) for p in (SAMPLE / "dataset" / "Imgs").iterdir())
    held = [set(f["val_items"]) for f in result["folds"]]
    assert len(held) == 2 and not held[0] & held[1]
    assert sorted(held[0] | held[1]) == images
    for f in result["folds"]:
        assert {"fold", "val_items", "best_epoch", "seconds", "metrics"} <= set(f)
        assert 0.0 <= f["metrics"]["dice"] <= 1.0
    pooled = result["pooled"]
    assert pooled["n_images"] == len(images)
    assert {"dice", "dice_ci95", "mean_dice_256", "mean_dice_256_ci95", "iou"} <= set(pooled)
    rows = (cv_run / "per_image.csv").read_text().splitlines()
    assert len(rows) == len(images) + 1 and "fold" in rows[0]
    assert "| pooled | 6 |" in (cv_run / "crossval.md").read_text()


def test_a_finished_run_is_reused_and_other_settings_are_refused(cv_run):
    before = (cv_run / "fold0" / "result.json").read_text()
    again = crossval(BUNDLE, folds=2, output_dir=cv_run, max_epochs=1, overrides={**TINY, **QUIET},
                     dataset_dir=SAMPLE / "dataset", patience=2)
    assert (cv_run / "fold0" / "result.json").read_text() == before
    assert again["pooled"]["n_images"] == 6
    with pytest.raises(CrossvalError, match="other settings"):
        crossval(BUNDLE, folds=2, output_dir=cv_run, max_epochs=2, overrides={**TINY, **QUIET},
                 dataset_dir=SAMPLE / "dataset")


def test_from_run_evaluates_the_fold_models_again_without_training(cv_run, tmp_path):
    out = tmp_path / "again"
    result = crossval(BUNDLE, folds=2, output_dir=out, overrides={**TINY, **QUIET, "eval_threshold": 0.9},
                      dataset_dir=SAMPLE / "dataset", from_run=cv_run)
    first = json.loads((cv_run / "crossval.json").read_text())
    assert not (out / "fold0" / "train").exists() and not (out / "fold0" / "models").exists()
    for f, g in zip(result["folds"], first["folds"]):
        assert f["evaluated_from"] == str(cv_run / f"fold{f['fold']}" / "models" / "model.pt")
        assert (f["epochs"], f["seconds"], f["val_items"]) == (g["epochs"], g["seconds"], g["val_items"])
    assert "Evaluation only" in (out / "crossval.md").read_text()
    with pytest.raises(CrossvalError, match="folds"):
        crossval(BUNDLE, folds=3, output_dir=tmp_path / "other", overrides={**TINY, **QUIET},
                 dataset_dir=SAMPLE / "dataset", from_run=cv_run)


def test_from_two_runs_scores_each_fold_with_the_ensemble_of_their_fold_models(cv_run, tmp_path):
    # the same run twice: the ensemble of two equal members must score as the member alone
    single = json.loads((cv_run / "crossval.json").read_text())
    result = crossval(BUNDLE, folds=2, output_dir=tmp_path / "ens", overrides={**TINY, **QUIET},
                      dataset_dir=SAMPLE / "dataset", from_run=f"{cv_run},{cv_run}")
    for f, g in zip(result["folds"], single["folds"]):
        assert f["evaluated_from"] == [str(cv_run / f"fold{f['fold']}" / "models" / "model.pt")] * 2
        assert f["seconds"] == pytest.approx(2 * g["seconds"], abs=0.11) and f["val_items"] == g["val_items"]
        state = torch.load(tmp_path / "ens" / f"fold{f['fold']}" / "ensemble.pt", weights_only=True)
        assert {k.split(".")[1] for k in state} == {"0", "1"}
    for metric in ("dice", "iou", "mean_dice_256"):
        assert result["pooled"][metric] == pytest.approx(single["pooled"][metric], abs=1e-3)
    assert "mean-probability ensemble" in (tmp_path / "ens" / "crossval.md").read_text()


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].float(), b[k].float()) for k in a)


def test_keep_last_scores_each_fold_with_its_last_epochs_weights_and_keeps_the_best_beside_them(tmp_path):
    out = tmp_path / "last"
    result = crossval(BUNDLE, folds=2, output_dir=out, max_epochs=2, overrides={**TINY, **QUIET},
                      dataset_dir=SAMPLE / "dataset", keep="last")
    assert result["settings"]["keep"] == "last"
    for f in result["folds"]:
        fold = out / f"fold{f['fold']}"
        resume = torch.load(next((fold / "train").glob("resume_checkpoint_epoch=2.pt")), weights_only=True)
        kept = torch.load(fold / "models" / "model.pt", weights_only=True)
        assert f["kept_epoch"] == 2 and (fold / "models" / "model_best.pt").is_file()
        assert _same_weights(kept, resume["model"])
    assert "last epoch's weights" in (out / "crossval.md").read_text()
    with pytest.raises(CrossvalError, match="keep must be one of"):
        crossval(BUNDLE, folds=2, output_dir=tmp_path / "bad", dataset_dir=SAMPLE / "dataset", keep="final")


def test_from_run_with_keep_last_scores_the_last_resume_checkpoints_weights(cv_run, tmp_path):
    # cv_run trained one epoch and validated it: its best model is its last, so the scores must agree
    out = tmp_path / "from_last"
    result = crossval(BUNDLE, folds=2, output_dir=out, overrides={**TINY, **QUIET}, dataset_dir=SAMPLE / "dataset",
                      from_run=cv_run, keep="last")
    first = json.loads((cv_run / "crossval.json").read_text())
    for f in result["folds"]:
        extracted = out / f"fold{f['fold']}" / "model_last_0.pt"
        assert f["evaluated_from"] == str(extracted) and f["kept_epoch"] == 1
        resume = torch.load(next((cv_run / f"fold{f['fold']}" / "train").glob("resume_*.pt")), weights_only=True)
        assert _same_weights(torch.load(extracted, weights_only=True), resume["model"])
    for metric in ("dice", "mean_dice_256"):
        assert result["pooled"][metric] == pytest.approx(first["pooled"][metric], abs=1e-3)
    bare = tmp_path / "bare"  # a run folder without resume checkpoints: named, not guessed
    shutil.copytree(cv_run, bare, ignore=shutil.ignore_patterns("resume_*.pt"))
    with pytest.raises(CrossvalError, match="no resume checkpoint"):
        crossval(BUNDLE, folds=2, output_dir=tmp_path / "x", overrides={**TINY, **QUIET},
                 dataset_dir=SAMPLE / "dataset", from_run=bare, keep="last")


def test_ensemble_state_dict_loads_into_replicate_as_the_mean_of_its_members(tmp_path):
    from custom_networks.nets import RCBUNetPlusPlus
    from tools.ensembles import ensemble_state_dict, replicate

    nets, paths = [], []
    for i in range(2):
        torch.manual_seed(i)
        nets.append(RCBUNetPlusPlus(spatial_dims=2, in_channels=1, out_channels=1, features=(4, 8, 8, 8, 8)).eval())
        paths.append(tmp_path / f"m{i}.pt")
        torch.save({"model": nets[-1].state_dict()} if i else nets[-1].state_dict(), paths[-1])
    ensemble = replicate(nets[0], 2)
    ensemble.load_state_dict(ensemble_state_dict(paths))
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        want = (torch.sigmoid(nets[0](x)) + torch.sigmoid(nets[1](x))) / 2
        assert not torch.allclose(torch.sigmoid(nets[0](x)), torch.sigmoid(nets[1](x)))
        assert torch.allclose(torch.sigmoid(ensemble.eval()(x)), want, atol=1e-5)
    torch.save([1, 2], tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt"):
        ensemble_state_dict([tmp_path / "bad.pt"])


def test_json_words_on_the_command_line_reach_the_config_as_json_values():
    # fire parses --overrides '{"keep_teacher": false}' as Python: false, true and null arrive as strings, and
    # bool("false") is True (a students-only semi-supervised run once kept its teacher so)
    from fire.parser import DefaultParseValue

    from tools.commands.runs import _parse_overrides

    raw = DefaultParseValue('{"keep_teacher": false, "teacher_checkpoint": null, "flags": [true, "x"], "n": 4}')
    assert raw["keep_teacher"] == "false"
    assert _parse_overrides(raw) == {"keep_teacher": False, "teacher_checkpoint": None, "flags": [True, "x"], "n": 4}
    assert _parse_overrides('{"keep_teacher": false}') == {"keep_teacher": False}


def test_kfold_split_is_deterministic_and_keeps_groups_whole():
    items = [{"image": f"/d/images/{i}.jpg"} for i in range(1, 80)]
    a = [kfold_split(items, 5, k, seed=3, group="clip")[1] for k in range(5)]
    b = [kfold_split(list(reversed(items)), 5, k, seed=3, group="clip")[1] for k in range(5)]
    assert a == b  # the order of the datalist does not matter, only names and seed
    clips = [set(fold_groups(v, "clip")) for v in a]
    for i in range(5):
        for j in range(i + 1, 5):
            assert not clips[i] & clips[j]  # no clip in two folds
    assert sum(len(v) for v in a) == len(items)
    assert [kfold_split(items, 5, k, seed=4)[1] for k in range(5)] != [kfold_split(items, 5, k, seed=3)[1]
                                                                       for k in range(5)]
    subjects = [{"image": f"/s/images/{s}{t}.nii.gz"} for s in ("01", "02", "03") for t in ("", "_fu")]
    for k in range(3):
        val = kfold_split(subjects, 3, k, group="subject")[1]
        assert len({fold_groups([v], "subject")[0] for v in val}) == 1 and len(val) == 2
    with pytest.raises(ValueError, match="n_folds"):
        kfold_split(items[:3], 5, 0)
    with pytest.raises(ValueError, match="fold must be"):
        kfold_split(items, 5, 5)


@pytest.fixture(scope="module")
def ensemble_bundle(cv_run, tmp_path_factory) -> Path:
    """A copy of the bundle whose inference network is the tiny one, with the crossval run promoted into it."""
    dst = tmp_path_factory.mktemp("bundle") / BUNDLE.name
    shutil.copytree(BUNDLE, dst, ignore=shutil.ignore_patterns("eval"))
    cfg = json.loads((dst / "configs" / "inference.json").read_text())
    cfg["network_def"]["features"] = TINY["network_def#features"]
    (dst / "configs" / "inference.json").write_text(json.dumps(cfg, indent=4))
    shipped = (dst / "models" / "model.pt").read_bytes()
    (dst / "models" / "fold7").mkdir(parents=True)  # a member of an earlier, larger ensemble
    (dst / "models" / "fold7" / "model.pt").write_bytes(shipped)
    promoted = promote_crossval(cv_run, dst, choice="auto")
    assert promoted["choice"] == "ensemble"
    assert (dst / "models" / "model.pt").read_bytes() == shipped  # the single model is left as it was
    assert sorted(p.name for p in (dst / "models").glob("fold*")) == ["fold0", "fold1"]  # only this run's folds
    return dst


def test_promote_ships_every_fold_and_writes_the_choice_into_the_docs(ensemble_bundle):
    for k in range(2):
        state = torch.load(ensemble_bundle / "models" / f"fold{k}" / "model.pt", map_location="cpu", weights_only=True)
        assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    doc = (ensemble_bundle / "docs" / "crossval.md").read_text()
    assert "fold ensemble" in doc and "Pooled out-of-fold dice" in doc


def test_promote_ships_the_weights_each_fold_was_scored_with_and_refuses_a_two_run_ensemble(cv_run, ensemble_bundle,
                                                                                            tmp_path):
    last = tmp_path / "from_last"  # evaluation only, last weights: no fold<k>/models/ folder of its own
    crossval(BUNDLE, folds=2, output_dir=last, overrides={**TINY, **QUIET}, dataset_dir=SAMPLE / "dataset",
             from_run=cv_run, keep="last")
    dst = tmp_path / BUNDLE.name
    shutil.copytree(ensemble_bundle, dst)
    promote_crossval(last, dst, choice="ensemble")
    for k in range(2):
        shipped = torch.load(dst / "models" / f"fold{k}" / "model.pt", weights_only=True)
        scored = torch.load(last / f"fold{k}" / "model_last_0.pt", weights_only=True)
        assert shipped.keys() == scored.keys()
        assert all(torch.equal(shipped[n], scored[n].half()) for n in shipped if shipped[n].is_floating_point())
    two = tmp_path / "two"
    crossval(BUNDLE, folds=2, output_dir=two, overrides={**TINY, **QUIET}, dataset_dir=SAMPLE / "dataset",
             from_run=f"{cv_run},{cv_run}")
    with pytest.raises(CrossvalError, match="ensemble of 2 runs"):
        promote_crossval(two, dst, choice="ensemble")


def _infer_ensemble(bundle: Path, input_path: Path, out: Path) -> None:
    run(config_file=[str(bundle / "configs" / "inference.json"), str(bundle / "configs" / "inference_ensemble.json")],
        logging_file=str(bundle / "configs" / "logging.conf"), bundle_root=str(bundle), input=str(input_path),
        output_dir=str(out))


def test_ensemble_inference_writes_a_mask_for_a_slice(ensemble_bundle, tmp_path):
    slices = tmp_path / "in"
    slices.mkdir()
    shutil.copy(SAMPLE / "dataset" / "Imgs" / "24.jpg", slices)
    _infer_ensemble(ensemble_bundle, slices, tmp_path / "out")
    masks = list((tmp_path / "out").glob("24*"))
    assert len(masks) == 1
    with Image.open(masks[0]) as m, Image.open(slices / "24.jpg") as im:
        assert m.size == im.size


def test_ensemble_inference_on_a_ct_volume_keeps_shape_and_affine(ensemble_bundle, tmp_path):
    src = SAMPLE / "ct" / "example_ct_sm.nii.gz"
    _infer_ensemble(ensemble_bundle, src, tmp_path)
    ref, out = nib.load(src), nib.load(tmp_path / "example_ct_sm_mask.nii.gz")
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-4)
    assert set(np.unique(np.asarray(out.dataobj))) <= {0, 1}


def test_ensemble_config_without_fold_models_names_the_fix(tmp_path):
    from tools.ensembles import fold_checkpoints

    with pytest.raises(FileNotFoundError, match="tools promote"):
        fold_checkpoints(tmp_path)


def _train_semi(tmp_path: Path, **overrides) -> tuple[Path, Path]:
    """Three sample slices as the unlabelled folder; a 1-epoch teacher and 1-epoch students of the tiny network."""
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    for name in ("0.jpg", "39.jpg", "53.jpg"):
        shutil.copy(SAMPLE / "dataset" / "Imgs" / name, unlabelled / f"u{name}")
    out = tmp_path / "semi"
    run("training", config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "train_semi.json")],
        logging_file=str(CONFIGS / "logging.conf"), bundle_root=str(BUNDLE), dataset_dir=str(SAMPLE / "dataset"),
        output_dir=str(out), ckpt_dir=str(out / "models"), unlabelled_dir=str(unlabelled),
        **{"train#trainer#max_epochs": 1, "student_epochs": 1, "pseudo_per_epoch": 2, **TINY, **QUIET, **overrides})
    return unlabelled, out


def test_semi_supervised_config_trains_two_rounds_end_to_end(tmp_path):
    unlabelled, out = _train_semi(tmp_path, semi_rounds=2)
    assert (out / "models" / "model.pt").is_file()
    for r in (1, 2):
        done = json.loads((out / f"round{r}" / "done.json").read_text())
        assert done["round"] == r and done["pseudo_labelled"] == 3
        masks = sorted((out / f"round{r}" / "pseudo").glob("*.png"))
        assert [m.stem for m in masks] == ["u0", "u39", "u53"]
        with Image.open(masks[0]) as m, Image.open(unlabelled / "u0.jpg") as im:
            assert m.size == im.size and set(np.unique(np.asarray(m))) <= {0, 255}
        assert (out / f"round{r}" / "model.pt").is_file()
    window = json.loads((out / "unlabelled_window" / "window.json").read_text())  # step 0: the labelled slices' window
    assert len(window["written"]) == 3 and all(v["used"] for v in window["report"]["volumes"].values())


def test_semi_supervised_without_the_teacher_keeps_the_best_student(tmp_path):
    _, out = _train_semi(tmp_path, semi_rounds=1, keep_teacher=False, unlabelled_every=2, harmonise_window=False)
    done = json.loads((out / "round1" / "done.json").read_text())
    assert done["pseudo_labelled"] == 2  # every 2nd of the 3 slices
    teacher, kept = (out / "round0" / "model.pt").read_bytes(), (out / "models" / "model.pt").read_bytes()
    assert kept == (out / "round1" / "model.pt").read_bytes() and kept != teacher


def test_soft_pseudo_labels_are_probability_maps_and_train_as_graded_targets(tmp_path):
    _, out = _train_semi(tmp_path, semi_rounds=1, pseudo_labels="soft", harmonise_window=False)
    masks = sorted((out / "round1" / "pseudo").glob("*.png"))
    assert len(masks) == 3 and (out / "round1" / "done.json").is_file()
    values = np.unique(np.concatenate([np.asarray(Image.open(m)).ravel() for m in masks]))
    assert len(set(values) - {0, 255}) > 0  # graded, not thresholded
    from tools.pipelines import slice_loading
    from monai.transforms import Compose

    item = {"image": str(SAMPLE / "dataset" / "Imgs" / "0.jpg"), "label": str(masks[0])}
    soft = Compose(slice_loading(allow_empty_label=True, soft_label=True))(item)["label"]
    assert 0.0 <= float(soft.min()) and float(soft.max()) <= 1.0 and not set(torch.unique(soft).tolist()) <= {0.0, 1.0}
    with pytest.raises(RuntimeError) as refused:  # the labelled chain still refuses a graded mask
        Compose(slice_loading(allow_empty_label=True))(item)
    assert "graded mask" in str(refused.value.__cause__) and masks[0].name in str(refused.value.__cause__)


def test_given_pseudo_labels_replace_the_models_and_a_missing_one_is_named(tmp_path):
    given = tmp_path / "given"
    for d in (given, tmp_path / "a", tmp_path / "b"):
        d.mkdir()
    for name in ("0", "39"):
        shutil.copy(SAMPLE / "dataset" / "GT" / f"{name}.png", given / f"u{name}.png")
    with pytest.raises(RuntimeError) as err:  # the bundle runner wraps the error; the cause names the mask
        _train_semi(tmp_path / "a", semi_rounds=1, harmonise_window=False, given_pseudo_labels=str(given))
    cause = err.value
    while cause.__cause__ is not None:
        cause = cause.__cause__
    assert isinstance(cause, FileNotFoundError) and "u53.png" in str(cause)
    shutil.copy(SAMPLE / "dataset" / "GT" / "53.png", given / "u53.png")
    _, out = _train_semi(tmp_path / "b", semi_rounds=1, harmonise_window=False, given_pseudo_labels=str(given))
    assert json.loads((out / "round1" / "done.json").read_text())["pseudo_labelled"] == 3
    assert not (out / "round1" / "pseudo").exists()  # nothing of the model's own was written


def test_soft_pseudo_labels_without_their_own_chain_are_refused():
    from tools.semi_supervised import PseudoLabelRounds

    with pytest.raises(ValueError, match="pseudo_transform"):
        PseudoLabelRounds(None, None, torch.nn.Identity(), [], ".", ".", "m.pt", None, 1, None, None,
                          pseudo_labels="soft")
    with pytest.raises(ValueError, match="pseudo_transform"):
        PseudoLabelRounds(None, None, torch.nn.Identity(), [], ".", ".", "m.pt", None, 1, None, None,
                          pseudo_labels="confident")
    with pytest.raises(ValueError, match="one of .*'confident'"):
        PseudoLabelRounds(None, None, torch.nn.Identity(), [], ".", ".", "m.pt", None, 1, None, None,
                          pseudo_labels="graded")
    with pytest.raises(ValueError, match=r"confidence must be in \(0.5, 1\]"):
        PseudoLabelRounds(None, None, torch.nn.Identity(), [], ".", ".", "m.pt", None, 1, None, None,
                          pseudo_labels="confident", pseudo_transform=[], confidence=0.5)


def test_confident_pseudo_labels_mark_uncertain_pixels_and_the_loss_leaves_them_out(tmp_path):
    from tools.semi_supervised import UNCERTAIN
    from tools.confident_loss import IgnoreUncertainPixels

    # a confidence no teacher of one epoch reaches everywhere: some pixels of the maps are marked uncertain
    _, out = _train_semi(tmp_path, semi_rounds=1, pseudo_labels="confident", pseudo_confidence=0.6,
                         harmonise_window=False)
    masks = sorted((out / "round1" / "pseudo").glob("*.png"))
    assert len(masks) == 3 and (out / "round1" / "done.json").is_file()
    values = set(np.unique(np.concatenate([np.asarray(Image.open(m)).ravel() for m in masks])).tolist())
    assert values <= {0, UNCERTAIN, 255} and UNCERTAIN in values
    # the rendered config wraps the bundle's loss, on for confident labels only
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "train_semi.json")])
    parser.update({"bundle_root": str(BUNDLE), "dataset_dir": str(SAMPLE / "dataset"), "pseudo_labels": "confident"})
    wrapped = parser.get_parsed_content("train#trainer#loss_function")
    assert isinstance(wrapped, IgnoreUncertainPixels) and wrapped.enabled


@pytest.mark.parametrize("heads", [False, True])
def test_ignore_uncertain_pixels_gives_no_gradient_there_and_is_the_masked_dice(heads):
    from monai.losses import DiceLoss
    from tools.confident_loss import IgnoreUncertainPixels

    g = torch.Generator().manual_seed(0)
    target = (torch.rand(2, 1, 16, 16, generator=g) > 0.5).float()
    target[:, :, :4] = 128 / 255  # uncertain rows
    logits = torch.randn(2, 3, 1, 16, 16, generator=g) if heads else torch.randn(2, 1, 16, 16, generator=g)
    logits.requires_grad_(True)
    dice = DiceLoss(sigmoid=True)

    def stacked(x, y):  # RCB-UNet++'s stacked heads: the mean over heads of each head's loss
        return torch.stack([dice(h, y) for h in torch.unbind(x, 1)]).mean() if heads else dice(x, y)

    loss = IgnoreUncertainPixels(stacked)(logits, target)
    loss.backward()
    grad = logits.grad if not heads else logits.grad.transpose(0, 1)
    assert float(grad[..., :4, :].abs().max()) == 0.0 and float(grad[..., 4:, :].abs().max()) > 0
    kept = logits.detach()[..., 4:, :]  # the masked Dice is the Dice of the confident rows alone
    torch.testing.assert_close(loss.detach(), stacked(kept, target[..., 4:, :]), atol=1e-5, rtol=1e-5)
    # binary targets, or the switch off, pass through unchanged
    binary = (target > 0.75).float()
    torch.testing.assert_close(IgnoreUncertainPixels(stacked)(logits, binary), stacked(logits, binary))
    torch.testing.assert_close(IgnoreUncertainPixels(stacked, enabled=False)(logits, target), stacked(logits, target))
    with pytest.raises(ValueError, match="do not match"):
        IgnoreUncertainPixels(stacked)(logits, target[..., :8])


def test_sampler_takes_every_labelled_item_and_fresh_pseudo_items_each_epoch():
    s = LabelledPlusPseudoSampler(n_labelled=4, n_pseudo=10, pseudo_per_epoch=3, seed=0)
    first, second = list(s), list(s)
    assert len(first) == len(s) == 7
    assert set(range(4)) <= set(first) and set(range(4)) <= set(second)
    assert all(4 <= i < 14 for i in set(first) - set(range(4)))
    assert first != second
    with pytest.raises(ValueError):
        LabelledPlusPseudoSampler(0, 10, 3)


def test_group_table_lists_each_clip_worst_first_with_its_fold():
    from tools.commands.crossval_tables import group_table

    rows = [{"image": "1.jpg", "dice": "0.9", "fold": "0"}, {"image": "2.jpg", "dice": "0.7", "fold": "0"},
            {"image": "30.jpg", "dice": "0.2", "fold": "1"}, {"image": "31.jpg", "dice": "nan", "fold": "1"}]
    lines = group_table(rows, "clip", ["dice"])
    assert lines[-2:] == ["| clip02 | 1 | 2 | 0.2000 |", "| clip01 | 0 | 2 | 0.8000 |"]  # worst first; NaN left out
    assert group_table(rows, "item", ["dice"]) == []


def test_pooled_table_of_clips_adds_intervals_resampling_whole_clips():
    from tools.commands.crossval_tables import pooled_table

    rows = [{"image": f"{f}.jpg", "dice": str(0.9 if f <= 25 else 0.3 if f <= 50 else 0.6), "fold": "0"}
            for f in range(1, 68)]  # clips 1-3 of CVC-ClinicDB, each clip's frames alike
    by_frame, by_clip = pooled_table(rows, "images"), pooled_table(rows, "images", group="clip")
    assert "dice_ci95_by_clip" not in by_frame and by_clip["n_clips"] == 3
    assert by_clip["dice_ci95"] == by_frame["dice_ci95"]
    (lo_f, hi_f), (lo_c, hi_c) = by_frame["dice_ci95"], by_clip["dice_ci95_by_clip"]
    assert lo_c < lo_f and hi_c > hi_f  # three clips are less evidence than 67 frames


def test_keep_last_is_refused_for_a_semi_supervised_recipe(tmp_path):
    with pytest.raises(CrossvalError, match="keep 'last'"):
        crossval(BUNDLE, folds=2, output_dir=tmp_path / "semi", max_epochs=1, config="configs/train_semi.json",
                 overrides={**TINY, **QUIET}, dataset_dir=SAMPLE / "dataset", keep="last")
