"""A bundle packed for the MONAI model zoo (``python -m tools pack BUNDLE --output_dir DIR``): ``DIR/<bundle name>/``,
self-contained, in the zoo's layout.

A bundle of this repository imports the project's packages (``tools``, ``custom_networks``), which the zoo's CI cannot
install. The packed copy carries the code its configs use in its own ``scripts/`` package, as the zoo's bundles do:

- the modules its configs name (``_target_`` paths, ``$import`` and ``$`` expressions of every ``configs/**/*.json``),
  and, followed with :mod:`ast`, every project module those import, are copied to ``scripts/tools/...`` and
  ``scripts/custom_networks/...``, keeping the package structure; a package's ``__init__.py`` is cut down to the
  imports of what is used from it (``custom_networks/nets/__init__.py`` of a COVID-19 bundle keeps its own network
  only). Non-Python files a copied module names (a folder or file beside it, e.g. ``schemas``) come along;
- every dotted reference to ``tools.`` / ``custom_networks.`` in the copied code and in the configs becomes
  ``scripts.tools.`` / ``scripts.custom_networks.``; a config's ``"$import tools"`` becomes ``"$import scripts"``
  (``scripts/__init__.py`` imports its subpackages, as MONAI binds ``$import a.b`` under the name ``"a.b"``);
- ``configs/metadata.json``'s ``required_packages_version`` lists every third-party distribution the copied code and
  the configs import, the packages it already listed (those MONAI needs for the bundle's readers and handlers:
  nibabel, itk, tensorboard, ...) and ``fire`` (``python -m monai.bundle`` needs it), at their installed versions;
  ``seg-bundles`` is gone; torch, MONAI and NumPy stay in their own fields;
- the configs, ``models/*.pt`` (not ``resume_*``), ``docs/``, ``sample_data/`` and ``LICENSE`` are copied (nothing from
  ``eval/`` or other run outputs); every JSON file is written as the zoo's pre-commit hook ``pretty-format-json
  --autofix --no-sort-keys --indent=4`` writes it (:func:`pretty_json`).

The packed folder is built beside the destination and renamed into place: it appears whole or not at all. The result
runs with ``python -m monai.bundle run --config_file configs/inference.json`` from its own folder (or with
``--bundle_root``) without this project installed.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any


from tools.commands.pack.closure import (PROJECT_PACKAGES, SCRIPTS, Closure, PackError, _bound_name, _rewrite_config,
                                         code_closure, project_references, rewrite_references)
from tools.commands.pack.requirements import _config_third_party, _packed_metadata, required_packages

__all__ = ["PackError", "PROJECT_PACKAGES", "SCRIPTS", "pack_bundle", "code_closure", "rewrite_references",
           "pretty_json", "required_packages", "project_references"]

TEXT_SUFFIXES = (".py", ".md", ".txt", ".conf", ".cfg", ".yaml", ".yml", ".csv")


def pretty_json(obj: Any) -> str:
    """``obj`` as the model zoo's pre-commit hook ``pretty-format-json --autofix --no-sort-keys --indent=4`` writes it
    (pre-commit-hooks' ``_get_pretty_format``: ``json.dumps`` with a 4-space indent, ASCII escapes, keys in their
    order) and a final newline."""
    return json.dumps(obj, indent="    ", ensure_ascii=True) + "\n"



# ---------------------------------------------------------------------------------------------------------- pack

_SCRIPTS_INIT = '''"""The code of this bundle: the modules of seg-bundles that its configs use, with what they import,
copied by ``python -m tools pack`` (references rewritten to ``scripts.``). The subpackages ({packages}) are imported
here: MONAI binds a config's ``$import scripts`` to this package, and its expressions reach them as attributes."""

{imports}
'''

_DOCS_NOTE = """
## This packed copy

This folder was written by seg-bundles' `python -m tools pack`: the code its configs use is in `scripts/`
(`scripts/tools/`, `scripts/custom_networks/`: the repository's `tools/` and `custom_networks/` modules that the
configs need, references rewritten to `scripts.`), and `configs/metadata.json` lists every package it needs. Paths
such as `tools/...` and commands such as `python -m tools ...` above are those of the seg-bundles repository.
"""


def _copy_tree_files(src: Path, dst: Path, pattern: str = "*", exclude: tuple[str, ...] = ()) -> list[Path]:
    copied = []
    for path in sorted(src.rglob(pattern)):
        rel = path.relative_to(src)
        if not path.is_file() or "__pycache__" in rel.parts or any(rel.match(x) for x in exclude):
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dst / rel)
        copied.append(dst / rel)
    return copied


def _check_names(module: str, tree: ast.Module) -> None:
    """A module whose code uses ``tools``/``custom_networks`` as a name without importing it (a local variable) cannot
    have its references rewritten safely."""
    imported = {_bound_name(a, True) for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in PROJECT_PACKAGES and node.id not in imported:
            raise PackError(f"{module} (line {node.lineno}): uses a name {node.id!r} that is not the package; "
                            "its references cannot be rewritten")


def _write_scripts(closure: Closure, scripts: Path) -> list[str]:
    """Write the closure's modules under ``scripts``; return the copied modules' names."""
    for module in sorted(closure.modules):
        text = closure.source(module)
        _check_names(module, ast.parse(text))
        text = rewrite_references(text, python=True)
        tree = ast.parse(text)  # still Python, and nothing left importing the project's packages
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(n.split(".")[0] in PROJECT_PACKAGES for n in names):
                raise PackError(f"{module} (line {node.lineno}): still imports {names}")
        target = scripts / closure.relative_path(module)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    for rel in sorted(closure.data_files):
        src = closure.root / rel
        if src.is_dir():
            _copy_tree_files(src, scripts / rel)
        else:
            shutil.copy2(src, scripts / rel)
    top = sorted(m for m in closure.modules if "." not in m)
    (scripts / "__init__.py").write_text(_SCRIPTS_INIT.format(
        packages=", ".join(f"``{t}``" for t in top), imports=f"from . import {', '.join(top)}" if top else ""))
    return sorted(closure.modules)


def _build(bundle: Path, out: Path) -> dict:
    """Write the packed copy of ``bundle`` into the (new, empty) folder ``out``; return the summary."""
    closure = code_closure(bundle)
    modules = _write_scripts(closure, out / SCRIPTS)

    configs = bundle / "configs"
    for path in sorted(configs.rglob("*")):
        rel = path.relative_to(configs)
        if not path.is_file() or "__pycache__" in rel.parts:
            continue
        target = out / "configs" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix != ".json":
            shutil.copy2(path, target)
            continue
        config = json.loads(path.read_text())
        if path == configs / "metadata.json":
            config = _packed_metadata(config, closure.third_party | _config_third_party(bundle))
        else:
            config = _rewrite_config(config)
        target.write_text(pretty_json(config))

    weights = [p for p in sorted((bundle / "models").glob("*.pt")) if not p.name.startswith("resume_")]
    if not weights:
        raise PackError(f"{bundle}/models: no weights (*.pt)")
    (out / "models").mkdir()
    for path in weights:
        shutil.copy2(path, out / "models" / path.name)
    _copy_tree_files(bundle / "docs", out / "docs")
    if (out / "docs" / "README.md").is_file():
        readme = out / "docs" / "README.md"
        readme.write_text(readme.read_text().rstrip("\n") + "\n" + _DOCS_NOTE)
    if (bundle / "sample_data").is_dir():
        _copy_tree_files(bundle / "sample_data", out / "sample_data")
    shutil.copy2(bundle / "LICENSE", out / "LICENSE")

    for path in sorted(out.rglob("*")):  # every JSON file as the zoo's pre-commit wants it; text files end with one \n
        if path.suffix == ".json":
            text, fixed = path.read_text(), pretty_json(json.loads(path.read_text()))
        elif path.is_file() and (path.suffix in TEXT_SUFFIXES or path.name.startswith("LICENSE")):
            text = path.read_text()
            fixed = text.rstrip("\n") + "\n" if text.strip("\n") else ""  # as end-of-file-fixer does
        else:
            continue
        if text != fixed:
            path.write_text(fixed)
    meta = json.loads((out / "configs" / "metadata.json").read_text())
    return {
        "bundle": str(out),
        "modules": modules,
        "required_packages_version": meta["required_packages_version"],
        "files": sum(1 for p in out.rglob("*") if p.is_file()),
    }


def pack_bundle(bundle_dir: str | Path, output_dir: str | Path, overwrite: bool = False) -> dict:
    """Write ``output_dir/<bundle folder name>/``, the self-contained copy of a bundle in the model zoo's layout
    (module docstring); return a summary (its path, the modules copied, the required packages, the file count).

    The copy is built in a hidden folder beside the destination and renamed into place, so the destination holds a
    whole packed bundle or is left as it was.

    Raises:
        PackError: the bundle lacks a required file (configs/metadata.json, LICENSE, models/*.pt), the destination
            exists and ``overwrite`` is false, or its code cannot be followed.
    """
    bundle = Path(bundle_dir).resolve()
    for rel in ("configs/metadata.json", "configs/inference.json", "LICENSE"):
        if not (bundle / rel).is_file():
            raise PackError(f"{bundle}: no {rel}; is it a bundle folder?")
    output_dir = Path(output_dir).resolve()
    dest = output_dir / bundle.name
    if dest == bundle or bundle in dest.parents:
        raise PackError(f"{dest}: the packed bundle cannot be written into the bundle itself")
    if dest.exists() and not overwrite:
        raise PackError(f"{dest} exists; it is not replaced without --overwrite true.")
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = output_dir / f".partial-{os.getpid()}-{bundle.name}"
    old = output_dir / f".replaced-{os.getpid()}-{bundle.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        summary = _build(bundle, tmp)
        if dest.exists():
            os.rename(dest, old)
        try:
            os.rename(tmp, dest)
        except BaseException:
            if old.exists() and not dest.exists():
                os.rename(old, dest)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    summary["bundle"] = str(dest)
    return summary


# ---------------------------------------------------------------- the command line (python -m tools pack)


def pack_command(bundle_dir: str, output_dir: str, overwrite: bool | str = False) -> str:
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
