"""Command line of the tools: ``python -m tools COMMAND ...`` (a ``fire`` CLI).

Commands:
    verify BUNDLE_DIR             offline checks of a bundle (exit 1 with a message on the first failure)
    export BUNDLE_DIR [--filepath F]
                                  TorchScript export of models/model.pt through MONAI's ckpt_export
    compact SRC DST [--dtype float16]
                                  ship weights compactly: the state dict alone, in half precision
    hu_window IMAGE_DIR           estimate the HU window of 8-bit lung-windowed slices
    channel_stats BUNDLE_DIR [--dataset_dir DIR]
                                  per-channel mean and std of an RGB bundle's training split (its normalisation)
    benchmark BUNDLE_DIR INPUT [--output_json F] [--repeats N]
                                  time the bundle's inference on INPUT, write the results file
    benchmark BUNDLE_DIR --mode train [--output_json F] [--steps N] [--rounds N] [--compile]
                                  time the training step: fp32 baseline vs the default (bf16, channels-last)
    mesh MASK --output F.stl [--png F.png] [--label N]
                                  surface of a NIfTI mask as STL in world coordinates (mm)
    compare BUNDLE_DIR [--variants "['a','b']"] [--max_epochs N] [--output_dir OUT] [--dataset_dir DIR]
            [--overrides JSON] [--reuse]
                                  train the bundle's network and its baselines (configs/baselines/*.json) the
                                  same way, evaluate each on the validation split, write OUT/comparison.{json,md}
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


def channel_stats(bundle_dir: str, dataset_dir: str | None = None) -> str:
    """Print the per-channel mean and std of the RGB images of the bundle's training split as JSON."""
    from tools.rgb_pipelines import bundle_channel_stats

    return json.dumps(bundle_channel_stats(bundle_dir, dataset_dir))


def benchmark(bundle_dir: str, input: str | None = None, mode: str = "infer", output_json: str | None = None,  # noqa: A002
              repeats: int = 3, steps: int = 3, rounds: int = 3, compile: bool = False) -> str:  # noqa: A002
    """Time the bundle's inference on INPUT (``--mode infer``) or its training step (``--mode train``).

    Writes the results file and prints it as JSON. Timings belong in these files and the docs, never in tests.

    Args:
        bundle_dir: the bundle folder.
        input: ``--mode infer``: an image, a folder of images, a NIfTI volume or a DICOM-series folder.
        mode: ``infer`` (the bundle's ``inference.json`` workflow, model load excluded) or ``train`` (the real
            training step of ``train.json`` on synthetic tensors: fp32-contiguous baseline, the config's
            default on this machine, and the other precision / memory-format variants).
        output_json: results file (default ``BUNDLE/benchmark_inference.json`` or ``BUNDLE/benchmark_train.json``).
        repeats: ``--mode infer``: timed runs after one warm-up.
        steps, rounds: ``--mode train``: timed steps per round, and rounds interleaved across variants (each
            variant keeps its fastest round).
        compile: ``--mode train``: also time ``torch.compile`` of the network.
    """
    from tools.benchmark import benchmark_inference, benchmark_training

    if mode == "train":
        result = benchmark_training(bundle_dir, output_json, steps=steps, rounds=rounds, compile=compile)
    elif mode == "infer":
        if input is None:
            print("FAILED: --mode infer needs INPUT (an image, folder, NIfTI volume or DICOM folder).", file=sys.stderr)
            sys.exit(2)
        result = benchmark_inference(bundle_dir, input, output_json, repeats)
    else:
        print(f"FAILED: --mode must be 'infer' or 'train', got {mode!r}.", file=sys.stderr)
        sys.exit(2)
    return json.dumps(result, indent=2)


def _json_words(value):
    """``"true"``/``"false"``/``"null"`` (JSON words that fire leaves as strings) -> True/False/None, recursively."""
    if isinstance(value, dict):
        return {k: _json_words(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_words(v) for v in value]
    return {"true": True, "false": False, "null": None}.get(value, value) if isinstance(value, str) else value


def compare(
    bundle_dir: str,
    variants: list[str] | str | None = None,
    max_epochs: int | None = None,
    output_dir: str | None = None,
    dataset_dir: str | None = None,
    overrides: dict | str | None = None,
    reuse: bool = False,
) -> str:
    """Train and evaluate the bundle's variants (``tools.compare.compare_variants``); print the markdown table.

    ``--overrides`` is a JSON file, or an inline JSON object / Python dict literal (fire parses it as a Python
    literal, so the JSON words ``true``, ``false`` and ``null`` arrive as strings and are converted back here).
    Exits 1 with a message on an unknown variant, bad overrides or a run that saved no checkpoint.
    """
    from tools.compare import CompareError, compare_variants

    if isinstance(overrides, dict):
        overrides = _json_words(overrides)
    try:
        result = compare_variants(bundle_dir, variants=variants, output_dir=output_dir, max_epochs=max_epochs,
                                  dataset_dir=dataset_dir, overrides=overrides, reuse=reuse)
    except CompareError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    return result["table"]


def mesh(mask: str, output: str, png: str | None = None, label: int | None = None, step_size: int = 1) -> str:
    """Write the surface of a NIfTI mask as binary STL in world coordinates (mm); optionally a PNG rendering.

    Args:
        mask: NIfTI mask (binary or labelled).
        output: the STL file to write (whole or not at all).
        png: also render the mesh to this PNG.
        label: mesh only this label value (default: every non-zero voxel).
        step_size: marching-cubes step in voxels (2 makes a spine mesh about 4x smaller and faster to render).
    """
    from tools.mesh import mask_to_mesh, render_mesh_png

    try:
        summary = mask_to_mesh(mask, output, label=label, step_size=step_size)
        if png:
            summary["png"] = str(render_mesh_png(output, png))
    except (OSError, ValueError) as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    return json.dumps(summary, indent=2, default=str)


def compact(src: str, dst: str, dtype: str = "float16") -> str:
    """Write ``src``'s network weights to ``dst`` compactly (weights only, half precision)."""
    from tools.weights import compact_weights

    return json.dumps(compact_weights(src, dst, dtype))


COMMANDS = {"compact": compact, "mesh": mesh, "verify": verify, "export": export, "hu_window": hu_window, "benchmark": benchmark, "compare": compare,
            "channel_stats": channel_stats}
