"""Train and evaluate a bundle's network variants the same way and tabulate them (``python -m tools compare``).

A paper's comparison table (the proposed network against its baselines) is reproduced by training every variant
with the bundle's own ``train.json`` (same data, split, seed, loss, optimiser and schedule), keeping each variant's
best validation checkpoint, and evaluating each checkpoint on the training's validation split with the bundle's
``evaluate.json``. Rerunning the command reruns everything (or, with ``reuse=True``, only what changed).

What a bundle must provide (the layout of this repository's bundles):

- ``configs/train.json`` with the ids ``network_def``, ``network``, ``ckpt_dir``, ``output_dir``, ``dataset_dir``,
  ``train#trainer`` (its ``max_epochs``), ``validate#evaluator`` (its key metric chooses the best checkpoint, which a
  ``CheckpointSaver`` writes to ``@ckpt_dir/model.pt``) and the run id ``run``; optionally ``variant_name`` (the
  name of the bundle's own network in the table; default: the class name of ``network_def``, lower case) and
  ``val_interval``.
- ``configs/evaluate.json``, merged over ``train.json``, with the run id ``evaluating`` and the ids ``checkpoint``
  and ``eval_split`` (``"validation"``: the training's validation split), writing ``@output_dir/metrics.json``
  (:class:`tools.evaluation.SegmentationMetricsSaver`).
- ``configs/baselines/<variant>.json``: one overlay per baseline, merged over ``train.json`` (and over
  ``evaluate.json`` for its evaluation). The bundle's own network is the variant without an overlay.

Output, for ``output_dir`` ``OUT``:

- ``OUT/<variant>/models/model.pt``: the variant's best validation checkpoint (weights only);
- ``OUT/<variant>/train/``: its training logs (``log.txt``, TensorBoard events, the last resume checkpoint);
- ``OUT/<variant>/metrics.json`` and ``per_image.csv``: its evaluation on the validation split;
- ``OUT/<variant>/result.json``: parameters, epochs, best validation epoch, timings, metrics and settings;
- ``OUT/comparison.json`` and ``OUT/comparison.md``: all variants (the markdown table of :func:`comparison_table`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from monai.bundle import ConfigParser

from tools.commands.runs import (CompareError, _bundle_files, _check_schedule, _common_overrides,
                                 _evaluate_on_validation, _parse_overrides, _sha256, _workflow)
from tools.io import atomic_write_text

__all__ = ["CompareError", "TABLE_COLUMNS", "bundle_variants", "compare_variants", "comparison_table"]

logger = logging.getLogger(__name__)

# (column title, key in a variant's result record or its metrics); "dice" is the F1 score for binary masks.
TABLE_COLUMNS = (
    ("variant", "variant"),
    ("params (M)", "params_m"),
    ("epochs", "epochs"),
    ("best val epoch", "best_val_epoch"),
    ("dice (F1)", "dice"),
    ("iou", "iou"),
    ("precision", "precision"),
    ("sensitivity", "sensitivity"),
    ("specificity", "specificity"),
    ("accuracy", "accuracy"),
)


def _main_variant_name(bundle: Path, train_json: Path) -> str:
    parser = ConfigParser()
    parser.read_config(str(train_json))
    if "variant_name" in parser:
        parser["bundle_root"] = str(bundle)
        return str(parser.get_parsed_content("variant_name"))
    target = parser["network_def"].get("_target_", "network") if isinstance(parser["network_def"], dict) else "network"
    return str(target).rsplit(".", 1)[-1].lower()


def bundle_variants(bundle_dir: str | Path) -> dict[str, Path | None]:
    """The variants a bundle can train: ``{name: overlay file}``, its own network first (overlay ``None``),
    then one per ``configs/baselines/<name>.json`` (sorted).

    Raises:
        CompareError: if the bundle lacks its configs, or a baseline overlay has the own network's name.
    """
    bundle = Path(bundle_dir).resolve()
    files = _bundle_files(bundle)
    main = _main_variant_name(bundle, files["train"])
    variants: dict[str, Path | None] = {main: None}
    for overlay in sorted((bundle / "configs" / "baselines").glob("*.json")):
        if overlay.stem == main:
            raise CompareError(f"{overlay}: a baseline overlay has the name of the bundle's own network '{main}'.")
        variants[overlay.stem] = overlay
    return variants


def _parse_variants(variants: Sequence[str] | str | None, available: Mapping[str, Path | None], bundle: Path) -> list[str]:
    if variants is None:
        names = list(available)
    elif isinstance(variants, str):
        names = [v.strip() for v in variants.strip("[]").replace("'", "").replace('"', "").split(",") if v.strip()]
    else:
        names = [str(v) for v in variants]
    if not names:
        raise CompareError("no variant to compare.")
    unknown = [n for n in names if n not in available]
    if unknown:
        raise CompareError(
            f"{bundle}: unknown variant(s) {', '.join(unknown)}; this bundle has {', '.join(available)} "
            f"(its own network, then configs/baselines/*.json)."
        )
    if len(set(names)) != len(names):
        raise CompareError(f"variants repeat a name: {names}.")
    return names


def _train_variant(name: str, configs: list[Path], files: Mapping[str, Path], bundle: Path, out: Path,
                   common: Mapping) -> dict:
    """Train one variant; return its record without metrics. Raises CompareError if no checkpoint was saved."""
    ckpt = out / "models" / "model.pt"
    override = {**common, "output_dir": str(out / "train"), "ckpt_dir": str(out / "models")}
    wf = _workflow(configs, files, bundle, "run", override)
    wf.initialize()
    parser = wf.parser
    start = time.perf_counter()
    wf.run()
    seconds = time.perf_counter() - start
    trainer = parser.get_parsed_content("train#trainer")
    evaluator = parser.get_parsed_content("validate#evaluator")
    network = parser.get_parsed_content("network")
    network = getattr(network, "module", network)  # DistributedDataParallel
    dataset_dir = parser.get_parsed_content("dataset_dir") if "dataset_dir" in parser else None
    wf.finalize()
    if not ckpt.is_file():
        raise CompareError(f"{name}: training saved no best checkpoint {ckpt} (did validation run?).")
    params = sum(p.numel() for p in network.parameters())
    epochs = int(trainer.state.epoch)
    best_epoch = int(evaluator.state.best_metric_epoch)
    return {
        "variant": name,
        "params": params,
        "params_m": params / 1e6,
        "epochs": epochs,
        "best_val_epoch": best_epoch if best_epoch >= 0 else None,
        "best_val_metric": {"name": evaluator.state.key_metric_name, "value": float(evaluator.state.best_metric)},
        "train_seconds": round(seconds, 2),
        "seconds_per_epoch": round(seconds / max(epochs, 1), 2),
        "dataset_dir": str(dataset_dir) if dataset_dir is not None else None,
        "checkpoint": str(ckpt),
    }


def _shown(path: Path, bundle: Path) -> str:
    """``path`` relative to the bundle when inside it (``configs/baselines/unet.json``), else whole."""
    return str(path.relative_to(bundle)) if path.is_relative_to(bundle) else str(path)


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def comparison_table(records: Sequence[Mapping]) -> str:
    """Markdown table of variant records (:data:`TABLE_COLUMNS`): one row a variant, metrics from its evaluation
    on the validation split (means over the images; ``dice`` is the F1 score of the binary masks)."""
    lines = ["| " + " | ".join(title for title, _ in TABLE_COLUMNS) + " |",
             "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|"]
    for r in records:
        row = [r.get(key, r.get("metrics", {}).get(key)) for _, key in TABLE_COLUMNS]
        row[1] = f"{r['params_m']:.3f}"
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def compare_variants(
    bundle_dir: str | Path,
    variants: Sequence[str] | str | None = None,
    output_dir: str | Path | None = None,
    max_epochs: int | None = None,
    dataset_dir: str | Path | None = None,
    overrides: Mapping | str | None = None,
    reuse: bool = False,
    extra_variants: Mapping[str, str | Path] | None = None,
) -> dict:
    """Train each variant with the bundle's ``train.json`` (+ its overlay), evaluate its best checkpoint on the
    validation split with ``evaluate.json``, and write the comparison (see the module docstring for the files).

    Args:
        bundle_dir: the bundle's folder.
        variants: names from :func:`bundle_variants` (a list, or a comma-separated string); default all of them.
        output_dir: where to write (default ``<bundle>/eval/compare``). A variant's previous results in
            ``output_dir/<variant>`` are replaced.
        max_epochs: training epochs of every variant (``train#trainer#max_epochs``); default the bundle's own.
        dataset_dir: data root of the bundle's training layout; default the bundle's own (``SEG_DATA_ROOT``).
        overrides: config id -> value applied to every variant's training and evaluation (e.g. smaller networks,
            ``val_interval``), as a dict, a JSON string or a JSON file. ``output_dir``, ``ckpt_dir``, ``checkpoint``
            and ``eval_split`` are set by the comparison.
        reuse: keep a variant's results when ``output_dir/<variant>/result.json`` holds the same settings (epochs,
            data, overrides and the bytes of the config files used) instead of training it again.
        extra_variants: more variants, ``{name: overlay file}``, beside the bundle's own (overlays kept outside
            ``configs/baselines/``, e.g. those :mod:`tools.commands.benchmark_variants` writes from a grid file); a name the
            bundle already has is refused.

    Returns:
        the content of ``comparison.json``: ``{"bundle", "eval_split", "settings", "variants": [record, ...],
        "table"}`` where each record has ``variant``, ``overlay``, ``params``, ``params_m``, ``epochs``,
        ``best_val_epoch``, ``best_val_metric``, ``train_seconds``, ``seconds_per_epoch``, ``checkpoint``,
        ``metrics`` (the variant's ``metrics.json``) and ``settings``.

    Raises:
        CompareError: on an unknown variant (naming the available ones), bad overrides, ``max_epochs`` below the
            bundle's ``val_interval``, or a training that saved no checkpoint.
    """
    bundle = Path(bundle_dir).resolve()
    files = _bundle_files(bundle)
    available = bundle_variants(bundle)
    if extra_variants:
        clash = sorted(set(extra_variants) & set(available))
        if clash:
            raise CompareError(f"{bundle}: extra variant name(s) {', '.join(clash)} are the bundle's own variants.")
        available.update({str(n): Path(p).resolve() for n, p in extra_variants.items()})
    names = _parse_variants(variants, available, bundle)
    extra = _parse_overrides(overrides)
    out_root = Path(output_dir).resolve() if output_dir else bundle / "eval" / "compare"
    common = _common_overrides(extra, dataset_dir, max_epochs)

    plan = {name: [files["train"]] + ([available[name]] if available[name] else []) for name in names}
    for name, configs in plan.items():
        _check_schedule(name, configs, bundle, common)

    records = []
    for name, configs in plan.items():
        overlay = available[name]
        out = out_root / name
        settings = {
            "max_epochs": common.get("train#trainer#max_epochs"),
            "dataset_dir": common.get("dataset_dir"),
            "data_root_env": os.environ.get("SEG_DATA_ROOT"),
            "overrides": extra,
            "configs_sha256": _sha256([*configs, files["evaluate"]]),
        }
        previous = out / "result.json"
        if reuse and previous.is_file():
            record = json.loads(previous.read_text())
            if record.get("settings") == json.loads(json.dumps(settings)) and (out / "metrics.json").is_file():
                logger.info("%s: reusing %s (same settings)", name, previous)
                records.append(record)
                continue
        for stale in (out / "models", out / "train"):
            shutil.rmtree(stale, ignore_errors=True)
        for stale in ("metrics.json", "per_image.csv", "result.json"):
            (out / stale).unlink(missing_ok=True)
        logger.info("%s: training with %s", name, ", ".join(_shown(c, bundle) for c in configs))
        record = _train_variant(name, configs, files, bundle, out, common)
        record["metrics"] = _evaluate_on_validation(configs, files, bundle, out, common)
        record["overlay"] = _shown(overlay, bundle) if overlay else None
        record["settings"] = settings
        atomic_write_text(previous, json.dumps(record, indent=2) + "\n")
        records.append(record)

    table = comparison_table(records)
    result = {
        "bundle": bundle.name,
        "eval_split": "validation",
        "settings": {"max_epochs": common.get("train#trainer#max_epochs"), "dataset_dir": common.get("dataset_dir"),
                     "overrides": extra},
        "variants": records,
        "table": table,
    }
    atomic_write_text(out_root / "comparison.json", json.dumps(result, indent=2) + "\n")
    cases = next((c for c in ("images", "volumes") if any(f"n_{c}" in r["metrics"] for r in records)), "images")
    n_cases = "/".join(str(n) for n in sorted({str(r["metrics"].get(f"n_{cases}")) for r in records}))
    header = (
        f"# {bundle.name}: network variants on the validation split\n\n"
        "Every variant is trained the same way by configs/train.json (+ configs/baselines/<variant>.json) and its best "
        f"validation checkpoint is evaluated by configs/evaluate.json on the validation split ({n_cases} {cases}; "
        f"means over {cases}; dice is the F1 score of the binary masks).\n"
        f"Settings: max_epochs {_fmt(result['settings']['max_epochs'])}, dataset_dir "
        f"{result['settings']['dataset_dir'] or 'the bundle default'}, overrides {json.dumps(extra)}.\n\n"
    )
    atomic_write_text(out_root / "comparison.md", header + table)
    return result


# ---------------------------------------------------------------- the command line (python -m tools compare)


def compare_command(
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
    try:
        result = compare_variants(bundle_dir, variants=variants, output_dir=output_dir, max_epochs=max_epochs,
                                  dataset_dir=dataset_dir, overrides=overrides, reuse=reuse)
    except CompareError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    return result["table"]
