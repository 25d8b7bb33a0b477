"""The requirements a packed bundle lists in ``metadata.json``: every third-party distribution its copied code and
configs import, at the installed versions (:func:`required_packages`). See :mod:`tools.commands.pack`."""

from __future__ import annotations

import importlib.metadata
import json
import re
import sys
from pathlib import Path
from typing import Any

from tools.commands.pack.closure import (_CONFIG_IMPORT, PROJECT_PACKAGES, SCRIPTS, PackError, _config_files,
                                         _rewrite_config)

# run-time needs that no import names: python -m monai.bundle (the zoo's and the docs' way to run a bundle) uses fire
RUNTIME_PACKAGES = ("fire",)
# metadata.json has fields of their own for these
OWN_FIELDS = {"torch": "pytorch_version", "monai": "monai_version", "numpy": "numpy_version"}
EXCLUDED_DISTRIBUTIONS = {"seg-bundles"}


def _config_third_party(bundle: Path) -> set[str]:
    """Top-level modules the configs import (``$import ignite``) or instantiate (``"_target_": "ignite.x.Y"``), and
    ``tqdm`` where a config turns a progress bar on (``"progress": true``: MONAI imports it optionally)."""
    names: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if value.get("progress") is True:  # MONAI's inferers import tqdm only when their progress bar is on
                names.add("tqdm")
            target = value.get("_target_")
            if isinstance(target, str) and "." in target and not target.startswith(("$", "@", "%")):
                names.add(target.split(".")[0])
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str):
            m = _CONFIG_IMPORT.match(value.strip())
            if m:
                names.add(m.group(1))

    for path in _config_files(bundle):
        walk(json.loads(path.read_text()))
    return {n for n in names if n not in PROJECT_PACKAGES}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _distribution(import_name: str) -> str:
    """The installed distribution providing top-level module ``import_name``."""
    candidates = importlib.metadata.packages_distributions().get(import_name, [])
    if not candidates:
        raise PackError(f"the bundle's code imports {import_name!r}, which no installed distribution provides")
    for dist in candidates:  # itk: the meta-distribution "itk" rather than itk-core, itk-io, ...
        if _canonical(dist) == _canonical(import_name):
            return dist
    try:
        importlib.metadata.version(import_name)
        return import_name
    except importlib.metadata.PackageNotFoundError:
        pass
    if len(set(candidates)) > 1:
        raise PackError(f"{import_name!r} is provided by several distributions ({', '.join(sorted(set(candidates)))})")
    return candidates[0]


def required_packages(import_names: set[str], listed: dict[str, str] | None = None) -> dict[str, str]:
    """``{distribution: installed version}`` for the third-party top-level modules ``import_names`` (the stdlib and
    the project's packages left out, torch / MONAI / NumPy too: metadata.json has fields for them), the packages
    already ``listed`` (but ``seg-bundles``) and :data:`RUNTIME_PACKAGES`; a listed package that is not installed
    keeps its listed version. Listed names keep their spelling; the order is the listed one, then new ones sorted."""
    listed = dict(listed or {})
    wanted: dict[str, str] = {}
    for name in sorted(import_names):
        if name in sys.stdlib_module_names or name in PROJECT_PACKAGES or name == SCRIPTS or name in OWN_FIELDS:
            continue
        dist = _distribution(name)
        wanted.setdefault(_canonical(dist), dist)
    for dist in RUNTIME_PACKAGES:
        wanted.setdefault(_canonical(dist), dist)
    out: dict[str, str] = {}
    for dist, version in listed.items():
        key = _canonical(dist)
        if key in EXCLUDED_DISTRIBUTIONS or key in OWN_FIELDS:
            continue
        wanted.pop(key, None)
        out[dist] = _installed_version(dist) or version
    for key in sorted(wanted):
        if key in EXCLUDED_DISTRIBUTIONS or key in OWN_FIELDS:
            continue
        version = _installed_version(wanted[key])
        if version is None:
            raise PackError(f"{wanted[key]} is needed but not installed, so its version is unknown")
        out[wanted[key]] = version
    return out


def _installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _packed_metadata(meta: dict, import_names: set[str]) -> dict:
    meta = dict(meta)
    meta["required_packages_version"] = required_packages(import_names, meta.get("required_packages_version"))
    if "optional_packages_version" in meta:
        required = {_canonical(d) for d in meta["required_packages_version"]}
        meta["optional_packages_version"] = {
            d: _installed_version(d) or v for d, v in meta["optional_packages_version"].items()
            if _canonical(d) not in required | EXCLUDED_DISTRIBUTIONS | set(OWN_FIELDS)
        }
    return _rewrite_config(meta)
