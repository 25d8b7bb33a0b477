"""Command line of the tools: ``python -m tools COMMAND ...`` (a ``fire`` CLI over :data:`COMMANDS`).

``python -m tools --help`` lists the commands, one line each; ``python -m tools COMMAND --help`` describes every
argument and flag (fire reads them from the ``Args:`` section of each function's docstring, and shows each argument's
type from its annotation: ``from __future__ import annotations`` is left out on purpose, so that fire sees the types
themselves rather than strings).

Commands:
    verify BUNDLE_DIR [--dataset_dir DIR]
                                  offline checks of a bundle (exit 1 with a message on the first failure)
    export BUNDLE_DIR [--filepath F]
                                  TorchScript export of models/model.pt through MONAI's ckpt_export
    pack BUNDLE_DIR --output_dir DIR [--overwrite false]
                                  write DIR/<bundle>/, a self-contained copy in the model zoo's layout (scripts/)
    benchmark BUNDLE_DIR INPUT [--output_json F] [--repeats N]
                                  time the bundle's inference on INPUT, write the results file
    benchmark BUNDLE_DIR --mode train [--output_json F] [--steps N] [--rounds N] [--compile]
                                  time the training step: fp32 baseline vs the default (bf16, channels-last)
    compare BUNDLE_DIR [--variants "['a','b']"] [--max_epochs N] [--output_dir OUT] [--dataset_dir DIR]
            [--overrides JSON] [--reuse]
                                  train the bundle's network and its baselines (configs/baselines/*.json) the
                                  same way, evaluate each on the validation split, write OUT/comparison.{json,md}
    benchmark_variants BUNDLE_DIR --grid FILE [--output_dir OUT] [--max_epochs N] [--dataset_dir DIR]
            [--overrides JSON] [--reuse]
                                  train and evaluate a grid of variants (named config overlays) the same way, write
                                  OUT/benchmark.{csv,md,png} (Dice vs training time and vs parameters)
    paired_difference A/per_image.csv B/per_image.csv [--metric dice]
                                  mean per-image difference B - A with its paired bootstrap 95% interval
    compact SRC DST [--dtype float16]
                                  ship weights compactly: the state dict alone, in half precision
    channel_stats BUNDLE_DIR [--dataset_dir DIR]
                                  per-channel mean and std of an RGB bundle's training split (its normalisation)
    hu_window IMAGE_DIR           estimate the HU window of 8-bit lung-windowed slices
    mesh MASK --output F.stl [--png F.png] [--label N]
                                  surface of a NIfTI mask as STL in world coordinates (mm)
    render_configs [--check]      write each bundle's shared configs from tools/bundle_templates/ (--check: only compare)
    serve --studies DIR [--host 127.0.0.1] [--port 8000] [--bundles a,b] [--app_dir DIR]
                                  MONAI Label's server, offline, with the bundles (needs the [monailabel] extra)
"""

import json
import logging
import sys


def verify(bundle_dir: str, dataset_dir: str | None = None) -> str:
    """Run a bundle's offline checks in order, printing each one's name as it passes; exit 1 at the first failure.

    The checks, by name (``tools.verify.CHECKS``):
        required files: the model-zoo layout's files are present (configs, docs, licences, models/model.pt).
        metadata schema and changelog: metadata.json matches MONAI's schema; its version has a changelog entry.
        configs parse: every config parses (overlays merged on top of train.json).
        configs stay inside the bundle: no config string reaches outside the bundle's folder ('../', an absolute
            path, a sibling bundle's name).
        workflow properties: the train and infer workflows have MONAI's required properties.
        network input/output: network_def maps metadata.json's input to its output (channels, dtype, size).
        TorchScript round trip: the exported models/model.pt gives the eager network's output.

    Nothing is written into the bundle (temporary output folder and export file).

    Args:
        bundle_dir: the bundle folder (e.g. bundles/covid19_lesion_ct_rcbunetpp_segmentation).
        dataset_dir: the data the train workflow is instantiated with for the properties check; default the
            bundle's own sample data (its train.json's verify_dataset_dir, else sample_data/dataset).
    """
    from tools.verify import CHECKS, BundleCheckError, verify_bundle

    logging.basicConfig(level=logging.WARNING)
    try:
        passed = verify_bundle(bundle_dir, dataset_dir, on_pass=lambda name: print(f"ok: {name}", flush=True))
    except BundleCheckError as e:
        print(f"FAILED: {e.check or 'bundle'}: {e}", file=sys.stderr)
        names = [name for name, _ in CHECKS]
        not_run = names[names.index(e.check) + 1:] if e.check in names else names
        if not_run:
            print(f"not run: {', '.join(not_run)}", file=sys.stderr)
        sys.exit(1)
    return f"{bundle_dir}: all {len(passed)} checks passed"


def export(bundle_dir: str, filepath: str | None = None) -> str:
    """Export the bundle's models/model.pt to TorchScript (MONAI's ckpt_export); print the file's path.

    Args:
        bundle_dir: the bundle folder.
        filepath: the TorchScript file to write; default BUNDLE_DIR/models/model.ts.
    """
    from tools.export import export_torchscript

    return str(export_torchscript(bundle_dir, filepath))


def pack(bundle_dir: str, output_dir: str, overwrite: bool | str = False) -> str:
    """Write OUTPUT_DIR/<bundle>/, a self-contained copy of the bundle in the model zoo's layout; print a summary.

    The copy runs without this project installed: the modules of tools and custom_networks that its configs use
    (and what they import) are copied into its scripts/ package and the configs point there; metadata.json lists
    every package it needs with its version (no seg-bundles); the weights (models/*.pt), docs, sample data and
    LICENSE come along; every JSON file is formatted as the zoo's pre-commit wants it. The folder appears whole or
    not at all. Exits 1 with a message on an existing destination (without --overwrite true) or a bundle that cannot
    be packed.

    Args:
        bundle_dir: the bundle folder (e.g. bundles/covid19_lesion_ct_rcbunetpp_segmentation).
        output_dir: the folder to write the packed bundle into (created if absent), e.g. a model-zoo clone's models/.
        overwrite: replace an existing OUTPUT_DIR/<bundle folder name>/ (true or false).
    """
    from tools.pack import PackError, pack_bundle

    flag = {"true": True, "false": False}.get(overwrite.lower()) if isinstance(overwrite, str) else bool(overwrite)
    if flag is None:
        print(f"FAILED: --overwrite must be true or false, got {overwrite!r}.", file=sys.stderr)
        sys.exit(2)
    try:
        summary = pack_bundle(bundle_dir, output_dir, overwrite=flag)
    except (PackError, OSError) as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    return json.dumps(summary, indent=2)


def hu_window(image_dir: str, lung_hu: float = -850.0, tissue_hu: float = 40.0) -> str:
    """Estimate the HU window that made a folder of 8-bit lung-windowed CT slices; print it as JSON.

    The window is solved from the median grey levels of the slices' two histogram peaks (aerated lung and soft
    tissue), taken to be lung_hu and tissue_hu.

    Args:
        image_dir: a folder of .jpg/.png slices.
        lung_hu: the HU value of aerated lung (the darker peak).
        tissue_hu: the HU value of soft tissue (the brighter peak).
    """
    from tools.hu_window import estimate_hu_window

    return json.dumps(estimate_hu_window(image_dir, lung_hu, tissue_hu))


def paired_difference(per_image_a: str, per_image_b: str, metric: str = "dice") -> str:
    """Mean per-image difference B - A of METRIC between two evaluations of the same images, with its paired bootstrap
    95% interval; print JSON. Exits 1 with a message when the files name different images or lack the metric.

    Args:
        per_image_a: the first run's per_image.csv (written by `evaluating`).
        per_image_b: the second run's per_image.csv, on the same images.
        metric: a column of both files, e.g. dice, iou, sensitivity.
    """
    import csv

    from tools.metrics.bootstrap import paired_difference as difference

    def column(path: str) -> dict[str, float]:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or metric not in rows[0]:
            print(f"ERROR: {path}: no column {metric!r}", file=sys.stderr)
            sys.exit(1)
        key = "image" if "image" in rows[0] else next(iter(rows[0]))
        return {r[key]: float(r[metric]) if r[metric] not in ("", "nan", "None") else float("nan") for r in rows}

    try:
        result = difference(column(per_image_a), column(per_image_b))
    except ValueError as e:
        print(f"ERROR: {per_image_a}, {per_image_b}: {e}", file=sys.stderr)
        sys.exit(1)
    return json.dumps({"metric": metric, **result})


def channel_stats(bundle_dir: str, dataset_dir: str | None = None) -> str:
    """Per-channel mean and std of an RGB bundle's training split (its normalisation); print them as JSON.

    Args:
        bundle_dir: an RGB bundle's folder (one whose train.json has a split id).
        dataset_dir: the dataset folder itself (e.g. .../cvc_clinicdb); default the bundle's own dataset_dir
            (under SEG_DATA_ROOT).
    """
    from tools.pipelines.rgb import bundle_channel_stats

    return json.dumps(bundle_channel_stats(bundle_dir, dataset_dir))


def benchmark(bundle_dir: str, input: str | None = None, mode: str = "infer", output_json: str | None = None,  # noqa: A002
              repeats: int = 3, steps: int = 3, rounds: int = 3, compile: bool = False) -> str:  # noqa: A002
    """Time the bundle's inference on INPUT (--mode infer) or its training step (--mode train); print the results.

    Writes the results file and prints it as JSON. Timings belong in these files and the docs, never in tests.

    Args:
        bundle_dir: the bundle folder.
        input: --mode infer: an image, a folder of images, a NIfTI volume or a DICOM-series folder.
        mode: infer (the bundle's inference.json workflow, model load excluded) or train (the real training step
            of train.json on synthetic tensors: fp32-contiguous baseline, the config's default on this machine,
            and the other precision / memory-format variants).
        output_json: the results file; default BUNDLE_DIR/benchmark_inference.json or benchmark_train.json.
        repeats: --mode infer: timed runs after one warm-up.
        steps: --mode train: timed steps per round.
        rounds: --mode train: rounds interleaved across variants (each variant keeps its fastest round).
        compile: --mode train: also time torch.compile of the network.
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
    variants: list | str | None = None,
    max_epochs: int | None = None,
    output_dir: str | None = None,
    dataset_dir: str | None = None,
    overrides: dict | str | None = None,
    reuse: bool = False,
) -> str:
    """Train the bundle's network and its baselines the same way, evaluate each; print the markdown table.

    Each variant is trained with the bundle's train.json (plus its configs/baselines/<variant>.json overlay) and
    its best checkpoint evaluated on the validation split; OUTPUT_DIR/comparison.json and .md are written.
    Exits 1 with a message on an unknown variant, bad overrides or a run that saved no checkpoint.

    Args:
        bundle_dir: the bundle folder.
        variants: variant names, a list ("['resattunet','unet']") or a comma-separated string; default all of the
            bundle's variants (its own network first, then configs/baselines/*.json).
        max_epochs: training epochs of every variant; default the bundle's own.
        output_dir: where to write; default BUNDLE_DIR/eval/compare. A variant's previous results there are
            replaced.
        dataset_dir: the dataset folder itself (e.g. .../covid19_ct_lesion_medseg); default the bundle's own
            dataset_dir (under SEG_DATA_ROOT).
        overrides: config id -> value applied to every variant's training and evaluation, as a JSON file, or an
            inline JSON object / Python dict literal (fire parses it as a Python literal, so the JSON words true,
            false and null arrive as strings and are converted back here).
        reuse: keep a variant's results when OUTPUT_DIR/<variant>/result.json holds the same settings, instead of
            training it again.
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


def benchmark_variants(
    bundle_dir: str,
    grid: str,
    output_dir: str | None = None,
    max_epochs: int | None = None,
    dataset_dir: str | None = None,
    overrides: dict | str | None = None,
    reuse: bool = False,
) -> str:
    """Train and evaluate a grid of variants the same way; write a CSV, a markdown table and a plot; print the table.

    Each variant of the grid file is a named overlay of config ids on the bundle's train.json; it is trained and its
    best checkpoint evaluated on the validation split (tools.compare), then OUTPUT_DIR/benchmark.csv, benchmark.md
    and benchmark.png (validation Dice against training time and parameters) are written.
    Exits 1 with a message on a bad grid file, bad overrides or a run that saved no checkpoint.

    Args:
        bundle_dir: the bundle folder.
        grid: the grid file, {"description": text, "overrides": {id: value}, "variants": {name: {id: value}}}
            (e.g. BUNDLE_DIR/configs/grids/survey.json).
        output_dir: where to write; default BUNDLE_DIR/eval/benchmark_<grid file name>.
        max_epochs: training epochs of every variant; default the grid's overrides, else the bundle's own.
        dataset_dir: the dataset folder itself; default the bundle's own dataset_dir (under SEG_DATA_ROOT).
        overrides: config id -> value applied to every variant after the grid's own overrides, as a JSON file or an
            inline JSON object / Python dict literal.
        reuse: keep a variant's results when OUTPUT_DIR/<variant>/result.json holds the same settings, instead of
            training it again.
    """
    from tools.benchmark_variants import benchmark_variants as run_grid
    from tools.compare import CompareError

    if isinstance(overrides, dict):
        overrides = _json_words(overrides)
    try:
        result = run_grid(bundle_dir, grid, output_dir=output_dir, max_epochs=max_epochs, dataset_dir=dataset_dir,
                          overrides=overrides, reuse=reuse)
    except CompareError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    return result["table"]


def mesh(mask: str, output: str, png: str | None = None, label: int | None = None, step_size: int = 1) -> str:
    """Write the surface of a NIfTI mask as binary STL in world coordinates (mm); optionally a PNG rendering.

    Prints a JSON summary of the mesh. Exits 1 with a message on a bad input.

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


def promote(run_dir: str, bundle_dir: str, dtype: str = "float16", choice: str = "auto", metric: str = "dice") -> str:
    """Ship a training run's best model as the bundle's weights: RUN_DIR/models/model.pt -> BUNDLE/models/model.pt;
    or a cross-validation run's models (RUN_DIR/crossval.json): the fold ensemble or a single fold model.

    Training never writes into the bundle's models/ (a run writes OUTPUT_DIR/models/model.pt); this is the explicit
    step that does. The checkpoint is loaded strictly into the bundle's network first, so a model of another
    shape is refused before anything is written; then it is written compactly (weights only, half precision).

    Args:
        run_dir: the training run's output folder (holding models/model.pt).
        bundle_dir: the bundle whose models/model.pt is replaced.
        dtype: the floating-point type of the shipped weights (float16, bfloat16 or float32).
        choice: for a cross-validation run: ensemble (every fold to models/fold<k>/model.pt, for
            configs/inference_ensemble.json, and the best fold to models/model.pt), single (the best fold only), or
            auto (the ensemble: it cannot be scored out of fold, see tools.commands.crossval.promote_crossval). The
            choice and the CV table are written to BUNDLE/docs/crossval.md.
        metric: for a cross-validation run: the held-out metric that names the best fold (e.g. dice, mean_dice_256).
    """
    from pathlib import Path

    from tools.checkpoints import promote as promote_run
    from tools.commands.crossval import CrossvalError, promote_crossval
    from tools.errors import CheckpointError

    try:
        if (Path(run_dir) / "crossval.json").is_file():
            return json.dumps(promote_crossval(run_dir, bundle_dir, choice=choice, metric=metric, dtype=dtype))
        return json.dumps(promote_run(run_dir, bundle_dir, dtype=dtype), default=str)
    except (CheckpointError, CrossvalError, OSError, ValueError) as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)


def compact(src: str, dst: str, dtype: str = "float16") -> str:
    """Ship weights compactly: write SRC's network weights alone to DST, in half precision; print a JSON summary.

    Args:
        src: a state-dict file, or a training checkpoint holding it under "model" (e.g. a resume checkpoint).
        dst: the file to write (whole or not at all), e.g. BUNDLE/models/model.pt.
        dtype: float16, bfloat16 or float32.
    """
    from tools.weights import compact_weights

    return json.dumps(compact_weights(src, dst, dtype))


def render_configs(check: bool = False) -> str:
    """Write each bundle's shared configs from its family's template and its overlay; print what was written.

    The shared configs (train, evaluate, inference, multi_gpu_train.json, logging.conf) are rendered from
    tools/bundle_templates/ (its README.md describes the layout); metadata.json and the bundle-only overlays are not.
    Exits 1 with a message on a template or overlay that cannot be rendered, and with --check on any committed file
    that differs from its rendering (naming each).

    Args:
        check: write nothing; exit 1 naming each file that differs from its rendering.
    """
    from tools.render_configs import TEMPLATES, RenderError, render_all

    try:
        differing = render_all(check=check)
    except RenderError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    names = [str(p.relative_to(TEMPLATES.parents[1])) for p in differing]
    if check:
        if names:
            print("differs from its rendering (run python -m tools render_configs): " + ", ".join(names),
                  file=sys.stderr)
            sys.exit(1)
        return "every rendered config matches tools/bundle_templates/"
    return "wrote " + ", ".join(names) if names else "every rendered config was up to date"


def serve(studies: str, host: str = "127.0.0.1", port: int = 8000, bundles: str | None = None,
          app_dir: str = "monailabel_app", skip_trainers: bool = False) -> None:
    """Start MONAI Label's server, offline, serving the bundles for inference and training (blocks until stopped).

    Needs the extra: pip install -e ".[monailabel]". Every bundle is a MONAI Label model named after its folder
    (a bundle with configs/inference_ct.json adds <name>_ct, its CT configuration); 2D inputs give PNG label maps
    of the input's size, volumes (NIfTI, NRRD, MetaImage, DICOM series) NIfTI label maps with the input's affine,
    labels 0 = background and 1 = the class (metadata.json's channel_def). The bundles are served from copies in
    APP_DIR/bundles/ (the repository's are never written); POST /train/<model> trains into
    APP_DIR/runs/<model>/<time>/ and promotes the run's best validation model to the served copy's
    models/model.pt, which the next inference uses. No model-zoo download, no SAM 2 model: nothing leaves the machine.

    Args:
        studies: the studies folder (images; MONAI Label keeps labels in STUDIES/labels/final/); created if absent.
        host: the address to listen on (127.0.0.1: this machine only).
        port: the port.
        bundles: comma-separated bundle folders or names under bundles/ (default: every bundle of the repository).
        app_dir: the app folder MONAI Label runs from (written if absent; holds the served copies of the bundles,
            MONAI Label's logs and the training runs).
        skip_trainers: serve inference only.
    """
    from tools.serve import serve as serve_bundles

    try:
        serve_bundles(studies, host=host, port=port, bundles=bundles, app_dir=app_dir, skip_trainers=skip_trainers)
    except (ImportError, FileNotFoundError) as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)


# in the order `python -m tools --help` lists them
COMMANDS = {
    "verify": verify,
    "export": export,
    "pack": pack,
    "benchmark": benchmark,
    "compare": compare,
    "crossval": __import__("tools.commands.crossval", fromlist=["crossval_command"]).crossval_command,
    "benchmark_variants": benchmark_variants,
    "promote": promote,
    "compact": compact,
    "channel_stats": channel_stats,
    "paired_difference": paired_difference,
    "hu_window": hu_window,
    "mesh": mesh,
    "render_configs": render_configs,
    "serve": serve,
}
