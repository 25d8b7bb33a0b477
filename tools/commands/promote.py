"""``python -m tools promote`` and ``python -m tools compact``: the explicit steps that write a bundle's ``models/``.

Training never writes into a bundle's ``models/`` (a run writes ``OUTPUT_DIR/models/model.pt``); these commands do,
after loading the weights strictly into the bundle's network: :func:`tools.checkpoints.promote` for one training run,
:func:`promote_crossval` for a cross-validation run (``python -m tools crossval``), :func:`tools.weights.compact_weights`
for the compact (weights only, half precision) form the repository ships.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from tools.commands.crossval import CrossvalError
from tools.io import atomic_write_text

__all__ = ["PROMOTE_CHOICES", "promote_crossval", "promote_command", "compact_command"]

PROMOTE_CHOICES = ("auto", "single", "ensemble")


def promote_crossval(cv_dir: str | Path, bundle_dir: str | Path, choice: str = "auto", metric: str = "dice",
                     dtype: str = "float16") -> dict:
    """Ship a cross-validation run's models as the bundle's weights, and write what was chosen into its docs.

    - ``"ensemble"``: every fold's model to ``models/fold<k>/model.pt`` (``configs/inference_ensemble.json`` averages
      their probabilities), and fold folders of an earlier ensemble of more folds removed; ``models/model.pt`` (the single network that ``inference.json``, MONAI Label and the
      exports use) is left as it is: a fold model was trained on (K - 1) / K of the data and picked on one small
      fold, which is no reason to replace a model trained on more.
    - ``"single"``: the fold model with the best held-out ``metric`` to ``models/model.pt``; fold models of an earlier
      promotion are removed.
    - ``"auto"``: the ensemble. A fold ensemble cannot be scored out of fold (each item was in the training set of
      K - 1 of its members), so the pooled CV cannot rank it against one of its members directly; the mean of the
      members' probabilities is the better-founded choice (nnU-Net ships its five folds the same way), and the
      measured out-of-fold gains of probability averaging are reported beside the CV table where we have them.

    A fold's model is the one it was scored with: ``fold<k>/models/model.pt`` of a training run, or the file an
    evaluation-only run (``crossval --from_run``, e.g. with ``--keep last``) names as ``evaluated_from``.
    Each file is loaded strictly into the network of ``configs/inference.json`` first (:func:`tools.checkpoints.promote`)
    and written whole or not at all. ``docs/crossval.md`` gets the run's ``crossval.md`` and the choice.

    Raises:
        CrossvalError: if ``cv_dir`` holds no finished run (``crossval.json`` with pooled metrics), ``choice`` is
            unknown, ``metric`` is not in the folds' metrics, or a fold was scored with an ensemble of several runs'
            models (promote one of those runs instead).
    """
    from tools.checkpoints import promote

    cv, bundle = Path(cv_dir).resolve(), Path(bundle_dir).resolve()
    if choice not in PROMOTE_CHOICES:
        raise CrossvalError(f"choice must be one of {PROMOTE_CHOICES}, got {choice!r}.")
    summary_file = cv / "crossval.json"
    if not summary_file.is_file():
        raise CrossvalError(f"{summary_file}: not a finished cross-validation run (run `python -m tools crossval`).")
    result = json.loads(summary_file.read_text())
    if not result.get("pooled"):
        raise CrossvalError(f"{summary_file}: not every fold is done; nothing was written.")
    folds = result["folds"]
    if any(metric not in f["metrics"] for f in folds):
        raise CrossvalError(f"{summary_file}: no metric {metric!r} in the folds' metrics.")
    def model_of(f: dict) -> Path:
        scored = f.get("evaluated_from")
        if isinstance(scored, list):
            raise CrossvalError(f"{summary_file}: fold {f['fold']} was scored with an ensemble of {len(scored)} runs' "
                                "models; promote one of those runs.")
        return Path(scored) if scored else cv / f"fold{f['fold']}"

    best = max(folds, key=lambda f: (f["metrics"][metric] if f["metrics"][metric] is not None else -1.0))
    chosen = "ensemble" if choice == "auto" else choice
    written = []
    if chosen == "ensemble":
        for f in folds:
            written.append(promote(model_of(f), bundle, dtype, destination=f"models/fold{f['fold']}/model.pt"))
        kept = {f"fold{f['fold']}" for f in folds}
        for stale in (bundle / "models").glob("fold*"):  # an earlier ensemble of more folds: not a member of this one
            if stale.is_dir() and stale.name not in kept:
                shutil.rmtree(stale)
    else:
        written.append(promote(model_of(best), bundle, dtype))
        for stale in (bundle / "models").glob("fold*"):
            if stale.is_dir():
                shutil.rmtree(stale)
    pooled = result["pooled"]
    ci = pooled.get(f"{metric}_ci95")
    note = (
        f"\n## Shipped\n\n`python -m tools promote {cv_dir} {bundle_dir} --choice {choice} --metric {metric}` "
        + (f"shipped the fold ensemble ({len(folds)} models under models/fold<k>/model.pt, for "
           "configs/inference_ensemble.json); models/model.pt was left as it was. " if chosen == "ensemble" else
           f"shipped fold {best['fold']}'s model as models/model.pt (best held-out {metric} "
           f"{best['metrics'][metric]:.4f}). ")
        + f"Pooled out-of-fold {metric} of the recipe: {pooled[metric]:.4f}"
        + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "") + ".\n"
    )
    atomic_write_text(bundle / "docs" / "crossval.md", (cv / "crossval.md").read_text() + note)
    return {"choice": chosen, "single_fold": best["fold"] if chosen == "single" else None,
            "written": [w["destination"] for w in written], "docs": str(bundle / "docs" / "crossval.md")}



# ---------------------------------------------------------------- the command line (python -m tools promote)


def promote_command(run_dir: str, bundle_dir: str, dtype: str = "float16", choice: str = "auto", metric: str = "dice") -> str:
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
            configs/inference_ensemble.json; models/model.pt left as it is), single (the best fold to
            models/model.pt), or auto (the ensemble: it cannot be scored out of fold, see promote_crossval). The
            choice and the CV table are written to BUNDLE/docs/crossval.md.
        metric: for a cross-validation run: the held-out metric that names the best fold (e.g. dice, mean_dice_256).
    """
    from pathlib import Path

    from tools.checkpoints import promote as promote_run
    from tools.errors import CheckpointError

    try:
        if (Path(run_dir) / "crossval.json").is_file():
            return json.dumps(promote_crossval(run_dir, bundle_dir, choice=choice, metric=metric, dtype=dtype))
        return json.dumps(promote_run(run_dir, bundle_dir, dtype=dtype), default=str)
    except (CheckpointError, CrossvalError, OSError, ValueError) as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)


def compact_command(src: str, dst: str, dtype: str = "float16") -> str:
    """Ship weights compactly: write SRC's network weights alone to DST, in half precision; print a JSON summary.

    Args:
        src: a state-dict file, or a training checkpoint holding it under "model" (e.g. a resume checkpoint).
        dst: the file to write (whole or not at all), e.g. BUNDLE/models/model.pt.
        dtype: float16, bfloat16 or float32.
    """
    from tools.weights import compact_weights

    return json.dumps(compact_weights(src, dst, dtype))
