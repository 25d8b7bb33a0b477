"""k-fold cross-validation of a bundle's training recipe (``python -m tools crossval``).

Every item of the bundle's own training data is held out exactly once: fold ``k`` of ``K``
(:func:`tools.data.kfold_split`, deterministic from ``seed`` and the file names; whole clips or subjects where the
bundle's split keeps them whole) replaces the bundle's ``make_split``, a model is trained on the other folds with the
bundle's ``train.json`` (or a recipe overlay such as ``configs/train_semi.json``), its best checkpoint on the held-out
fold is evaluated there by the bundle's ``evaluate.json``, and the per-item metrics of all folds are pooled
(out-of-fold: every item once, each predicted by the one model that did not see it).

Output, for ``output_dir`` ``OUT``:

- ``OUT/fold<k>/train/``: the fold's training logs and resume checkpoint; ``OUT/fold<k>/models/model.pt``: its best
  model on the held-out fold; ``OUT/fold<k>/metrics.json`` + ``per_image.csv``: its evaluation on the held-out fold;
  ``OUT/fold<k>/result.json``: the fold's record (below). A fold with a ``result.json`` of the same settings is not
  rerun; a fold interrupted mid-training resumes from its last resume checkpoint.
- ``OUT/per_image.csv``: the pooled out-of-fold table (one row an item; ``python -m tools paired_difference`` takes
  two of them); ``OUT/crossval.json`` and ``OUT/crossval.md``: per-fold and pooled metrics with bootstrap 95%
  intervals over items.

Evaluation only (``from_run``): the fold models of an earlier run are evaluated again with other evaluation
settings (e.g. the spine bundle's connected-component post-processing, ``{"min_component_mm3": 500}``), nothing is
trained; the folds must be the earlier run's (same K, seed and split), and each fold's record keeps that run's training
figures and names the model it evaluated (``evaluated_from``). Several earlier runs (``from_run`` ``"A,B"``: the same
folds, e.g. one recipe trained with two seeds) make each fold's model the mean-probability ensemble of their fold-``k``
models (:class:`tools.ensembles.MeanProbabilityEnsemble`, written as ``OUT/fold<k>/ensemble.pt``): every member left
out the same items, so the ensemble is measured out of fold too, which a K-fold ensemble of one run cannot be (each of
its members trained on the other folds' items).

Selection caveat, said in ``crossval.md`` too: by default (``keep`` ``"best"``) each fold's checkpoint is chosen (and
early-stopped) on the same held-out fold it is scored on, as the bundles' own validation does; the pooled figures are
therefore slightly optimistic for every recipe alike, and comparisons between recipes run this way are fair.
``keep`` ``"last"`` scores each fold with its last epoch's weights instead (nnU-Net's rule; no choice made on the
scored fold): in training ``models/model.pt`` holds them and the best is kept as ``models/model_best.pt``; with
``from_run`` they come from each fold's last resume checkpoint. Not for semi-supervised recipes.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser

from tools.commands.crossval_tables import _markdown, _read_csv, _write_csv, pooled_table
from tools.commands.runs import (CompareError, CrossvalError, _bundle_files, _common_overrides, _evaluate_on_validation,
                                 _parse_overrides, _recipe_configs, _workflow)
from tools.checkpoints import resume_weights
from tools.errors import CheckpointError
from tools.ensembles import ensemble_state_dict
from tools.io import atomic_path, atomic_write_text
from tools.run_control import ProgressLog, attach_early_stopping

__all__ = ["CrossvalError", "fold_group_of", "crossval", "pooled_table", "crossval_command"]

logger = logging.getLogger(__name__)

# make_split targets of the bundles -> what a fold must keep whole
_SPLIT_GROUPS = {
    "tools.data.clip_split": "clip",
    "tools.data.splits.clip_split": "clip",
    "tools.data.spine.split_by_subject": "subject",
}


def fold_group_of(parser: ConfigParser) -> str:
    """What the bundle's own split keeps whole: ``"clip"`` (``tools.data.clip_split``), ``"subject"``
    (``tools.data.spine.split_by_subject``) or ``"item"`` (anything else, e.g. ``tools.data.split_datalist``)."""
    split = parser.get("make_split", {})
    target = split.get("_target_", "") if isinstance(split, dict) else ""
    return _SPLIT_GROUPS.get(target, "item")


def _format_fold(value: Any, fold: int) -> Any:
    """``"{fold}"`` in override strings -> the fold number (e.g. a supervised run's fold model as the teacher)."""
    if isinstance(value, str):
        return value.replace("{fold}", str(fold))
    if isinstance(value, list):
        return [_format_fold(v, fold) for v in value]
    if isinstance(value, dict):
        return {k: _format_fold(v, fold) for k, v in value.items()}
    return value


def _latest_resume(train_dir: Path) -> Path | None:
    found = sorted(train_dir.glob("resume_*.pt"), key=lambda p: p.stat().st_mtime) if train_dir.is_dir() else []
    return found[-1] if found else None


KEEP_CHOICES = ("best", "last")


def _last_weights(source: Path, k: int, target: Path) -> tuple[Path, int]:
    """Fold ``k``'s last resume checkpoint in the earlier run ``source``: its weights written to ``target``."""
    resume = _latest_resume(source / f"fold{k}" / "train")
    if resume is None:
        raise CrossvalError(f"{source}: fold {k} has no resume checkpoint in {source / f'fold{k}' / 'train'}, so its "
                            "last weights are unknown (keep 'last' needs it).")
    return target, resume_weights(resume, target)


def _source_fold(source: Path, k: int, settings: Mapping, keep: str = "best", out: Path | None = None,
                 index: int = 0) -> tuple[dict, Path]:
    """The training record and model of fold ``k`` of the earlier run ``source``, checked to have the same folds;
    with ``keep`` ``"last"`` the model is the last resume checkpoint's weights, written into ``out``."""
    path, model = source / f"fold{k}" / "result.json", source / f"fold{k}" / "models" / "model.pt"
    if not path.is_file() or not model.is_file():
        raise CrossvalError(f"{source}: fold {k} is not done there (no {path.name} or models/model.pt).")
    earlier = json.loads(path.read_text())
    theirs = earlier.get("settings", {})
    for key in ("folds", "seed", "group"):
        if theirs.get(key) != settings[key]:
            raise CrossvalError(f"{path}: made with {key} {theirs.get(key)!r}, this run has {settings[key]!r}; the "
                                "folds would differ.")
    kept = ("fold", "epochs", "best_epoch", "best_val_metric", "seconds", "resumed_from", "rounds")
    record = {key: earlier[key] for key in kept if key in earlier}
    if keep == "last":
        model, record["kept_epoch"] = _last_weights(source, k, (out or source / f"fold{k}") / f"model_last_{index}.pt")
    return {**record, "evaluated_from": str(model), "trained_with": theirs.get("overrides")}, model


def _run_list(from_run: str | Path | Sequence[str | Path] | None) -> list[Path]:
    """``from_run`` as a list of run folders: one path, comma-separated paths, or a sequence of them."""
    if not from_run:
        return []
    if isinstance(from_run, (str, Path)):
        from_run = [p for p in str(from_run).split(",") if p.strip()]
    return [Path(p).expanduser().resolve() for p in from_run]


def _ensemble_fold(sources: Sequence[Path], k: int, settings: Mapping, out: Path, common: Mapping, keep: str = "best"
                   ) -> tuple[dict, Path, dict]:
    """Fold ``k`` of several earlier runs as one ensemble: its record (training figures summed, each member's
    named), the merged checkpoint ``out/ensemble.pt`` and the overrides that make ``network`` the ensemble."""
    parts = [_source_fold(src, k, settings, keep, out, i) for i, src in enumerate(sources)]
    records, models = [r for r, _ in parts], [m for _, m in parts]
    record = {"fold": k, "epochs": sum(r["epochs"] for r in records), "best_epoch": [r["best_epoch"] for r in records],
              "seconds": round(sum(r["seconds"] for r in records), 1), "evaluated_from": [str(m) for m in models],
              "trained_with": [r.get("trained_with") for r in records], "members": records}
    checkpoint = out / "ensemble.pt"
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(checkpoint) as tmp:
        torch.save(ensemble_state_dict(models), tmp)
    return record, checkpoint, {**common, "network#network": f"$tools.ensembles.replicate(@network_def, {len(models)})"}


def _train_fold(k: int, folds: int, configs: list[Path], files: Mapping[str, Path], bundle: Path, out: Path,
                common: Mapping, patience: int | None, keep: str = "best") -> dict:
    override = {**common, "output_dir": str(out / "train"), "ckpt_dir": str(out / "models")}
    resume = _latest_resume(out / "train")
    parser = ConfigParser()
    parser.read_config([str(c) for c in configs])
    semi = "semi" in parser
    if semi and keep == "last":
        raise CrossvalError("keep 'last' is for one training run; a semi-supervised run keeps its best of all rounds.")
    if resume is not None and not semi:
        logger.info("fold %d/%d: resuming from %s", k + 1, folds, resume)
        override["resume_from"] = str(resume)
    if semi and patience is not None and "early_stop_patience" in parser:
        override["early_stop_patience"] = int(patience)
    wf = _workflow(configs, files, bundle, "run", override)
    wf.initialize()
    p = wf.parser
    trainer = p.get_parsed_content("train#trainer")
    evaluator = p.get_parsed_content("validate#evaluator")
    prefix = f"fold {k + 1}/{folds}"
    if semi:
        p.get_parsed_content("semi").progress.prefix = prefix
    else:
        attach_early_stopping(trainer, evaluator, patience)
        ProgressLog(prefix).attach(trainer)
    start = time.perf_counter()
    wf.run()
    seconds = time.perf_counter() - start
    record = {
        "epochs": int(trainer.state.epoch),
        "best_epoch": int(evaluator.state.best_metric_epoch),
        "best_val_metric": {"name": evaluator.state.key_metric_name, "value": float(evaluator.state.best_metric)},
        "seconds": round(seconds, 1),
        "resumed_from": str(resume) if resume is not None and not semi else None,
    }
    if semi:
        record["rounds"] = p.get_parsed_content("semi").history
    last = ({n: t.detach().cpu().clone() for n, t in p.get_parsed_content("network").state_dict().items()}
            if keep == "last" else None)
    wf.finalize()
    best = out / "models" / "model.pt"
    if not best.is_file():
        raise CrossvalError(f"fold {k}: training saved no best checkpoint {best}.")
    if keep == "last":  # the last weights become the fold's model; the best on the fold is kept beside them
        os.replace(best, out / "models" / "model_best.pt")
        with atomic_path(best) as tmp:
            torch.save(last, tmp)
        record["kept_epoch"] = record["epochs"]
    return record


def crossval(
    bundle_dir: str | Path,
    folds: int = 5,
    output_dir: str | Path | None = None,
    max_epochs: int | None = None,
    overrides: Mapping | str | None = None,
    config: str | Sequence[str] | None = None,
    seed: int = 0,
    patience: int | None = None,
    dataset_dir: str | Path | None = None,
    only_folds: Sequence[int] | None = None,
    command: str | None = None,
    from_run: str | Path | None = None,
    keep: str = "best",
) -> dict:
    """Train and evaluate ``folds`` models of the bundle's recipe on disjoint held-out folds; pool their metrics.

    Args:
        bundle_dir: the bundle's folder.
        folds: K (at least 2).
        output_dir: where to write (module docstring); default ``<bundle>/eval/crossval``.
        max_epochs: the most training epochs of a fold (``train#trainer#max_epochs``); default the recipe's own.
        overrides: config id -> value for every fold's training and evaluation (a dict, JSON text or a JSON file);
            ``"{fold}"`` inside a string value becomes the fold number (e.g. ``{"teacher_checkpoint":
            "cv_sup/fold{fold}/models/model.pt"}``). ``make_split``, ``output_dir``, ``ckpt_dir``, ``checkpoint`` and
            ``eval_split`` are set by the command.
        config: recipe overlays merged over ``configs/train.json``, relative to the bundle (e.g.
            ``configs/train_semi.json``).
        seed: seed of the fold assignment.
        patience: early stopping after this many validations without improvement of the key metric; ``None``: none.
        dataset_dir: the bundle's training data folder; default the bundle's own (``SEG_DATA_ROOT``).
        only_folds: train and evaluate only these folds now (the others must be done already, or are left for a
            later call); the pooled files are written when every fold is done.
        command: the command line to write into ``crossval.md`` (default: rebuilt from the arguments).
        from_run: an earlier crossval ``output_dir`` whose fold models are evaluated (no training; module docstring);
            several (a sequence, or comma-separated): each fold's model is the ensemble of their fold models.
        keep: the model a fold is scored with: ``"best"`` (its best checkpoint on the held-out fold, the bundles' own
            rule) or ``"last"`` (its last epoch's weights; no choice made on the scored fold: module docstring).

    Returns:
        the content of ``crossval.json``: ``{"bundle", "recipe", "n_folds", "unit", "command", "settings", "folds":
        [{"fold", "val_items", "best_epoch", "epochs", "seconds", "metrics", ...}], "pooled": {metric, metric_ci95,
        ..., "n_<unit>"}, "seconds"}`` (``pooled`` is ``None`` until every fold is done).

    Raises:
        CrossvalError: for K < 2 or more folds than groups, unknown overlays, bad overrides, a fold that saved no
            checkpoint, or a ``from_run`` whose folds are missing or were made with another K, seed or split, an
            unknown ``keep``, or ``keep`` ``"last"`` with a ``from_run`` fold that has no resume checkpoint.
    """
    if keep not in KEEP_CHOICES:
        raise CrossvalError(f"keep must be one of {KEEP_CHOICES}, got {keep!r}.")
    bundle = Path(bundle_dir).resolve()
    files = _bundle_files(bundle)
    configs = _recipe_configs(bundle, files, config, CrossvalError)
    overlays = [str(c) for c in ([config] if isinstance(config, str) else list(config or []))]
    folds = int(folds)
    if folds < 2:
        raise CrossvalError(f"folds must be at least 2, got {folds}.")
    extra = _parse_overrides(overrides, CrossvalError)
    parser = ConfigParser()
    parser.read_config([str(c) for c in configs])
    group = fold_group_of(parser)
    unit = "volumes" if group == "subject" else "images"
    out_root = Path(output_dir).resolve() if output_dir else bundle / "eval" / "crossval"
    common = _common_overrides({}, dataset_dir, max_epochs, CrossvalError)
    recipe = ", ".join(str(c.relative_to(bundle)) for c in configs)
    settings = {"folds": folds, "seed": int(seed), "group": group, "recipe": recipe, "max_epochs": max_epochs,
                "early_stop_patience": patience, "overrides": extra, "dataset_dir": common.get("dataset_dir"),
                "data_root_env": os.environ.get("SEG_DATA_ROOT")}
    if keep != "best":  # absent for the default, so that runs made before this option still match their settings
        settings["keep"] = keep
    sources = _run_list(from_run)
    if sources:
        settings["from_run"] = str(sources[0]) if len(sources) == 1 else [str(src) for src in sources]
    if command is None:
        command = (f"python -m tools crossval {bundle_dir} --folds {folds} --output_dir {output_dir or out_root}"
                   + "".join(f" --config {c}" for c in overlays) + (f" --max_epochs {max_epochs}" if max_epochs else "")
                   + (f" --patience {patience}" if patience else "") + (f" --seed {seed}" if seed else "")
                   + (f" --overrides '{json.dumps(extra)}'" if extra else "")
                   + (f" --from_run {from_run}" if from_run else "") + (f" --keep {keep}" if keep != "best" else ""))
    wanted = set(range(folds)) if only_folds is None else {int(f) for f in only_folds}
    records: list[dict | None] = []
    for k in range(folds):
        out = out_root / f"fold{k}"
        previous = out / "result.json"
        if previous.is_file():
            record = json.loads(previous.read_text())
            if record.get("settings") == json.loads(json.dumps(settings)):
                logger.info("fold %d/%d: done before (%s)", k + 1, folds, previous)
                records.append(record)
                continue
            raise CrossvalError(f"{previous}: made with other settings; choose another --output_dir or remove it.")
        if k not in wanted:
            records.append(None)
            continue
        fold_common = {**common, **_format_fold(extra, k),
                       "make_split": {"_target_": "tools.data.kfold_split", "_mode_": "callable", "datalist": "@datalist",
                                      "n_folds": folds, "fold": k, "seed": int(seed), "group": group}}
        if not sources:
            logger.info("fold %d/%d: training (%s) into %s", k + 1, folds, recipe, out)
            record = {"fold": k, **_train_fold(k, folds, configs, files, bundle, out, fold_common, patience, keep)}
            record["metrics"] = _evaluate_on_validation(configs, files, bundle, out, fold_common)
        elif len(sources) > 1:
            record, model, ensemble_common = _ensemble_fold(sources, k, settings, out, fold_common, keep)
            logger.info("fold %d/%d: evaluating the ensemble of %s (no training)", k + 1, folds,
                        ", ".join(record["evaluated_from"]))
            record["metrics"] = _evaluate_on_validation(configs, files, bundle, out, ensemble_common, checkpoint=model)
        else:
            record, model = _source_fold(sources[0], k, settings, keep, out)
            logger.info("fold %d/%d: evaluating %s (no training)", k + 1, folds, model)
            record["metrics"] = _evaluate_on_validation(configs, files, bundle, out, fold_common, checkpoint=model)
        rows = _read_csv(out / f"per_{unit[:-1]}.csv")
        split_parser = ConfigParser()
        split_parser.read_config([str(c) for c in configs])
        split_parser.update({"bundle_root": str(bundle), **fold_common})
        record["val_items"] = [str(d["image"]) for d in split_parser.get_parsed_content("split")[1]]
        if len(rows) != len(record["val_items"]):
            raise CrossvalError(f"fold {k}: evaluated {len(rows)} {unit}, held out {len(record['val_items'])}.")
        record["settings"] = settings
        atomic_write_text(previous, json.dumps(record, indent=2) + "\n")
        records.append(record)

    done = [r for r in records if r is not None]
    result: dict[str, Any] = {"bundle": bundle.name, "recipe": recipe, "n_folds": folds, "unit": unit,
                              "command": command, "settings": settings, "folds": done, "pooled": None,
                              "seconds": round(sum(r["seconds"] for r in done), 1)}
    if len(done) < folds:
        logger.info("%d of %d folds done; rerun without --only_folds to finish and pool", len(done), folds)
        return result
    pooled_rows = []
    seen: set[str] = set()
    for r in done:
        for row in _read_csv(out_root / f"fold{r['fold']}" / f"per_{unit[:-1]}.csv"):
            key = row.get("image") or row.get("volume") or next(iter(row.values()))
            if key in seen:
                raise CrossvalError(f"{key}: held out in two folds (the folds overlap).")
            seen.add(key)
            pooled_rows.append({**row, "fold": str(r["fold"])})
    result["pooled"] = pooled_table(pooled_rows, unit, group)
    _write_csv(out_root / f"per_{unit[:-1]}.csv", pooled_rows)
    atomic_write_text(out_root / "crossval.json", json.dumps(result, indent=2) + "\n")
    metrics = [m for m in ("dice", "mean_dice_256", "iou", "precision", "sensitivity", "specificity", "hd95")
               if m in result["pooled"]]
    atomic_write_text(out_root / "crossval.md", _markdown(result, metrics, pooled_rows))
    return result


def crossval_command(bundle_dir: str, folds: int = 5, output_dir: str | None = None, max_epochs: int | None = None,
                     overrides: str | None = None, config: str | None = None, seed: int = 0,
                     patience: int | None = None, dataset_dir: str | None = None, only_folds: str | None = None,
                     from_run: str | None = None, keep: str = "best") -> str:
    """k-fold cross-validation of the bundle's recipe: train K models on disjoint held-out folds, evaluate each
    there, pool the out-of-fold metrics with bootstrap 95% intervals; print the markdown table.

    Writes OUTPUT_DIR/crossval.json, crossval.md, per_image.csv (pooled; per_volume.csv for volume bundles) and
    OUTPUT_DIR/fold<k>/ (training logs, models/model.pt, metrics). Folds are deterministic from --seed and the file
    names; the bundle's split decides what a fold keeps whole (COVID-19 slices: items; CVC-ClinicDB: clips; spine:
    subjects). Rerunning resumes: finished folds are kept, an interrupted fold continues from its last checkpoint
    (semi-supervised recipes: from the last finished round). Nothing is written into the bundle's models/ (use
    `python -m tools promote OUTPUT_DIR BUNDLE_DIR`).

    Args:
        bundle_dir: the bundle folder (e.g. bundles/covid19_lesion_ct_rcbunetpp_segmentation).
        folds: number of folds K (at least 2).
        output_dir: where to write; default BUNDLE/eval/crossval.
        max_epochs: the most training epochs of each fold; default the recipe's own.
        overrides: JSON object (or a JSON file) of config id -> value for every fold; "{fold}" in a string becomes
            the fold number, e.g. '{"teacher_checkpoint": "cv_sup/fold{fold}/models/model.pt"}'.
        config: a recipe overlay merged over configs/train.json, relative to the bundle, e.g. configs/train_semi.json.
        seed: seed of the fold assignment.
        patience: early stopping after this many validations without improvement; default none.
        dataset_dir: the training data folder; default the bundle's own (SEG_DATA_ROOT).
        only_folds: comma-separated folds to run now (e.g. "0,1"), to share the folds between processes; the pooled
            files are written by the call that finds every fold done.
        from_run: an earlier crossval OUTPUT_DIR: evaluate its fold models again (no training) with --overrides,
            e.g. '{"min_component_mm3": 500}' for the spine bundle's post-processing; same --folds and --seed.
            Several, comma-separated (e.g. two seeds of one recipe): each fold is scored by the mean-probability
            ensemble of their fold models, out of fold.
        keep: best (default: each fold's best checkpoint on its held-out fold, which that fold is then scored on:
            slightly optimistic) or last (the last epoch's weights: no choice made on the scored fold; with
            --from_run, each fold's last resume checkpoint). Training with last keeps the best as models/model_best.pt.
    """
    import shlex
    import sys

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    chosen = None if only_folds is None else [int(f) for f in str(only_folds).strip("()[] ").split(",") if f.strip()]
    try:
        result = crossval(bundle_dir, folds, output_dir, max_epochs, overrides, config, seed, patience, dataset_dir,
                          chosen, command="python -m tools crossval " + shlex.join(sys.argv[2:]) if len(sys.argv) > 2
                          and sys.argv[1] == "crossval" else None, from_run=from_run, keep=keep)
    except (CompareError, CheckpointError) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        sys.exit(1)
    out = Path(output_dir).resolve() if output_dir else Path(bundle_dir).resolve() / "eval" / "crossval"
    if result["pooled"] is None:
        return f"{len(result['folds'])} of {folds} folds done in {out}"
    return (out / "crossval.md").read_text()
