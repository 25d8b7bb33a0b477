"""Inference speed and memory of a bundle, measured by running its own ``inference.json`` workflow.

Timings belong in results files written here, never in tests.
"""

from __future__ import annotations

import json
import platform
import resource
import tempfile
import time
from pathlib import Path

import torch
from monai.bundle import ConfigWorkflow

from tools.io import atomic_write_text

__all__ = ["benchmark_inference"]


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
            input=str(Path(input_path).resolve()), output_dir=tmp,
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
