"""Checkpoints survive an interrupted write, resumed runs keep ``n_saved``, a corrupt checkpoint's error names the
file, and the shipped weights change only by the explicit promote step (``tools.checkpoints``)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from monai.bundle import run

import tools.checkpoints as checkpoints
from tools.checkpoints import CheckpointLoader, CheckpointSaver, check_checkpoint_file, promote
from tools.errors import CheckpointError
from tools.weights import compact_weights

from conftest import BUNDLES

RCB = BUNDLES / "covid19_lesion_ct_rcbunetpp_segmentation"
SAMPLE = RCB / "sample_data" / "dataset"
TINY = {"network_def#features": [4, 8, 8, 8, 8]}


def _engine() -> Engine:
    engine = Engine(lambda e, b: None)
    engine.state.metrics = {}
    return engine


def _savers(folder: Path, net: torch.nn.Module, engine: Engine) -> None:
    """The bundles' two savers: the resume checkpoint of every epoch (n_saved=1) and the best model ``model.pt``."""
    CheckpointSaver(str(folder), {"model": net, "trainer": engine}, save_interval=1, n_saved=1,
                    file_prefix="resume").attach(engine)
    best = CheckpointSaver(str(folder), {"model": net}, save_key_metric=True, key_metric_name="score",
                           key_metric_filename="model.pt", key_metric_greater_or_equal=True)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(score=float(e.state.epoch)))
    best.attach(engine)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_checkpoints_loadable(tmp_path, monkeypatch):
    net = torch.nn.Linear(4, 2)
    engine = _engine()
    _savers(tmp_path, net, engine)
    engine.run([0], max_epochs=1)
    before = {p.name: _sha(p) for p in tmp_path.glob("*.pt")}
    assert set(before) == {"resume_checkpoint_epoch=1.pt", "model.pt"}

    def killed(obj, f, *args, **kwargs):  # the process dies half-way through writing the next checkpoint
        Path(f).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints.torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        engine.run([0], max_epochs=2)
    assert {p.name: _sha(p) for p in tmp_path.iterdir()} == before  # nothing removed, nothing half-written
    for name in before:
        torch.load(tmp_path / name, weights_only=True)


def test_a_resumed_run_removes_the_previous_runs_checkpoints_beyond_n_saved(tmp_path):
    net = torch.nn.Linear(4, 2)
    first = _engine()
    _savers(tmp_path, net, first)
    first.run([0], max_epochs=3)
    shutil.copy(tmp_path / "resume_checkpoint_epoch=3.pt", tmp_path / "resume_checkpoint_epoch=2.pt")  # an older one
    resumed = _engine()
    CheckpointLoader(str(tmp_path / "resume_checkpoint_epoch=3.pt"), {"model": net, "trainer": resumed}).attach(resumed)
    _savers(tmp_path, net, resumed)
    resumed.run([0], max_epochs=5)
    assert resumed.state.epoch == 5
    assert sorted(p.name for p in tmp_path.glob("resume_*.pt")) == ["resume_checkpoint_epoch=5.pt"]


def test_a_truncated_checkpoint_is_refused_naming_its_path_before_the_run(tmp_path):
    path = tmp_path / "resume_checkpoint_epoch=3.pt"
    torch.save({"model": torch.nn.Linear(4, 2).state_dict()}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=f"{path}: the checkpoint file is truncated or corrupt"):
        CheckpointLoader(str(path), {"model": torch.nn.Linear(4, 2)})
    with pytest.raises(CheckpointError, match=f"{path}: cannot be read as a checkpoint"):
        compact_weights(path, tmp_path / "out.pt")
    check_checkpoint_file(None)  # no resume_from: nothing to check


def test_a_checkpoint_that_does_not_load_names_its_path(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"weight": torch.zeros(3, 3)}, path)  # readable, but not this network's weights
    engine = Engine(lambda e, b: None)
    CheckpointLoader(str(path), {"model": torch.nn.Linear(4, 2)}).attach(engine)
    with pytest.raises(CheckpointError, match=f"{path}: cannot be loaded as a checkpoint of this network"):
        engine.run([0], max_epochs=1)


@pytest.fixture
def bundle_copy(tmp_path) -> Path:
    """A copy of the RCB-UNet++ bundle's configs and shipped weights (so that no test can touch the real ones)."""
    copy = tmp_path / RCB.name
    shutil.copytree(RCB / "configs", copy / "configs")
    (copy / "models").mkdir()
    shutil.copy(RCB / "models" / "model.pt", copy / "models" / "model.pt")
    return copy


@pytest.mark.slow
def test_the_documented_training_command_leaves_the_shipped_weights_and_resumes_in_its_folder(bundle_copy):
    shipped = _sha(bundle_copy / "models" / "model.pt")
    common = dict(config_file=str(bundle_copy / "configs" / "train.json"), bundle_root=str(bundle_copy),
                  dataset_dir=str(SAMPLE), **{"train#handlers#-1#persist": False, "val_interval": 1, **TINY})
    run("training", **common, **{"train#trainer#max_epochs": 1})  # no output_dir, no ckpt_dir: the defaults
    run_dir = bundle_copy / "eval"
    assert _sha(bundle_copy / "models" / "model.pt") == shipped
    assert (run_dir / "models" / "model.pt").is_file() and (run_dir / "resume_checkpoint_epoch=1.pt").is_file()
    run("training", **common, resume_from=str(run_dir / "resume_checkpoint_epoch=1.pt"),
        **{"train#trainer#max_epochs": 2})
    assert sorted(p.name for p in run_dir.glob("resume_*.pt")) == ["resume_checkpoint_epoch=2.pt"]
    assert _sha(bundle_copy / "models" / "model.pt") == shipped


def test_promote_writes_a_runs_best_model_compactly_and_refuses_another_network(bundle_copy, tmp_path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle_copy / "configs" / "inference.json"))
    net = parser.get_parsed_content("network_def")
    run_dir = tmp_path / "run"
    (run_dir / "models").mkdir(parents=True)
    torch.save(net.state_dict(), run_dir / "models" / "model.pt")
    shipped = _sha(bundle_copy / "models" / "model.pt")
    torch.save(torch.nn.Linear(4, 2).state_dict(), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt: does not fit the network of .*nothing was written"):
        promote(tmp_path / "other.pt", bundle_copy)
    assert _sha(bundle_copy / "models" / "model.pt") == shipped
    summary = promote(run_dir, bundle_copy)
    state = torch.load(bundle_copy / "models" / "model.pt", weights_only=True)
    assert summary["destination"] == str(bundle_copy.resolve() / "models" / "model.pt")
    assert state.keys() == net.state_dict().keys() and all(v.dtype != torch.float32 for v in state.values())
    with pytest.raises(CheckpointError, match="no best model to promote"):
        promote(tmp_path / "nothing", bundle_copy)
