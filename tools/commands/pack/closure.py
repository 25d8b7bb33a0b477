"""The code a packed bundle carries: the project modules its configs name, followed through their imports with
:mod:`ast` (:class:`Closure`, :func:`code_closure`), and the rewriting of ``tools.`` / ``custom_networks.`` references to
``scripts.tools.`` / ``scripts.custom_networks.`` (:func:`rewrite_references`). See :mod:`tools.commands.pack`."""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.errors import BundleError

PROJECT_PACKAGES = ("tools", "custom_networks")
SCRIPTS = "scripts"
SOURCE_ROOT = Path(__file__).resolve().parents[3]  # the folder holding tools/ and custom_networks/

_DOTTED = re.compile(r"(?<![\w.])(" + "|".join(PROJECT_PACKAGES) + r")((?:\.[A-Za-z_]\w*)+)")
_BARE_IMPORT = re.compile(r"^\$\s*import\s+(" + "|".join(PROJECT_PACKAGES) + r")\s*$")
_FROM_PACKAGE = re.compile(r"(?<![\w.])from(\s+)(" + "|".join(PROJECT_PACKAGES) + r")(?=\s+import\b)")
_IMPORT_PACKAGE = re.compile(r"(?m)(^[ \t]*|;[ \t]*)import(\s+)(" + "|".join(PROJECT_PACKAGES) + r")(?![\w.])")
_CONFIG_IMPORT = re.compile(r"^\$\s*(?:import|from)\s+([A-Za-z_]\w*)")


class PackError(BundleError, ValueError):
    """A bundle that cannot be packed (a missing file, an existing output folder, code the packer cannot follow)."""



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
