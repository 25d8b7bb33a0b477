"""The tables of a ``python -m tools crossval`` run: the pooled out-of-fold metrics with bootstrap intervals
(:func:`pooled_table`), the per-clip or per-subject table (:func:`group_table`), ``per_image.csv`` and
``crossval.md``."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tools.commands.runs import CrossvalError
from tools.io import atomic_write_text
from tools.metrics.bootstrap import cluster_bootstrap_ci, summarise_with_ci

__all__ = ["pooled_table", "group_table"]


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _number(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def pooled_table(rows: Sequence[Mapping[str, str]], unit: str = "images", group: str = "item") -> dict:
    """Means and bootstrap 95% intervals over the pooled per-item rows, for every numeric column
    (:func:`tools.metrics.bootstrap.summarise_with_ci`), and ``n_<unit>``. With ``group="clip"`` also each
    column's interval resampling whole clips (``<metric>_ci95_by_clip``,
    :func:`tools.metrics.bootstrap.cluster_bootstrap_ci`): a clip's frames are near-copies, so the frame-level
    interval alone is too narrow.

    Raises:
        CrossvalError: if there is no row.
    """
    if not rows:
        raise CrossvalError("no evaluated item to pool.")
    skip = {"image", "volume", "fold"}
    names = [k for k in rows[0] if k not in skip and any(not math.isnan(_number(r.get(k))) for r in rows)]
    out = summarise_with_ci({k: [_number(r.get(k)) for r in rows] for k in names}, unit=unit)
    out[f"n_{unit}"] = len(rows)
    if group == "clip":
        from tools.data.splits import fold_groups

        key = "image" if "image" in rows[0] else next(iter(rows[0]))
        clips = fold_groups([{"image": r[key]} for r in rows], group)
        for k in names:
            ci = cluster_bootstrap_ci([_number(r.get(k)) for r in rows], clips)
            out[f"{k}_ci95_by_clip"] = None if ci is None else list(ci)
        out["n_clips"] = len(set(clips))
    return out


def _write_csv(path: Path, rows: Sequence[Mapping[str, str]]) -> None:
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0].keys()), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def group_table(rows: Sequence[Mapping[str, str]], group: str, metrics: Sequence[str]) -> list[str]:
    """Markdown lines of the pooled out-of-fold ``metrics`` per clip or subject (:func:`tools.data.fold_groups`), worst
    Dice first: where the folds differ, this says which clips or subjects make the difference. Empty for
    ``group="item"`` (one row an item is the pooled CSV itself)."""
    from tools.data.splits import fold_groups

    if group == "item" or not rows:
        return []
    key = "image" if "image" in rows[0] else next(iter(rows[0]))
    names = fold_groups([{"image": r[key]} for r in rows], group)
    by: dict[str, list[Mapping[str, str]]] = {}
    for name, row in zip(names, rows):
        by.setdefault(name, []).append(row)

    def mean(rs, m):
        values = [v for v in (_number(r.get(m, "")) for r in rs) if not math.isnan(v)]
        return sum(values) / len(values) if values else None

    order = sorted(by, key=lambda g: (mean(by[g], metrics[0]) if mean(by[g], metrics[0]) is not None else -1.0))
    lines = ["", f"Per {group}, out of fold (mean over its {'images' if group == 'clip' else 'volumes'}; worst "
             f"{metrics[0]} first):", "", f"| {group} | fold | n | " + " | ".join(metrics) + " |",
             "|" + "---|" * (len(metrics) + 3)]
    for g in order:
        folds = sorted({r.get("fold", "") for r in by[g]})
        lines.append(f"| {g} | {','.join(folds)} | {len(by[g])} | " + " | ".join(_fmt(mean(by[g], m)) for m in metrics)
                     + " |")
    return lines


def _from_run_note(from_run: str | list | None) -> str:
    if not from_run:
        return ""
    if isinstance(from_run, str):
        return (f" Evaluation only: the fold models of `{from_run}` (trained with its settings; epochs and seconds are "
                "its training's), evaluated with these overrides.")
    runs = ", ".join(f"`{r}`" for r in from_run)
    return (f" Evaluation only: each fold is scored by the mean-probability ensemble of the same fold's models of {runs} "
            "(every member left the fold out; epochs and seconds are the members' training, summed), evaluated with "
            "these overrides.")


def _markdown(result: Mapping, metrics: Sequence[str], rows: Sequence[Mapping[str, str]] = ()) -> str:
    s = result["settings"]
    unit = result["unit"]
    lines = [
        f"# {result['bundle']}: {result['n_folds']}-fold cross-validation ({result['recipe']})",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Folds by {s['group']} (seed {s['seed']}); max_epochs {s['max_epochs'] or 'the recipe default'}, early-stopping "
        f"patience {s['early_stop_patience'] if s['early_stop_patience'] else 'none'}; overrides "
        f"`{json.dumps(s['overrides'])}`. Pooled = out of fold: each of the {result['pooled'][f'n_{unit}']} {unit} "
        "predicted once, by the model that did not train on it; intervals are bootstrap 95% over "
        f"{unit}. " + ("Each fold is scored with its last epoch's weights (`--keep last`): no choice was made on the "
                      "fold it is scored on." if s.get("keep") == "last" else
                      "Each fold's checkpoint was chosen on its held-out fold (as the bundle's validation does), so the "
                      "figures are slightly optimistic for every recipe alike.")
        + _from_run_note(s.get("from_run")),
        "",
        "| fold | " + " | ".join(f"{unit}" if m == "n" else m for m in ["n", *metrics]) + " | best epoch | epochs | seconds |",
        "|" + "---|" * (len(metrics) + 5),
    ]
    for f in result["folds"]:
        m = f["metrics"]
        cells = [str(f["fold"]), str(len(f["val_items"]))] + [_fmt(m.get(x)) for x in metrics]
        cells += [str(f["best_epoch"]), str(f["epochs"]), _fmt(f["seconds"])]
        lines.append("| " + " | ".join(cells) + " |")
    pooled = result["pooled"]
    cells = ["pooled", str(pooled[f"n_{unit}"])]
    for x in metrics:
        ci = pooled.get(f"{x}_ci95")
        cells.append(f"{_fmt(pooled.get(x))} [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else _fmt(pooled.get(x)))
    cells += ["-", str(sum(f["epochs"] for f in result["folds"])), _fmt(result["seconds"])]
    lines.append("| " + " | ".join(cells) + " |")
    by_clip = [f"{x} [{pooled[x + '_ci95_by_clip'][0]:.4f}, {pooled[x + '_ci95_by_clip'][1]:.4f}]" for x in metrics
               if pooled.get(f"{x}_ci95_by_clip")]
    if by_clip:
        lines += ["", f"Pooled intervals resampling whole clips ({pooled['n_clips']} clips; a clip's frames are "
                  "near-copies, so the intervals over frames above are too narrow): " + ", ".join(by_clip) + "."]
    lines += group_table(rows, s["group"], [m for m in metrics if m != "mean_dice_256"])
    return "\n".join(lines) + "\n"
