"""Where a training epoch's time goes (``python -m tools benchmark BUNDLE --mode epoch``).

The bundle's real training workflow (``configs/train.json`` + recipe overlays, :class:`monai.bundle.ConfigWorkflow`
as :mod:`tools.commands.runs` builds it) runs for a few epochs on its real data, into a temporary output folder, with
ignite's :class:`ignite.handlers.BasicTimeProfiler` attached to the trainer. Each epoch's wall time is split into

- dataflow: fetching the batches (the ``DataLoader``: the random augmentation after the ``CacheDataset``'s cached
  prefix, normalisation, collation; anything not cached is decoded here);
- processing: the iteration itself (batch to device, forward, loss, backward, optimiser step);
- event handlers: per iteration (post-processing, training metric, logging, progress bar) and per epoch (validation,
  checkpoints, logs).

The cache fill (the ``CacheDataset`` instances decoding and resizing every item) is timed apart, when the datasets
are built, and the training step alone of :func:`tools.commands.benchmark.benchmark_training` (synthetic tensors) is
multiplied by the epoch's iterations for comparison ("step-only epoch"); ``benchmark_command`` passes that function
in, so that this module does not import the one that dispatches to it. Timings belong in the results file and the
docs, never in tests.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from ignite.engine import Events
from ignite.handlers import BasicTimeProfiler

from tools.commands.runs import _bundle_files, _common_overrides, _parse_overrides, _recipe_configs, _workflow
from tools.io import atomic_write_text

__all__ = ["EpochBenchmarkError", "benchmark_epoch"]

logger = logging.getLogger(__name__)

# the datasets whose building fills the caches (CacheDataset decodes every item when it is made)
_DATASET_IDS = ("train#dataset", "validate#dataset")
# the step benchmark's one variant beside the default (benchmark.TRAIN_VARIANTS["baseline"]): fp32, contiguous, eager
_BASELINE = {"mixed_precision": "fp32", "memory_format": "contiguous"}


class EpochBenchmarkError(RuntimeError):
    """The epoch benchmark cannot run (bad arguments, a missing overlay, a config without a trainer); says which."""


def _epoch_records(profiler: BasicTimeProfiler, wall: Sequence[float], validation: Mapping[int, float]) -> list[dict]:
    """Per-epoch sums of the profiler's per-iteration and per-epoch times (seconds)."""
    n_epochs = len(wall)
    per_epoch = profiler.total_num_iters // profiler.max_epochs
    handlers = profiler.event_handlers_times
    records = []
    for e in range(n_epochs):
        it = slice(e * per_epoch, (e + 1) * per_epoch)
        dataflow = float(profiler.dataflow_times[it].sum())  # includes the GET_BATCH_* handlers (none by default)
        processing = float(profiler.processing_times[it].sum())
        per_iteration = float(handlers[Events.ITERATION_STARTED][it].sum()
                              + handlers[Events.ITERATION_COMPLETED][it].sum())
        per_epoch_handlers = float(handlers[Events.EPOCH_STARTED][e] + handlers[Events.EPOCH_COMPLETED][e])
        records.append({
            "epoch": e + 1,
            "seconds": round(wall[e], 3),
            "dataflow_seconds": round(dataflow, 3),
            "processing_seconds": round(processing, 3),
            "handlers_seconds": round(per_iteration + per_epoch_handlers, 3),
            "iteration_handlers_seconds": round(per_iteration, 3),
            "epoch_handlers_seconds": round(per_epoch_handlers, 3),
            "validation_seconds": round(validation[e + 1], 3) if e + 1 in validation else None,
            "iterations": int((profiler.processing_times[it] > 0).sum()),  # steps the epoch really took
            "data_share": round(dataflow / wall[e], 4) if wall[e] > 0 else None,
        })
    return records


def benchmark_epoch(bundle_dir: str | Path, epochs: int = 2, config: str | Sequence[str] | None = None,
                    overrides: Mapping | str | None = None, dataset_dir: str | Path | None = None,
                    output_json: str | Path | None = None, steps: int = 3, rounds: int = 3,
                    command: str | None = None, *, step_benchmark: Callable[..., dict]) -> dict:
    """Train the bundle's real workflow for ``epochs`` epochs and report where each epoch's time went (seconds).

    Args:
        bundle_dir: the bundle folder (``configs/train.json``, ``metadata.json``, ``logging.conf``).
        epochs: epochs to train (``train#trainer#max_epochs``), at least 1; the first includes warm-up.
        config: recipe overlays merged over ``train.json``, relative to the bundle (a sequence or comma-separated),
            e.g. ``configs/recipes/generalising.json``.
        overrides: config id -> value (a dict, JSON text or a JSON file), for the workflow and the step benchmark.
        dataset_dir: the training data folder; default the bundle's own (``SEG_DATA_ROOT``).
        output_json: results file (default ``<bundle>/benchmark_epoch.json``), written whole or not at all.
        steps, rounds: of the step benchmark (:func:`tools.commands.benchmark.benchmark_training`, baseline and
            default variants only).
        command: the command line to record in the results (default: rebuilt from the arguments).
        step_benchmark: :func:`tools.commands.benchmark.benchmark_training` (called with ``output_json``, ``steps``,
            ``rounds``, ``variants`` and ``overrides``; its ``"default"`` timing is the step compared with).

    Returns (and writes) ``{"bundle", "command", "configs", "overrides", "dataset_dir", "device", "cpu_threads",
    "torch", "train_items", "batch_size", "iterations_per_epoch", "cache_fill_seconds", "build_seconds", "epochs":
    [{"epoch", "seconds", "dataflow_seconds", "processing_seconds", "handlers_seconds", "iteration_handlers_seconds",
    "epoch_handlers_seconds", "validation_seconds", "iterations", "data_share"}], "data_share", "step_benchmark":
    {"seconds_per_step", "precision", "memory_format", "step_only_epoch_seconds"}}``. ``seconds`` is the trainer's
    own epoch time (ignite's ``state.times``); dataflow + processing + handlers make it up to the profiler's
    bookkeeping. ``data_share`` is dataflow / epoch seconds (top level: over all epochs, and ``data_share_warm``
    over the epochs after the first).

    Raises:
        EpochBenchmarkError: for ``epochs`` < 1, a missing overlay, bad overrides, or a config without
            ``train#trainer``.
        tools.commands.runs.CompareError: if the bundle lacks one of its config files.
    """
    bundle = Path(bundle_dir).resolve()
    files = _bundle_files(bundle)
    configs = _recipe_configs(bundle, files, config, EpochBenchmarkError)
    extra = _parse_overrides(overrides, EpochBenchmarkError)
    common = _common_overrides(extra, dataset_dir, epochs, EpochBenchmarkError)
    rel = [str(c.relative_to(bundle)) if c.is_relative_to(bundle) else str(c) for c in configs]
    if command is None:
        command = (f"python -m tools benchmark {bundle_dir} --mode epoch --epochs {epochs}"
                   + "".join(f" --config {c}" for c in rel[1:])
                   + (f" --overrides '{json.dumps(extra)}'" if extra else "")
                   + (f" --dataset_dir {dataset_dir}" if dataset_dir else ""))
    with tempfile.TemporaryDirectory(prefix="epoch_benchmark_") as tmp:
        override = {**common, "output_dir": str(Path(tmp) / "train"), "ckpt_dir": str(Path(tmp) / "models")}
        wf = _workflow(configs, files, bundle, "run", override)
        start = time.perf_counter()
        wf.initialize()
        parser = wf.parser
        if "train#trainer" not in parser:
            raise EpochBenchmarkError(f"{bundle}: {', '.join(rel)} define no train#trainer.")
        cache_fill = 0.0
        for ds in _DATASET_IDS:
            if ds in parser:
                t0 = time.perf_counter()
                parser.get_parsed_content(ds)
                cache_fill += time.perf_counter() - t0
        trainer = parser.get_parsed_content("train#trainer")
        build = time.perf_counter() - start
        evaluator = parser.get_parsed_content("validate#evaluator") if "validate#evaluator" in parser else None

        profiler = BasicTimeProfiler()
        profiler.attach(trainer)
        wall: list[float] = []
        validation: dict[int, float] = {}

        def epoch_time(engine) -> None:  # the finished epoch's time, handlers included, as ignite recorded it
            wall.append(float(engine.state.times[Events.EPOCH_COMPLETED.name]))

        trainer.add_event_handler(Events.EPOCH_STARTED(lambda _, event: event > 1), epoch_time)
        trainer.add_event_handler(Events.COMPLETED, epoch_time)
        if evaluator is not None:
            evaluator.add_event_handler(Events.COMPLETED, lambda ev: validation.__setitem__(
                trainer.state.epoch, float(ev.state.times[Events.COMPLETED.name])))
        wf.run()
        loader = trainer.data_loader
        train_items, batch_size = len(loader.dataset), int(loader.batch_size)
        device = getattr(trainer.state, "device", None) or parser.get_parsed_content("device")
        data_dir = parser.get_parsed_content("dataset_dir") if "dataset_dir" in parser else common.get("dataset_dir")
        records = _epoch_records(profiler, wall, validation)
        wf.finalize()
        # the training step alone, on synthetic tensors of the same shape (train.json + the same overrides)
        step = step_benchmark(bundle, Path(tmp) / "benchmark_train.json", steps=steps, rounds=rounds,
                              variants={"baseline": _BASELINE}, overrides=extra)
    device = torch.device(device)
    seconds_per_step = step["default"]["seconds_per_step"]
    iterations = records[0]["iterations"] if records else math.ceil(train_items / batch_size)
    total = sum(r["seconds"] for r in records)
    warm = records[1:]
    result = {
        "bundle": bundle.name,
        "command": command,
        "configs": rel,
        "overrides": extra,
        "dataset_dir": str(data_dir) if data_dir is not None else None,
        "data_root_env": os.environ.get("SEG_DATA_ROOT"),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "cpu_threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "train_items": train_items,
        "batch_size": batch_size,
        "iterations_per_epoch": iterations,
        "cache_fill_seconds": round(cache_fill, 3),
        "build_seconds": round(build, 3),
        "epochs": records,
        "data_share": round(sum(r["dataflow_seconds"] for r in records) / total, 4) if total > 0 else None,
        "data_share_warm": (round(sum(r["dataflow_seconds"] for r in warm) / sum(r["seconds"] for r in warm), 4)
                            if warm and sum(r["seconds"] for r in warm) > 0 else None),
        "step_benchmark": {
            "seconds_per_step": seconds_per_step,
            "baseline_seconds_per_step": step["baseline"]["seconds_per_step"],
            "precision": step["default"]["precision"],
            "memory_format": step["default"]["memory_format"],
            "step_only_epoch_seconds": round(seconds_per_step * iterations, 3),
            "config": "configs/train.json + overrides (recipe overlays are not merged into the step benchmark)",
        },
    }
    out = Path(output_json) if output_json else bundle / "benchmark_epoch.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    logger.info("%s: %s", bundle.name, records)
    return result
