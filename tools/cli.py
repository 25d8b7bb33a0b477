"""Command line of the tools: ``python -m tools COMMAND ...`` (a ``fire`` CLI).

Commands:
    verify BUNDLE_DIR             offline checks of a bundle (exit 1 with a message on the first failure)
    export BUNDLE_DIR [--filepath F]
                                  TorchScript export of models/model.pt through MONAI's ckpt_export
    hu_window IMAGE_DIR           estimate the HU window of 8-bit lung-windowed slices
    benchmark BUNDLE_DIR INPUT [--output_json F] [--repeats N]
                                  time the bundle's inference on INPUT, write the results file
"""

from __future__ import annotations

import json
import logging
import sys


def verify(bundle_dir: str, dataset_dir: str | None = None) -> str:
    """Run every offline check on ``bundle_dir``; print each passed check, exit 1 on the first failure."""
    from tools.verify import BundleCheckError, verify_bundle

    logging.basicConfig(level=logging.WARNING)
    try:
        passed = verify_bundle(bundle_dir, dataset_dir)
    except BundleCheckError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    for name in passed:
        print(f"ok: {name}")
    return f"{bundle_dir}: all {len(passed)} checks passed"


def export(bundle_dir: str, filepath: str | None = None) -> str:
    """Write ``models/model.ts`` (or ``filepath``) with MONAI's ``ckpt_export``; print its path."""
    from tools.verify import export_torchscript

    return str(export_torchscript(bundle_dir, filepath))


def hu_window(image_dir: str, lung_hu: float = -850.0, tissue_hu: float = 40.0) -> str:
    """Print the estimated HU window of the 8-bit slices in ``image_dir`` as JSON."""
    from tools.hu_window import estimate_hu_window

    return json.dumps(estimate_hu_window(image_dir, lung_hu, tissue_hu))


def benchmark(bundle_dir: str, input: str, output_json: str | None = None, repeats: int = 3) -> str:  # noqa: A002
    """Time the bundle's inference workflow on ``input``; write and print the results as JSON."""
    from tools.benchmark import benchmark_inference

    return json.dumps(benchmark_inference(bundle_dir, input, output_json, repeats), indent=2)


COMMANDS = {"verify": verify, "export": export, "hu_window": hu_window, "benchmark": benchmark}
