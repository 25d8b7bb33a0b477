"""``python -m tools benchmark BUNDLE --mode epoch``: one epoch of the polyp bundle's real training workflow on its
six sample frames with a tiny IA-CNN at 64x64; the results file's structure is checked (timings are recorded in it,
never asserted)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from monai.bundle import ConfigParser

from conftest import BUNDLES, REPO
from tools.commands.benchmark import TRAIN_VARIANTS, benchmark_training
from tools.commands.epoch_benchmark import _BASELINE, EpochBenchmarkError, benchmark_epoch

POLYP = BUNDLES / "polyp_endoscopy_iacnn_segmentation"
SAMPLE = POLYP / "sample_data" / "dataset"
TINY = {"channels": [4, 8, 8, 16, 16], "spatial_size": [64, 64], "n_val_clips": 2, "train#handlers#-1#persist": False}
RECIPE = "configs/recipes/generalising.json"
TOLERANCE_S = 0.05  # the profiler's own bookkeeping between its timers


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> tuple[dict, dict]:
    out = tmp_path_factory.mktemp("epoch") / "bench.json"
    got = benchmark_epoch(POLYP, epochs=1, config=RECIPE, overrides=TINY, dataset_dir=SAMPLE, output_json=out,
                          steps=1, rounds=1, step_benchmark=benchmark_training)
    return got, json.loads(out.read_text())


def _train_items() -> tuple[int, int]:
    parser = ConfigParser()
    parser.read_config([str(POLYP / "configs" / "train.json"), str(POLYP / RECIPE)])
    parser.update({"bundle_root": str(POLYP), "dataset_dir": str(SAMPLE), **TINY})
    return len(parser.get_parsed_content("split")[0]), int(parser.get_parsed_content("train#dataloader#batch_size"))


def test_the_results_file_is_what_the_function_returns(result):
    got, written = result
    assert written == got
    assert got["configs"] == ["configs/train.json", RECIPE] and got["overrides"] == TINY
    assert got["command"].startswith("python -m tools benchmark ") and "--mode epoch" in got["command"]


def test_each_epoch_is_split_into_dataflow_processing_and_handlers(result):
    got, _ = result
    items, batch_size = _train_items()
    assert got["train_items"] == items and got["batch_size"] == batch_size
    assert got["iterations_per_epoch"] == math.ceil(items / batch_size)
    assert len(got["epochs"]) == 1
    for epoch in got["epochs"]:
        parts = [epoch[k] for k in ("dataflow_seconds", "processing_seconds", "handlers_seconds")]
        assert all(p >= 0 for p in parts) and epoch["seconds"] > 0
        assert sum(parts) <= epoch["seconds"] + TOLERANCE_S
        assert epoch["handlers_seconds"] == pytest.approx(
            epoch["iteration_handlers_seconds"] + epoch["epoch_handlers_seconds"], abs=0.002)
        assert epoch["iterations"] == got["iterations_per_epoch"]
        assert epoch["validation_seconds"] is not None and epoch["validation_seconds"] >= 0  # val_interval 1
        assert 0 <= epoch["data_share"] <= 1
    assert got["cache_fill_seconds"] >= 0 and got["build_seconds"] >= got["cache_fill_seconds"]
    step = got["step_benchmark"]
    assert step["seconds_per_step"] > 0
    assert step["step_only_epoch_seconds"] == pytest.approx(step["seconds_per_step"] * got["iterations_per_epoch"],
                                                           abs=1e-3)


def test_the_baseline_is_the_step_benchmarks():
    assert _BASELINE == TRAIN_VARIANTS["baseline"]


def test_bad_settings_are_refused_before_training(tmp_path):
    with pytest.raises(EpochBenchmarkError, match="no such recipe config"):
        benchmark_epoch(POLYP, config="configs/recipes/nope.json", output_json=tmp_path / "x.json",
                        step_benchmark=benchmark_training)
    with pytest.raises(EpochBenchmarkError, match="max_epochs must be at least 1"):
        benchmark_epoch(POLYP, epochs=0, output_json=tmp_path / "x.json",
                        step_benchmark=benchmark_training)
    with pytest.raises(EpochBenchmarkError, match="overrides"):
        benchmark_epoch(POLYP, overrides="[1, 2]", output_json=tmp_path / "x.json",
                        step_benchmark=benchmark_training)
    assert not (tmp_path / "x.json").exists()


def test_benchmark_help_documents_the_epoch_mode():
    res = subprocess.run([sys.executable, "-m", "tools", "benchmark", "--help"], cwd=REPO, capture_output=True,
                         text=True, env={"PAGER": "cat", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}, timeout=120)
    assert res.returncode == 0, res.stderr
    text = res.stdout + res.stderr
    for flag in ("--epochs", "--config", "--overrides", "--dataset_dir", "BasicTimeProfiler"):
        assert flag in text
