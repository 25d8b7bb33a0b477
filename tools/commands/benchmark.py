"""Inference speed and memory of a bundle, measured by running its own ``inference.json`` workflow.

Timings belong in results files written here, never in tests.
"""

from __future__ import annotations

import sys

import json
import logging
import platform
import resource
import tempfile
import time
from pathlib import Path

import torch
from monai.bundle import ConfigWorkflow

from tools.io import atomic_write_text

__all__ = ["benchmark_inference", "benchmark_training", "matmul_gflop_per_s", "TRAIN_VARIANTS", "CUDA_VARIANTS"]

logger = logging.getLogger(__name__)


def benchmark_inference(bundle_dir: str | Path, input_path: str | Path, output_json: str | Path | None = None,
                        repeats: int = 3) -> dict:
    """Run the bundle's inference on ``input_path`` ``repeats`` times after one warm-up run; report seconds.

    Returns and writes (``output_json``, default ``<bundle>/benchmark_inference.json``) a dict with the device,
    the CPU thread count, the median and each run's wall time (model load excluded: the workflow is built once)
    and the peak memory (CUDA allocator peak on a GPU, else the process's peak resident set size, MiB).
    """
    bundle = Path(bundle_dir).resolve()
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        wf = ConfigWorkflow(
            config_file=str(bundle / "configs" / "inference.json"), meta_file=str(bundle / "configs" / "metadata.json"),
            logging_file=str(bundle / "configs" / "logging.conf"), workflow_type="infer", bundle_root=str(bundle),
            input=str(Path(input_path).resolve()), output_dir=tmp, overwrite=True,  # each run rewrites its masks
        )
        wf.initialize()
        device = wf.parser.get_parsed_content("device")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for i in range(repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            wf.run()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i > 0:  # the first run warms up caches and kernels
                times.append(time.perf_counter() - start)
        n_items = len(wf.parser.get_parsed_content("datalist"))
        wf.finalize()
    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "bundle": bundle.name,
        "input": str(input_path),
        "n_items": n_items,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "cpu_threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "seconds_median": sorted(times)[len(times) // 2],
        "seconds_runs": times,
        "peak_memory_mib": round(peak_mib, 1),
        "peak_memory_kind": "cuda_max_allocated" if device.type == "cuda" else "process_max_rss",
    }
    out = Path(output_json) if output_json else bundle / "benchmark_inference.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    return result


# ---------------------------------------------------------------------------------------------------------------
# Training speed
# ---------------------------------------------------------------------------------------------------------------

# The variants timed by benchmark_training: name -> config overrides of train.json (and whether to torch.compile).
TRAIN_VARIANTS = {
    "baseline": {"mixed_precision": "fp32", "memory_format": "contiguous"},
    "bf16_contiguous": {"mixed_precision": "bf16", "memory_format": "contiguous"},
    "bf16_channels_last": {"mixed_precision": "bf16", "memory_format": "channels_last"},
    "fp32_channels_last": {"mixed_precision": "fp32", "memory_format": "channels_last"},
}
# Also timed where the device is a GPU: MONAI's fp16 AMP (the CUDA default) in both memory formats.
CUDA_VARIANTS = {
    "amp_contiguous": {"mixed_precision": "amp", "memory_format": "contiguous"},
    "amp_channels_last": {"mixed_precision": "amp", "memory_format": "channels_last"},
}


def matmul_gflop_per_s(device: torch.device, size: int | None = None, repeats: int = 10) -> dict[str, float | None]:
    """Measured fp32 and bf16 matrix-multiply throughput (GFLOP/s) of ``size x size`` matrices on ``device``:
    the peak that a training step's GFLOP/s is read against. ``size`` defaults to 2048 on a CPU and 8192 on a GPU
    (where a 2048 product takes microseconds and measures launch overhead, not the peak). ``bf16`` is ``None`` on a
    CPU without bf16 instructions: emulated there, the products took minutes (seen), and no run uses bf16 on it."""
    from tools.training import cpu_supports_bf16

    device = torch.device(device)
    size = size or (8192 if device.type == "cuda" else 2048)
    out: dict[str, float | None] = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if name == "bf16" and device.type == "cpu" and not cpu_supports_bf16():
            out[name] = None
            continue
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        for _ in range(2):
            a @ b
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        _sync(device)
        out[name] = round(2 * size**3 * repeats / (time.perf_counter() - start) / 1e9, 1)
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_parts(train_json: Path, bundle: Path, overrides: dict) -> dict:
    """The network, loss, optimiser and inferer of ``train.json`` with ``overrides``, as the trainer gets them."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(train_json))
    parser.update({"bundle_root": str(bundle), **overrides})
    get = parser.get_parsed_content
    size = list(get("spatial_size"))
    return {
        "network": get("train#trainer#network"),
        "loss": get("train#trainer#loss_function"),
        "optimizer": get("train#trainer#optimizer"),
        "inferer": get("train#trainer#inferer"),
        "batch_size": int(get("train#dataloader#batch_size")),
        "in_channels": int(get("network_def#in_channels")),
        "spatial_size": size,
        "device": get("device"),
        "precision": get("precision"),
        "compile": bool(get("compile")) if "compile" in parser else False,
    }


def _synthetic_batch(parts: dict, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (parts["batch_size"], parts["in_channels"], *parts["spatial_size"])
    image = torch.rand(shape, generator=g)
    label = (torch.rand((shape[0], 1, *shape[2:]), generator=g) > 0.7).float()
    return image.to(parts["device"]), label.to(parts["device"])


def _train_step(parts: dict, network, image, label) -> None:
    """One step as MONAI's ``SupervisedTrainer`` takes it: with ``"amp"`` (CUDA) the forward pass and the loss run
    under ``torch.autocast("cuda")`` and the gradients go through a ``GradScaler`` (``amp=True`` there); bf16 and
    channels-last come from the config's inferer."""
    optimizer = parts["optimizer"]
    optimizer.zero_grad(set_to_none=True)
    if parts["precision"] == "amp":
        scaler = parts.setdefault("scaler", torch.amp.GradScaler("cuda"))
        with torch.autocast("cuda"):
            pred = parts["inferer"](image, network)
            loss = parts["loss"](pred, label).mean()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return
    pred = parts["inferer"](image, network)
    loss = parts["loss"](pred, label).mean()
    loss.backward()
    optimizer.step()


def _flops_per_image(parts: dict) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    image, label = _synthetic_batch(parts)
    counter = FlopCounterMode(display=False)
    with counter:
        _train_step(parts, parts["network"], image, label)
    return counter.get_total_flops() / parts["batch_size"]


def benchmark_training(bundle_dir: str | Path, output_json: str | Path | None = None, steps: int = 3,
                       warmup: int = 2, rounds: int = 3, variants: dict[str, dict] | None = None, compile: bool = False,  # noqa: A002
                       overrides: dict | None = None) -> dict:
    """Time the bundle's real training step (its ``train.json`` network, loss, optimiser, inferer, batch size and
    input size, on synthetic tensors) in fp32-contiguous-eager (``baseline``), in what ``train.json`` uses by
    default on this machine (``default``), and in the other :data:`TRAIN_VARIANTS`.

    A step is forward (through the config's inferer, so mixed precision and memory format are the trainer's),
    loss, backward and optimiser step. Each variant runs ``warmup`` untimed steps, then ``rounds`` rounds of
    ``steps`` timed steps, the rounds interleaved across variants; a variant's time is its fastest round (so that
    other load on the machine, which only ever slows a round, biases no variant).
    FLOPs are counted once, in fp32, with ``torch.utils.flop_counter.FlopCounterMode``.

    Args:
        bundle_dir: the bundle folder (``configs/train.json``).
        output_json: results file (default ``<bundle>/benchmark_train.json``), written whole or not at all.
        steps, warmup, rounds: timed steps per round, untimed steps, rounds per variant.
        variants: name -> ``train.json`` overrides; default :data:`TRAIN_VARIANTS`.
        compile: also time the default with ``torch.compile`` of the network (``"default_compiled"``); the
            compile time is reported apart.
        overrides: ``train.json`` overrides applied to every variant (e.g. a batch size, or a tiny network in tests).

    Returns (and writes) ``{"bundle", "device", "cpu_threads", "torch", "batch_size", "spatial_size",
    "gflop_per_image", "matmul_gflop_per_s": {"fp32", "bf16"}, "baseline": {...}, "default": {...},
    "variants": {name: {...}}}``, each timing ``{"images_per_s", "gflop_per_s", "seconds_per_step",
    "precision", "memory_format", "compiled"}``, and ``"speedup"`` (default over baseline).
    """
    bundle = Path(bundle_dir).resolve()
    train_json = bundle / "configs" / "train.json"
    variants = dict(TRAIN_VARIANTS if variants is None else variants)
    common = dict(overrides or {})
    default_parts = _train_parts(train_json, bundle, common)
    if default_parts["device"].type == "cuda":
        variants = {**variants, **CUDA_VARIANTS}
    defaults = {"mixed_precision": "auto", "memory_format": "auto"}
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(train_json))
    for key in defaults:
        if key in parser:
            defaults[key] = parser[key]
    device = default_parts["device"]
    flops = _flops_per_image(_train_parts(train_json, bundle,
                                          {**common, **variants.get("baseline", TRAIN_VARIANTS["baseline"])}))

    def prepare(overrides: dict, compiled: bool = False) -> dict:
        parts = _train_parts(train_json, bundle, {**common, **overrides})
        parts["overrides"], parts["compiled"] = overrides, compiled
        parts["model"] = parts["network"]
        start = time.perf_counter()
        if compiled:
            parts["model"] = torch.compile(parts["network"])
        parts["batch"] = _synthetic_batch(parts)
        for _ in range(warmup):
            _train_step(parts, parts["model"], *parts["batch"])
        if compiled:
            parts["compile_and_warmup_s"] = round(time.perf_counter() - start, 1)
        return parts

    def timed(parts: dict) -> float:
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            _train_step(parts, parts["model"], *parts["batch"])
        _sync(device)
        return (time.perf_counter() - start) / steps

    prepared = {name: prepare(overrides) for name, overrides in variants.items()}
    prepared["default"] = prepare({}, compiled=default_parts["compile"])
    if compile and not default_parts["compile"]:
        try:
            prepared["default_compiled"] = prepare({}, compiled=True)
        except Exception as e:  # noqa: BLE001 - a compile failure is a result to report, not a crash
            compile_error = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
    # Rounds interleave the variants so that a busy machine slows them alike; each keeps its fastest round.
    seconds = {name: timed(parts) for name, parts in prepared.items()}
    for _ in range(rounds - 1):
        for name, parts in prepared.items():
            seconds[name] = min(seconds[name], timed(parts))
    results = {}
    for name, parts in prepared.items():
        record = {
            "images_per_s": round(parts["batch_size"] / seconds[name], 3),
            "gflop_per_s": round(flops * parts["batch_size"] / seconds[name] / 1e9, 1),
            "seconds_per_step": round(seconds[name], 4),
            "precision": parts["precision"],
            "memory_format": parts["overrides"].get("memory_format", defaults["memory_format"]),
            "compiled": parts["compiled"],
        }
        if "compile_and_warmup_s" in parts:
            record["compile_and_warmup_s"] = parts["compile_and_warmup_s"]
        results[name] = record
        logger.info("%s %s: %s", bundle.name, name, record)
    if compile and not default_parts["compile"] and "default_compiled" not in results:
        results["default_compiled"] = {"error": compile_error}
    baseline, default = results.pop("baseline"), results.pop("default")
    result = {
        "bundle": bundle.name,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "cpu_threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "batch_size": default_parts["batch_size"],
        "spatial_size": default_parts["spatial_size"],
        "gflop_per_image": round(flops / 1e9, 2),
        "matmul_gflop_per_s": matmul_gflop_per_s(device),
        "baseline": baseline,
        "default": default,
        "speedup": round(default["images_per_s"] / baseline["images_per_s"], 2),
        "variants": results,
    }
    out = Path(output_json) if output_json else bundle / "benchmark_train.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    return result


# ---------------------------------------------------------------- the command line (python -m tools benchmark)


def benchmark_command(bundle_dir: str, input: str | None = None, mode: str = "infer", output_json: str | None = None,  # noqa: A002
              repeats: int = 3, steps: int = 3, rounds: int = 3, compile: bool = False,  # noqa: A002
              volume_shape: str | tuple | None = None, epochs: int = 2, config: str | None = None,
              overrides: str | None = None, dataset_dir: str | None = None) -> str:
    """Time the bundle's inference on INPUT (--mode infer), on a full-size CT volume (--volume_shape), its
    training step (--mode train) or its training epochs (--mode epoch); print the results.

    Writes the results file and prints it as JSON. Timings belong in these files and the docs, never in tests.
    Exits 1 with FAILED and the reason on a bad volume shape or a bad --mode epoch setting (missing overlay, bad
    overrides, epochs < 1, a folder that is not a bundle), 2 on a bad --mode or a missing INPUT.

    Args:
        bundle_dir: the bundle folder.
        input: --mode infer: an image, a folder of images, a NIfTI volume or a DICOM-series folder.
        mode: infer (the bundle's inference.json workflow, model load excluded) or train (the real training step
            of train.json on synthetic tensors, timed as the fp32-contiguous baseline, the config's default on this
            machine and the other precision / memory-format variants) or epoch (the real training workflow of
            train.json + --config on the real data for --epochs epochs with ignite's BasicTimeProfiler on the
            trainer, reporting per epoch the wall, dataflow (batch fetching, i.e. loading and augmentation after
            the cache), processing (forward, loss, backward, optimiser step) and event-handler (validation,
            metrics, logs) seconds, the cache fill seconds, the data share dataflow / epoch, and the --mode train
            step time x the epoch's iterations).
        output_json: the results file; default BUNDLE_DIR/benchmark_inference.json, benchmark_train.json or
            benchmark_epoch.json.
        repeats: --mode infer: timed runs after one warm-up.
        steps: --mode train and epoch: timed steps per round of the step benchmark.
        rounds: --mode train and epoch: rounds interleaved across variants (each variant keeps its fastest round).
        compile: --mode train: also time torch.compile of the network.
        volume_shape: e.g. 512,512,300: the repository's sample CT resampled to that many voxels (field of view
            kept), through the bundle's CT inference (inference.json, + inference_ct.json where present) in a child
            process whose progress bar is shown; reports wall time, seconds per slice, peak memory (RSS) and device
            (default file BUNDLE_DIR/benchmark_volume.json). INPUT is not used.
        epochs: --mode epoch: epochs to train (the first includes warm-up), at least 1.
        config: --mode epoch: recipe overlay(s) merged over configs/train.json, relative to the bundle
            (comma-separated), e.g. configs/recipes/generalising.json.
        overrides: --mode epoch: JSON object (or a JSON file) of config id -> value, e.g. a batch size.
        dataset_dir: --mode epoch: the training data folder; default the bundle's own (SEG_DATA_ROOT).
    """
    if volume_shape is not None:
        from tools.commands.volume_benchmark import VolumeBenchmarkError, benchmark_volume

        shape = volume_shape if isinstance(volume_shape, (tuple, list)) else str(volume_shape).strip("()[] ").split(",")
        try:
            result = benchmark_volume(bundle_dir, [int(s) for s in shape], output_json)
        except (VolumeBenchmarkError, ValueError) as e:
            print(f"FAILED: {e}", file=sys.stderr)
            sys.exit(1)
    elif mode == "train":
        result = benchmark_training(bundle_dir, output_json, steps=steps, rounds=rounds, compile=compile)
    elif mode == "epoch":
        from tools.commands.epoch_benchmark import EpochBenchmarkError, benchmark_epoch
        from tools.commands.runs import CompareError

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        try:
            result = benchmark_epoch(bundle_dir, epochs, config, overrides, dataset_dir, output_json, steps=steps,
                                     rounds=rounds, command=_command_line(), step_benchmark=benchmark_training)
        except (EpochBenchmarkError, CompareError) as e:
            print(f"FAILED: {e}", file=sys.stderr)
            sys.exit(1)
    elif mode == "infer":
        if input is None:
            print("FAILED: --mode infer needs INPUT (an image, folder, NIfTI volume or DICOM folder).", file=sys.stderr)
            sys.exit(2)
        result = benchmark_inference(bundle_dir, input, output_json, repeats)
    else:
        print(f"FAILED: --mode must be 'infer', 'train' or 'epoch', got {mode!r}.", file=sys.stderr)
        sys.exit(2)
    return json.dumps(result, indent=2)


def _command_line() -> str | None:
    """``python -m tools benchmark ...`` as typed, when this process was started so."""
    import shlex

    return "python -m tools benchmark " + shlex.join(sys.argv[2:]) if len(sys.argv) > 2 and sys.argv[1] == "benchmark" \
        else None
