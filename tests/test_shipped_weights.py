"""The shipped ``models/model.pt`` of the ResAttUNet and IA-CNN bundles load strictly into each bundle's
``network_def`` (``inference.json``) and give the outputs they gave before the networks were rebuilt on MONAI's
``ResNet`` (ResAttUNet's encoder) and ``UpCat`` (IA-CNN's decoder stages).

The reference numbers were recorded on the same input: the shipped weights, eval mode, ``torch.rand(1, 3, 64, 64)``
from a generator seeded with 0; the output (1, 1, 64, 64) at six flat indices, and its mean. ResAttUNet's with the
network as it was before that change; the IA-CNN bundles' with the weights retrained in their version 0.3.0 (saved
with the ``UpCat`` keys; the last test renames them to the old keys and loads them through the configs' loader).
"""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigParser
from monai.handlers import CheckpointLoader

from conftest import BUNDLES

INDICES = [0, 517, 1234, 2048, 2999, 4095]
REFERENCE = {  # bundle: (output at INDICES, output mean)
    "covid19_lesion_ct_resattunet_segmentation": (
        [-1.384378, -0.94015, 0.371694, -1.257932, -0.707868, -1.379127], -0.144019),
    "polyp_endoscopy_iacnn_segmentation": (
        [-1.568565, -2.275754, -2.152355, -1.892685, -1.310668, -1.128453], -1.980435),
    "skin_lesion_dermoscopy_iacnn_segmentation": (
        [-1.343621, -1.822785, -1.890037, -1.72667, -2.023024, -1.211195], -1.87284),
}


def _network(bundle: str) -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(BUNDLES / bundle)
    return parser.get_parsed_content("network_def")


def _outputs(net: torch.nn.Module) -> tuple[list[float], float]:
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = net.eval()(x).flatten()
    return y[INDICES].tolist(), float(y.mean())


@pytest.mark.parametrize("bundle", sorted(REFERENCE), ids=lambda b: b.split("_")[0])
def test_shipped_weights_load_strictly_and_give_the_recorded_outputs(bundle):
    net = _network(bundle)
    state = torch.load(BUNDLES / bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    values, mean = _outputs(net)
    expected_values, expected_mean = REFERENCE[bundle]
    assert values == pytest.approx(expected_values, abs=1e-4)
    assert mean == pytest.approx(expected_mean, abs=1e-5)


def test_configs_checkpoint_loader_loads_the_iacnn_weights_saved_with_the_old_decoder_keys(tmp_path):
    """Weights saved before the decoder stages were built on ``UpCat`` (``up.*``, ``fuse.{0,1}.*``) still load
    through the configs' ``CheckpointLoader`` and give the same outputs as the current keys."""
    from custom_networks.nets.iacnn import _OLD_KEYS

    bundle = "polyp_endoscopy_iacnn_segmentation"
    state = torch.load(BUNDLES / bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
    old = {}
    for key, value in state.items():
        for old_part, new_part in _OLD_KEYS.items():
            key = key.replace(new_part, old_part)
        old[key] = value
    assert any(".fuse.0." in k for k in old) and not any(".upcat." in k for k in old)  # the old naming
    path = tmp_path / "old_keys.pt"
    torch.save(old, path)
    net = _network(bundle)
    CheckpointLoader(load_path=str(path), load_dict={"model": net}, map_location="cpu")(Engine(lambda e, b: None))
    values, _ = _outputs(net)
    assert values == pytest.approx(REFERENCE[bundle][0], abs=1e-4)


ENSEMBLE_BUNDLES = sorted(p.name for p in BUNDLES.iterdir() if (p / "models" / "fold0" / "model.pt").is_file())


@pytest.mark.parametrize("bundle", ENSEMBLE_BUNDLES, ids=lambda b: b.split("_")[0])
def test_shipped_fold_ensembles_are_whole_distinct_and_load_strictly(bundle):
    from tools.ensembles import fold_checkpoints

    members = fold_checkpoints(BUNDLES / bundle / "models")
    assert [p.split("/")[-2] for p in members] == [f"fold{k}" for k in range(len(members))] and len(members) >= 2
    assert (BUNDLES / bundle / "configs" / "inference_ensemble.json").is_file()
    states = [torch.load(p, map_location="cpu", weights_only=True) for p in members]
    for state in states:
        _network(bundle).load_state_dict(state, strict=True)
        assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())  # compact, as promoted
    name = next(k for k, v in states[0].items() if v.is_floating_point() and v.numel() > 1)
    assert not any(torch.equal(states[0][name], s[name]) for s in states[1:])  # members, not copies of one model
