"""How the commands that train (``compare``, ``benchmark_variants``, ``crossval``) run a bundle's own workflows: the
bundle's config files, ``--overrides`` parsing, the :class:`monai.bundle.ConfigWorkflow` of a run, the refusal of a
schedule that would save no checkpoint, and the settings hash a reused result is checked against."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from monai.bundle import ConfigParser, ConfigWorkflow

__all__ = ["CompareError", "CrossvalError"]


class CompareError(RuntimeError):
    """The comparison cannot run or produced no checkpoint; the message names the bundle, variant or file."""


class CrossvalError(CompareError):
    """Cross-validation cannot run (bad arguments, a config without the ids it needs); the message says which."""


def _bundle_files(bundle: Path) -> dict[str, Path]:
    files = {
        "train": bundle / "configs" / "train.json",
        "evaluate": bundle / "configs" / "evaluate.json",
        "metadata": bundle / "configs" / "metadata.json",
        "logging": bundle / "configs" / "logging.conf",
    }
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise CompareError(f"{bundle}: not a bundle with train.json, evaluate.json, metadata.json and logging.conf "
                           f"in configs/ (missing: {', '.join(missing)}).")
    return files


def _parse_overrides(overrides: Mapping | str | None, error: type[Exception] = CompareError) -> dict:
    """``--overrides`` as a dict: a dict, inline JSON text or a JSON file's path; anything else raises ``error``.

    A dict is what fire makes of ``--overrides '{"keep_teacher": false}'``: it parses the text as Python, so JSON's
    ``true`` / ``false`` / ``null`` arrive as the strings "true" / "false" / "null" (and ``bool("false")`` is True);
    they are turned back into JSON's values (:func:`_json_words`) for every command alike."""
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        return _json_words(dict(overrides))
    if isinstance(overrides, str):
        text = Path(overrides).read_text() if Path(overrides).is_file() else overrides
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise error(f"overrides {overrides!r}: neither a JSON object nor a JSON file ({e}).") from e
        if isinstance(value, dict):
            return value
    raise error(f"overrides must be a dict of config id -> value (or its JSON), got {overrides!r}.")


def _sha256(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _workflow(config_files: Sequence[Path], files: Mapping[str, Path], bundle: Path, run_id: str,
              override: Mapping) -> ConfigWorkflow:
    return ConfigWorkflow(
        config_file=[str(f) for f in config_files], meta_file=str(files["metadata"]),
        logging_file=str(files["logging"]), run_id=run_id, workflow_type=None, bundle_root=str(bundle), **override,
    )


def _recipe_configs(bundle: Path, files: Mapping[str, Path], config: str | Sequence[str] | None,
                    error: type[Exception] = CompareError) -> list[Path]:
    """``train.json`` followed by the recipe overlays ``config`` (one path, comma-separated paths or a sequence;
    relative to the bundle unless absolute); a missing overlay raises ``error`` naming it."""
    if isinstance(config, str):
        config = [c for c in config.split(",") if c.strip()]
    configs = [files["train"]] + [(bundle / c) if not Path(c).is_absolute() else Path(c) for c in (config or [])]
    for c in configs:
        if not c.is_file():
            raise error(f"{c}: no such recipe config.")
    return configs


def _common_overrides(extra: Mapping, dataset_dir: str | Path | None, max_epochs: int | None,
                      error: type[Exception] = CompareError) -> dict:
    """The overrides every run of a command gets: ``extra``, then ``--dataset_dir`` (absolute) and ``--max_epochs``
    (as ``train#trainer#max_epochs``); a ``max_epochs`` below 1 raises ``error``."""
    common = dict(extra)
    if dataset_dir is not None:
        common["dataset_dir"] = str(Path(dataset_dir).expanduser().resolve())
    if max_epochs is not None:
        if int(max_epochs) < 1:
            raise error(f"max_epochs must be at least 1, got {max_epochs}.")
        common["train#trainer#max_epochs"] = int(max_epochs)
    return common


def _check_schedule(name: str, configs: list[Path], bundle: Path, common: Mapping) -> None:
    """Refuse, before any training, a schedule whose validation never runs (so that no checkpoint is saved)."""
    parser = ConfigParser()
    parser.read_config([str(c) for c in configs])
    parser.update({"bundle_root": str(bundle), **common})
    max_epochs = int(parser.get_parsed_content("train#trainer#max_epochs"))
    val_interval = int(parser.get_parsed_content("val_interval")) if "val_interval" in parser else None
    if val_interval is not None and max_epochs < val_interval:
        raise CompareError(
            f"{name}: max_epochs {max_epochs} < val_interval {val_interval}: validation would never run and no best "
            f"checkpoint would be saved; raise --max_epochs or pass --overrides '{{\"val_interval\": {max_epochs}}}'."
        )


def _json_words(value):
    """``"true"``/``"false"``/``"null"`` (JSON words that fire leaves as strings) -> True/False/None, recursively."""
    if isinstance(value, dict):
        return {k: _json_words(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_words(v) for v in value]
    return {"true": True, "false": False, "null": None}.get(value, value) if isinstance(value, str) else value


def _evaluate_on_validation(configs: list[Path], files: Mapping[str, Path], bundle: Path, out: Path,
                            common: Mapping, checkpoint: Path | None = None) -> dict:
    """Run the bundle's ``evaluate.json`` on ``checkpoint`` (default ``out/models/model.pt``) over the validation
    split (a crossval fold: its held-out fold); return the ``metrics.json`` it writes to ``out``."""
    override = {**common, "output_dir": str(out), "checkpoint": str(checkpoint or out / "models" / "model.pt"),
                "eval_split": "validation"}
    wf = _workflow([*configs, files["evaluate"]], files, bundle, "evaluating", override)
    wf.initialize()
    wf.run()
    wf.finalize()
    return json.loads((out / "metrics.json").read_text())
