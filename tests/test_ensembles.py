"""Ensembles of trained networks with MONAI's tools: mean / vote postprocessing, the evaluator, loading weights."""

from __future__ import annotations

import pytest
import torch
from monai.data import DataLoader, Dataset

from custom_networks.nets import VariantUNet
from tools.ensembles import ensemble_evaluator, ensemble_postprocessing, load_networks


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def nets(n: int = 3) -> list[VariantUNet]:
    torch.manual_seed(0)
    return [VariantUNet(2, 3, 1, (4, 8), unit=u).eval() for u in ("double_conv", "residual", "dense")[:n]]


def test_mean_is_the_weighted_mean_of_sigmoids_then_threshold():
    logits = {f"pred_{i}": torch.randn(1, 4, 4) for i in range(3)}
    probs = torch.stack([torch.sigmoid(v) for v in logits.values()])
    w = torch.tensor([0.5, 0.3, 0.2])
    out = ensemble_postprocessing(list(logits), "mean", weights=[0.5, 0.3, 0.2], threshold=None)(dict(logits))
    torch.testing.assert_close(out["pred"], (probs * w[:, None, None, None]).sum(0) / w.sum())
    mask = ensemble_postprocessing(list(logits), "mean")(dict(logits))["pred"]
    torch.testing.assert_close(mask, (probs.mean(0) >= 0.5).float())


def test_vote_is_the_per_pixel_majority_and_ties_go_to_background():
    on, off = torch.full((1, 2, 2), 5.0), torch.full((1, 2, 2), -5.0)
    three = {"pred_0": on, "pred_1": on, "pred_2": off}
    assert ensemble_postprocessing(list(three), "vote")(dict(three))["pred"].eq(1).all()
    two = {"pred_0": on, "pred_1": off}
    assert ensemble_postprocessing(list(two), "vote")(dict(two))["pred"].eq(0).all()


@pytest.mark.parametrize("kwargs, message", [({"mode": "max"}, r"mode must be one of \('mean', 'vote'\)"),
                                             ({"mode": "vote", "threshold": None}, "needs a threshold"),
                                             ({"weights": [1.0]}, "one value per network"),
                                             ({"mode": "vote", "weights": [1.0, 1.0]}, "weights need mode 'mean'")])
def test_postprocessing_rejects_inconsistent_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ensemble_postprocessing(["pred_0", "pred_1"], **kwargs)


def test_evaluator_leaves_the_mean_probability_of_the_networks_under_pred():
    networks = nets()
    images = [torch.rand(3, 8, 8) for _ in range(2)]
    loader = DataLoader(Dataset([{"image": im, "label": torch.zeros(1, 8, 8)} for im in images]), batch_size=2)
    evaluator = ensemble_evaluator("cpu", loader, networks, mode="mean")
    evaluator.run()
    preds = [item["pred"] for item in evaluator.state.output]
    with torch.no_grad():
        expected = torch.stack([torch.sigmoid(n(torch.stack(images))) for n in networks]).mean(0)
    torch.testing.assert_close(torch.stack([p.as_tensor() for p in preds]), expected)


def test_load_networks_reads_state_dicts_and_checkpoints_into_eval_mode(tmp_path):
    trained = nets(2)
    torch.save(trained[0].state_dict(), tmp_path / "a.pt")
    torch.save({"model": trained[1].state_dict(), "optimizer": {}}, tmp_path / "b.pt")
    torch.manual_seed(1)
    fresh = [VariantUNet(2, 3, 1, (4, 8), unit=u).train() for u in ("double_conv", "residual")]
    loaded = load_networks(fresh, [tmp_path / "a.pt", tmp_path / "b.pt"])
    for a, b in zip(loaded, trained):
        assert not a.training
        for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
            torch.testing.assert_close(pa, pb)
    with pytest.raises(ValueError, match="one checkpoint per network"):
        load_networks(fresh, [tmp_path / "a.pt"])


def test_evaluator_applies_extra_postprocessing_after_the_combination():
    from monai.transforms import MaskIntensityd

    networks = nets(2)
    images = [torch.rand(3, 8, 8) for _ in range(2)]
    fov = torch.zeros(1, 8, 8)
    fov[:, 2:6, 2:6] = 1
    loader = DataLoader(Dataset([{"image": im, "label": torch.zeros(1, 8, 8), "fov": fov} for im in images]),
                        batch_size=2)
    evaluator = ensemble_evaluator("cpu", loader, networks, mode="mean",
                                   postprocessing=[MaskIntensityd(keys="pred", mask_key="fov")])
    evaluator.run()
    for item in evaluator.state.output:
        pred = item["pred"].as_tensor()
        assert (pred[fov == 0] == 0).all() and (pred[fov == 1] > 0).all()  # masked outside, probabilities inside
