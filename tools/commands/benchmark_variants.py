"""Train and evaluate a grid of a bundle's variants the same way, and tabulate and plot them
(``python -m tools benchmark_variants``).

U-Net surveys compare structural mechanisms (residual, inception and dense units, attention gates, dilated / ASPP
bottlenecks, cascades) and non-structural options (augmentation, optimiser, activation, loss) one at a time against
a baseline. A *grid file* states such a comparison as data: each variant is a named overlay of config ids on the
bundle's ``train.json`` (the same ids as a ``--key value`` override), e.g.::

    {
        "description": "what the grid compares",
        "overrides": {"train#trainer#max_epochs": 100},
        "variants": {
            "baseline": {},
            "inception": {"network_def#unit": "inception", "network_def#skip_attention": null},
            "ranger": {"optimizer_name": "ranger"}
        }
    }

``overrides`` (optional) applies to every variant (and yields to ``--max_epochs`` and the command's own overrides).
Everything else is :func:`tools.commands.compare.compare_variants`: every variant is trained by the bundle's ``train.json``
plus its overlay (same data, split, seed and schedule), its best validation checkpoint is evaluated on the
validation split by ``evaluate.json``, and its parameters and training time are recorded.

Output, for ``output_dir`` ``OUT`` (default ``<bundle>/eval/benchmark_<grid name>``):

- ``OUT/overlays/<variant>.json``: each variant's overlay, written from the grid (the config files trained with);
- ``OUT/<variant>/...`` and ``OUT/comparison.{json,md}``: as :func:`tools.commands.compare.compare_variants` writes them;
- ``OUT/benchmark.csv``: one row a variant: its overlay, parameters, epochs, training seconds, and each metric of
  its ``metrics.json`` with the bounds of its 95% interval;
- ``OUT/benchmark.md``: the same as a markdown table;
- ``OUT/benchmark.png``: validation Dice (F1) with its 95% interval against training time and against parameters.
"""

from __future__ import annotations

import sys

import csv
import io
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from tools.commands.compare import compare_variants
from tools.commands.runs import CompareError, _parse_overrides
from tools.io import atomic_path, atomic_write_text

__all__ = ["GridError", "METRICS", "load_grid", "benchmark_variants", "benchmark_table", "plot_benchmark"]

logger = logging.getLogger(__name__)

# metric columns, in the order of the table, when the variants' metrics.json have them
METRICS = ("dice", "auc", "sensitivity", "specificity", "accuracy", "iou", "precision")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class GridError(CompareError):
    """A grid file that cannot be used; the message names the file and the entry."""


def load_grid(grid: str | Path | Mapping) -> dict:
    """Read and check a grid (file or mapping): ``{"description", "overrides", "variants": {name: overlay}}``.

    Raises:
        GridError: naming the file: not JSON, no ``variants`` (or an empty one), a variant name that is not a plain
            file name (letters, digits, ``_ . -``), an overlay or ``overrides`` that is not an object of config ids.
    """
    where = str(grid) if not isinstance(grid, Mapping) else "grid"
    if isinstance(grid, Mapping):
        content = dict(grid)
    else:
        path = Path(grid)
        if not path.is_file():
            raise GridError(f"grid file {path} does not exist.")
        try:
            content = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise GridError(f"{path}: not JSON ({e}).") from e
    if not isinstance(content, dict) or not isinstance(content.get("variants"), dict) or not content["variants"]:
        raise GridError(f"{where}: needs a non-empty \"variants\" object, {{name: {{config id: value}}}}.")
    for name, overlay in content["variants"].items():
        if not _NAME.match(name):
            raise GridError(f"{where}: variant name {name!r} must be letters, digits, '_', '.' or '-' (a folder name).")
        if not isinstance(overlay, dict):
            raise GridError(f"{where}: variant {name!r} must be an object of config ids, got {type(overlay).__name__}.")
    overrides = content.get("overrides", {})
    if not isinstance(overrides, dict):
        raise GridError(f"{where}: \"overrides\" must be an object of config ids.")
    return {"description": str(content.get("description", "")), "overrides": overrides,
            "variants": content["variants"]}


def _rows(result: Mapping, grid: Mapping) -> list[dict]:
    rows = []
    for record in result["variants"]:
        metrics = record.get("metrics", {})
        row = {
            "variant": record["variant"],
            "overlay": json.dumps(grid["variants"].get(record["variant"], {}), sort_keys=True),
            "params": record["params"],
            "params_m": round(record["params_m"], 4),
            "epochs": record["epochs"],
            "best_val_epoch": record.get("best_val_epoch"),
            "train_seconds": record["train_seconds"],
            "seconds_per_epoch": record["seconds_per_epoch"],
        }
        for name in METRICS:
            if name not in metrics:
                continue
            interval = metrics.get(f"{name}_ci95") or [None, None]
            row.update({name: metrics[name], f"{name}_ci95_low": interval[0], f"{name}_ci95_high": interval[1]})
        cases = "volumes" if "n_volumes" in metrics else "images"  # the evaluation's unit (tools.metrics.volumes)
        row[f"n_{cases}"] = metrics.get(f"n_{cases}")
        rows.append(row)
    return rows


def _cases(rows) -> str:
    """The evaluation's unit of the rows: ``"volumes"`` (the spine bundle's volume metrics) or ``"images"``."""
    return "volumes" if any("n_volumes" in r for r in rows) else "images"


def _num(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def benchmark_table(rows: Sequence[Mapping]) -> str:
    """Markdown table of :func:`benchmark_variants` rows: variant, its overlay, parameters, training time, and each
    metric's mean over the validation images with its 95% bootstrap interval."""
    metrics = [m for m in METRICS if any(m in r for r in rows)]
    head = ["variant", "overlay (config ids)", "params (M)", "epochs", "train s", "s / epoch"] + [
        f"{m}{' (F1)' if m == 'dice' else ''} [95% CI]" for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        overlay = json.loads(r["overlay"])
        changes = ", ".join(f"`{k}`={json.dumps(v)}" for k, v in overlay.items()) or "(bundle default)"
        cells = [r["variant"], changes.replace("|", "\\|"), f"{r['params_m']:.3f}", str(r["epochs"]),
                 f"{r['train_seconds']:.1f}", f"{r['seconds_per_epoch']:.1f}"]
        for m in metrics:
            low, high = r.get(f"{m}_ci95_low"), r.get(f"{m}_ci95_high")
            interval = f" [{_num(low, 3)}, {_num(high, 3)}]" if low is not None else ""
            cells.append(_num(r.get(m)) + interval)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_benchmark(rows: Sequence[Mapping], title: str = "") -> bytes:
    """PNG (bytes) of validation Dice (F1) with 95% intervals against training time (s) and parameters (M)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    for ax, key, label in ((axes[0], "train_seconds", "training time (s)"), (axes[1], "params_m", "parameters (M)")):
        for r in rows:
            y = r.get("dice")
            if y is None:
                continue
            low, high = r.get("dice_ci95_low"), r.get("dice_ci95_high")
            yerr = [[y - low], [high - y]] if low is not None and high is not None else None
            ax.errorbar(r[key], y, yerr=yerr, fmt="o", capsize=3)
            ax.annotate(r["variant"], (r[key], y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel(f"validation Dice (F1), mean over {_cases(rows)}, 95% CI")
    fig.suptitle(title or "variants: validation Dice vs cost")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def benchmark_variants(
    bundle_dir: str | Path,
    grid: str | Path | Mapping,
    output_dir: str | Path | None = None,
    max_epochs: int | None = None,
    dataset_dir: str | Path | None = None,
    overrides: Mapping | str | None = None,
    reuse: bool = False,
) -> dict:
    """Train and evaluate every variant of ``grid`` with the bundle's configs; write the CSV, table and plot.

    Args:
        bundle_dir: the bundle folder.
        grid: the grid file (or its content; see the module docstring).
        output_dir: where to write; default ``<bundle>/eval/benchmark_<grid file stem>``.
        max_epochs: training epochs of every variant; default the grid's ``overrides``, else the bundle's own.
        dataset_dir: the data folder; default the bundle's own (under ``SEG_DATA_ROOT``).
        overrides: config ids applied to every variant after the grid's ``overrides`` (dict, JSON text or file).
        reuse: keep a variant's results when its settings did not change (see :func:`tools.commands.compare.compare_variants`).

    Returns:
        ``{"bundle", "grid", "description", "rows": [...], "table", "files": {"csv", "md", "png", "comparison"}}``.

    Raises:
        GridError: for a bad grid file; CompareError: as :func:`tools.commands.compare.compare_variants`.
    """
    bundle = Path(bundle_dir).resolve()
    spec = load_grid(grid)
    grid_name = Path(grid).stem if not isinstance(grid, Mapping) else "grid"
    out = Path(output_dir).resolve() if output_dir else bundle / "eval" / f"benchmark_{grid_name}"
    common = {**spec["overrides"], **_parse_overrides(overrides, GridError)}
    overlays = {}
    for name, overlay in spec["variants"].items():
        path = out / "overlays" / f"{name}.json"
        atomic_write_text(path, json.dumps(overlay, indent=4) + "\n")
        overlays[name] = path
    result = compare_variants(bundle, variants=list(overlays), output_dir=out, max_epochs=max_epochs,
                              dataset_dir=dataset_dir, overrides=common, reuse=reuse, extra_variants=overlays)
    rows = _rows(result, spec)
    buffer = io.StringIO()
    fields = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.DictWriter(buffer, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "benchmark.csv", buffer.getvalue())
    table = benchmark_table(rows)
    settings = result["settings"]
    header = (
        f"# {bundle.name}: grid {grid_name}\n\n"
        + (f"{spec['description']}\n\n" if spec["description"] else "")
        + "Every variant is trained by configs/train.json plus its overlay (overlays/<variant>.json) with the same "
        "data, split, seed and schedule, and its best validation checkpoint is evaluated by configs/evaluate.json on "
        f"the validation split (means over {_cases(rows)}, 95% percentile-bootstrap intervals over {_cases(rows)}).\n"
        f"Settings: max_epochs {settings['max_epochs'] if settings['max_epochs'] is not None else 'from the configs'}, "
        f"dataset_dir {settings['dataset_dir'] or 'the bundle default'}, overrides {json.dumps(common)}.\n\n"
    )
    atomic_write_text(out / "benchmark.md", header + table)
    with atomic_path(out / "benchmark.png") as tmp:
        tmp.write_bytes(plot_benchmark(rows, f"{bundle.name}: grid {grid_name}"))
    files = {"csv": str(out / "benchmark.csv"), "md": str(out / "benchmark.md"), "png": str(out / "benchmark.png"),
             "comparison": str(out / "comparison.json")}
    logger.info("benchmark of %d variants written to %s", len(rows), out)
    return {"bundle": bundle.name, "grid": grid_name, "description": spec["description"], "rows": rows,
            "table": table, "files": files}


# ---------------------------------------------------------------- the command line (python -m tools benchmark_variants)


def benchmark_variants_command(
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
    best checkpoint evaluated on the validation split (tools.commands.compare), then OUTPUT_DIR/benchmark.csv, benchmark.md
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
    try:
        result = benchmark_variants(bundle_dir, grid, output_dir=output_dir, max_epochs=max_epochs, dataset_dir=dataset_dir,
                          overrides=overrides, reuse=reuse)
    except CompareError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    return result["table"]
