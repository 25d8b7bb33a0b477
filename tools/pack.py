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
import importlib.metadata
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.errors import BundleError

__all__ = ["PackError", "PROJECT_PACKAGES", "SCRIPTS", "pack_bundle", "code_closure", "rewrite_references",
           "pretty_json", "required_packages", "project_references"]

PROJECT_PACKAGES = ("tools", "custom_networks")
SCRIPTS = "scripts"
SOURCE_ROOT = Path(__file__).resolve().parents[1]  # the folder holding tools/ and custom_networks/
# run-time needs that no import names: python -m monai.bundle (the zoo's and the docs' way to run a bundle) uses fire
RUNTIME_PACKAGES = ("fire",)
# metadata.json has fields of their own for these
OWN_FIELDS = {"torch": "pytorch_version", "monai": "monai_version", "numpy": "numpy_version"}
EXCLUDED_DISTRIBUTIONS = {"seg-bundles"}
TEXT_SUFFIXES = (".py", ".md", ".txt", ".conf", ".cfg", ".yaml", ".yml", ".csv")

_DOTTED = re.compile(r"(?<![\w.])(" + "|".join(PROJECT_PACKAGES) + r")((?:\.[A-Za-z_]\w*)+)")
_BARE_IMPORT = re.compile(r"^\$\s*import\s+(" + "|".join(PROJECT_PACKAGES) + r")\s*$")
_FROM_PACKAGE = re.compile(r"(?<![\w.])from(\s+)(" + "|".join(PROJECT_PACKAGES) + r")(?=\s+import\b)")
_IMPORT_PACKAGE = re.compile(r"(?m)(^[ \t]*|;[ \t]*)import(\s+)(" + "|".join(PROJECT_PACKAGES) + r")(?![\w.])")
_CONFIG_IMPORT = re.compile(r"^\$\s*(?:import|from)\s+([A-Za-z_]\w*)")


class PackError(BundleError, ValueError):
    """A bundle that cannot be packed (a missing file, an existing output folder, code the packer cannot follow)."""


def pretty_json(obj: Any) -> str:
    """``obj`` as the model zoo's pre-commit hook ``pretty-format-json --autofix --no-sort-keys --indent=4`` writes it
    (pre-commit-hooks' ``_get_pretty_format``: ``json.dumps`` with a 4-space indent, ASCII escapes, keys in their
    order) and a final newline."""
    return json.dumps(obj, indent="    ", ensure_ascii=True) + "\n"


# ---------------------------------------------------------------------------------------------------- references


def _config_strings(value: Any) -> list[str]:
    """Every string of a parsed JSON config: values and keys."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *_config_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in _config_strings(v)]
    return []


def _config_files(bundle: Path) -> list[Path]:
    """The bundle's configs that workflows read: ``configs/**/*.json`` but ``metadata.json``."""
    return [p for p in sorted((bundle / "configs").rglob("*.json")) if p.name != "metadata.json"]


def project_references(text: str) -> list[str]:
    """The dotted names of the project's packages in ``text`` (``tools.data.split_datalist``, ``custom_networks.nets``),
    and the bare package of a ``$import tools``."""
    refs = [m.group(1) + m.group(2) for m in _DOTTED.finditer(text)]
    bare = _BARE_IMPORT.match(text.strip())
    return refs + ([bare.group(1)] if bare else [])


def rewrite_references(text: str, python: bool = False) -> str:
    """``text`` with the project's packages moved under ``scripts``: ``tools.x`` -> ``scripts.tools.x`` (likewise
    ``custom_networks``); in a config string ``$import tools`` -> ``$import scripts``; in Python code
    ``from tools import x`` -> ``from scripts.tools import x`` and ``import tools`` -> ``import scripts.tools`` (a
    name ``tools`` used after it is a dotted reference, rewritten to ``scripts.tools...`` too)."""
    if not python and _BARE_IMPORT.match(text.strip()):
        return f"$import {SCRIPTS}"
    text = _DOTTED.sub(lambda m: f"{SCRIPTS}.{m.group(1)}{m.group(2)}", text)
    if python:
        text = _FROM_PACKAGE.sub(lambda m: f"from{m.group(1)}{SCRIPTS}.{m.group(2)}", text)
        text = _IMPORT_PACKAGE.sub(lambda m: f"{m.group(1)}import{m.group(2)}{SCRIPTS}.{m.group(3)}", text)
    return text


def _rewrite_config(value: Any) -> Any:
    if isinstance(value, str):
        return rewrite_references(value)
    if isinstance(value, dict):
        return {rewrite_references(k): _rewrite_config(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite_config(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------------------- closure


def _source(module: str, root: Path = SOURCE_ROOT) -> Path | None:
    """The file of project module ``module`` (a package's ``__init__.py``), or None if there is none."""
    base = root.joinpath(*module.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _is_package(module: str, root: Path = SOURCE_ROOT) -> bool:
    path = _source(module, root)
    return path is not None and path.name == "__init__.py"


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module of ``from ... import`` ``node`` found in ``module``."""
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _bound_name(alias: ast.alias, is_import: bool) -> str:
    if alias.asname:
        return alias.asname
    return alias.name.split(".")[0] if is_import else alias.name


@dataclass
class Closure:
    """The project modules a bundle needs: ``modules`` (every one, packages included), ``init_names`` (for a package
    whose ``__init__.py`` is cut down, the names kept in it), ``whole_inits`` (packages kept as they are),
    ``third_party`` (top-level names of the non-project, non-stdlib modules imported) and ``data_files`` (non-Python
    files the modules name, as paths relative to the source root)."""

    root: Path = SOURCE_ROOT
    modules: set[str] = field(default_factory=set)
    init_names: dict[str, set[str]] = field(default_factory=dict)
    whole_inits: set[str] = field(default_factory=set)
    third_party: set[str] = field(default_factory=set)
    data_files: set[Path] = field(default_factory=set)
    _trees: dict[str, ast.Module] = field(default_factory=dict)

    # -- parsing
    def tree(self, module: str) -> ast.Module:
        if module not in self._trees:
            path = _source(module, self.root)
            if path is None:
                raise PackError(f"{module}: no such module in {self.root}")
            self._trees[module] = ast.parse(path.read_text(), filename=str(path))
        return self._trees[module]

    def _bindings(self, package: str) -> dict[str, tuple[ast.stmt, ast.alias | None]]:
        """What each top-level name of ``package``'s ``__init__`` is bound by."""
        out: dict[str, tuple[ast.stmt, ast.alias | None]] = {}
        for stmt in self.tree(package).body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                for alias in stmt.names:
                    out[_bound_name(alias, isinstance(stmt, ast.Import))] = (stmt, alias)
        return out

    # -- what is needed
    def need_reference(self, dotted: str) -> None:
        """A dotted name a config or module uses: its modules, and the name in the last of them."""
        parts = dotted.split(".")
        module = parts[0]
        if _source(module, self.root) is None:
            raise PackError(f"{dotted}: {module} is not a package of {self.root}")
        self.need_module(module)
        for part in parts[1:]:
            child = f"{module}.{part}"
            if _source(child, self.root) is not None:
                self.need_module(child)
                self.need_name(module, part)  # reached as an attribute of its package
                module = child
            else:
                self.need_name(module, part)
                return

    def need_module(self, module: str) -> None:
        """``module`` and its packages (importing it runs their ``__init__``); a module's imports are followed."""
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name in self.modules:
                continue
            self.modules.add(name)
            if _is_package(name, self.root):
                self.init_names.setdefault(name, set())
                if self._init_is_plain(name):
                    continue
                self.whole_inits.add(name)
            self._follow(name, self.tree(name).body if _is_package(name, self.root) else [self.tree(name)])
            self._data_files(name)

    def need_name(self, module: str, name: str) -> None:
        """Name ``name`` of ``module``: for a cut-down package, the import binding it (and what that needs)."""
        if not _is_package(module, self.root) or module in self.whole_inits:
            return
        names = self.init_names.setdefault(module, set())
        if name in names:
            return
        names.add(name)
        binding = self._bindings(module).get(name)
        if binding is None:
            if _source(f"{module}.{name}", self.root) is not None:  # a submodule its __init__ does not import
                self.need_module(f"{module}.{name}")
                return
            raise PackError(f"{module}.{name}: {_source(module, self.root)} defines no {name!r}")
        self._follow(module, [binding[0]], only=binding[1])

    def _init_is_plain(self, package: str) -> bool:
        """Whether ``package``'s ``__init__`` holds only a docstring, imports and a literal ``__all__`` (so that it
        can be cut down to the imports used)."""
        for i, stmt in enumerate(self.tree(package).body):
            if i == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                continue
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                continue
            if (isinstance(stmt, ast.Assign) and [getattr(t, "id", None) for t in stmt.targets] == ["__all__"]
                    and isinstance(stmt.value, (ast.List, ast.Tuple))
                    and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in stmt.value.elts)):
                continue
            return False
        return True

    def _follow(self, module: str, nodes: list[ast.AST], only: ast.alias | None = None) -> None:
        """The imports in ``nodes`` (found in ``module``; with ``only``, that alias of the one statement)."""
        is_package = _is_package(module, self.root)
        for node in (n for top in nodes for n in ast.walk(top)):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if only is not None and alias is not only:
                        continue
                    top = alias.name.split(".")[0]
                    if top in PROJECT_PACKAGES:
                        self.need_module(alias.name)
                        if _is_package(alias.name, self.root):  # the package object is used: keep it whole
                            self._keep_whole(alias.name)
                    else:
                        self.third_party.add(top)
            elif isinstance(node, ast.ImportFrom):
                target = _absolute(node, module, is_package)
                top = target.split(".")[0]
                if top not in PROJECT_PACKAGES:
                    if not node.level:
                        self.third_party.add(top)
                    continue
                for alias in node.names:
                    if only is not None and alias is not only:
                        continue
                    if alias.name == "*":
                        self.need_module(target)
                        self._keep_whole(target)
                    elif _source(f"{target}.{alias.name}", self.root) is not None:
                        self.need_module(f"{target}.{alias.name}")
                    else:
                        self.need_module(target)
                        self.need_name(target, alias.name)

    def _keep_whole(self, package: str) -> None:
        if package in self.whole_inits:
            return
        self.whole_inits.add(package)
        self._follow(package, self.tree(package).body)

    def _data_files(self, module: str) -> None:
        """Non-Python files or folders beside ``module`` that it names in a string (``"schemas"``)."""
        folder = _source(module, self.root).parent
        names = {n.value for n in ast.walk(self.tree(module))
                 if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        for entry in folder.iterdir():
            if (entry.name in names and entry.name != "__pycache__" and entry.suffix != ".py"
                    and not (entry / "__init__.py").is_file()):
                self.data_files.add(entry.relative_to(self.root))

    # -- the copied sources
    def source(self, module: str) -> str:
        """The text of ``module`` as it is copied (a cut-down ``__init__``), references not yet rewritten."""
        path = _source(module, self.root)
        text = path.read_text()
        if not _is_package(module, self.root) or module in self.whole_inits:
            return text
        return _cut_init(text, self.tree(module), self.init_names.get(module, set()))

    def relative_path(self, module: str) -> Path:
        return _source(module, self.root).relative_to(self.root)


def _cut_init(text: str, tree: ast.Module, keep: set[str]) -> str:
    """A package ``__init__`` (docstring, imports, ``__all__``) with only the imports binding ``keep``."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    pos = 0
    kept: set[str] = set()
    carried: list[str] | None = None  # the gap before a run of dropped statements goes before the next kept one
    for stmt in tree.body:
        start, end = stmt.lineno - 1, stmt.end_lineno
        gap = lines[pos:start] if carried is None else carried
        carried = None
        pos = end
        original = "".join(lines[start:end])
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            is_import = isinstance(stmt, ast.Import)
            if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
                out += gap + [original]
                continue
            aliases = [a for a in stmt.names if _bound_name(a, is_import) in keep]
            kept |= {_bound_name(a, is_import) for a in aliases}
            if not aliases:
                carried = gap
                continue
            out += gap
            out.append(original if len(aliases) == len(stmt.names) else ast.unparse(
                type(stmt)(**{**{f: getattr(stmt, f) for f in stmt._fields}, "names": aliases})) + "\n")
        elif isinstance(stmt, ast.Assign):  # __all__
            names = [e.value for e in stmt.value.elts if e.value in kept]
            if len(names) == len(stmt.value.elts):
                out += gap + [original]
            elif len(f"__all__ = {json.dumps(names)}") <= 120:
                out += gap + [f"__all__ = {json.dumps(names)}\n"]
            else:
                out += gap + ["__all__ = [\n", *(f"    {json.dumps(n)},\n" for n in names), "]\n"]
        else:  # the docstring
            out += gap + [original]
    return "".join(out)


def code_closure(bundle_dir: str | Path, root: Path = SOURCE_ROOT) -> Closure:
    """The project modules bundle ``bundle_dir``'s configs use, with everything they import (:class:`Closure`)."""
    closure = Closure(root=root)
    for path in _config_files(Path(bundle_dir)):
        for text in _config_strings(json.loads(path.read_text())):
            for ref in project_references(text):
                try:
                    closure.need_reference(ref)
                except PackError as e:
                    raise PackError(f"{path}: {e}") from None
    return closure


# ------------------------------------------------------------------------------------------------------ packages


def _config_third_party(bundle: Path) -> set[str]:
    """Top-level modules the configs import (``$import ignite``) or instantiate (``"_target_": "ignite.x.Y"``)."""
    names: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
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
