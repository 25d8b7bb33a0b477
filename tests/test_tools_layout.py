"""The layout of ``tools/`` (tools/README.md): the command line's verbs and flags stay as they were, the import
graph of the project's packages has no circle, and no module of ``tools`` passes 400 lines (but the Inf-Net metrics
port)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("tools", "custom_networks")
MAX_LINES = 400
LONG_ALLOWED = {"tools/metrics/infnet.py"}  # the Inf-Net evaluation port, kept whole to be read against its source

# every verb of `python -m tools` and its arguments, in order: changing one breaks users' scripts
VERBS = {
    "verify": ("bundle_dir", "dataset_dir"),
    "export": ("bundle_dir", "filepath", "format", "output"),
    "pack": ("bundle_dir", "output_dir", "overwrite"),
    "benchmark": ("bundle_dir", "input", "mode", "output_json", "repeats", "steps", "rounds", "compile",
                  "volume_shape", "epochs", "config", "overrides", "dataset_dir"),
    "compare": ("bundle_dir", "variants", "max_epochs", "output_dir", "dataset_dir", "overrides", "reuse"),
    "crossval": ("bundle_dir", "folds", "output_dir", "max_epochs", "overrides", "config", "seed", "patience",
                 "dataset_dir", "only_folds", "from_run", "keep"),
    "benchmark_variants": ("bundle_dir", "grid", "output_dir", "max_epochs", "dataset_dir", "overrides", "reuse"),
    "promote": ("run_dir", "bundle_dir", "dtype", "choice", "metric"),
    "compact": ("src", "dst", "dtype"),
    "channel_stats": ("bundle_dir", "dataset_dir"),
    "paired_difference": ("per_image_a", "per_image_b", "metric", "group"),
    "hu_window": ("image_dir", "lung_hu", "tissue_hu"),
    "mesh": ("mask", "output", "png", "label", "step_size"),
    "render_configs": ("check",),
    "serve": ("studies", "host", "port", "bundles", "app_dir", "skip_trainers"),
}


def test_the_command_line_has_the_same_verbs_and_flags():
    from tools.cli import COMMANDS

    assert {name: tuple(inspect.signature(f).parameters) for name, f in COMMANDS.items()} == VERBS
    assert list(COMMANDS) == list(VERBS)  # the order `python -m tools --help` lists them in


def test_every_verb_lives_in_its_own_module_of_tools_commands():
    from tools.cli import COMMANDS

    for name, f in COMMANDS.items():
        assert f.__name__ == f"{name}_command", name
        module = "tools.commands.promote" if name == "compact" else f"tools.commands.{name}"
        assert f.__module__ == module, name


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = path.relative_to(REPO).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """``{module: project modules it imports}``, from every import statement of its source (function-level ones
    too: they run sooner or later). ``from a.b import c`` is an edge to ``a.b.c`` when that is a module, else to
    ``a.b``; relative imports are resolved against the module's package."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of ``graph`` as ``[a, b, ..., a]``, or None (depth-first search, colouring nodes)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_import_graph_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "tools"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import runner\n")
    (pkg / "runner.py").write_text("def f():\n    from tools.sub import g\n")
    (pkg / "sub" / "__init__.py").write_text("from tools.sub.g import x\n")
    (pkg / "sub" / "g.py").write_text("import tools.runner\n")
    modules = {"tools": pkg / "__init__.py", "tools.runner": pkg / "runner.py", "tools.sub": pkg / "sub" / "__init__.py",
               "tools.sub.g": pkg / "sub" / "g.py"}
    graph = import_graph(modules)
    assert graph == {"tools": {"tools.runner"}, "tools.runner": {"tools.sub.g"}, "tools.sub": {"tools.sub.g"},
                     "tools.sub.g": {"tools.runner"}}
    assert find_cycle(graph) == ["tools.runner", "tools.sub.g", "tools.runner"]


def test_no_import_circle_in_the_project():
    cycle = find_cycle(import_graph(_modules()))
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_no_module_of_tools_passes_400_lines():
    long = {str(p.relative_to(REPO)): n for p in (REPO / "tools").rglob("*.py")
            if "__pycache__" not in p.parts and (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert {k: v for k, v in long.items() if k not in LONG_ALLOWED} == {}


def test_the_runtime_does_not_import_the_commands_or_the_integrations():
    """What bundle configs use at run time (and ``tools pack`` copies) never needs a developer command or an adapter."""
    graph = import_graph(_modules())
    runtime = [m for m in graph if m.startswith("tools") and not m.startswith(("tools.commands", "tools.integrations",
                                                                               "tools.cli", "tools.__main__"))
               and m not in ("tools.monailabel_app", "tools.torchvision_ops")]  # the deprecated aliases
    wrong = {m: sorted(e for e in graph[m] if e.startswith(("tools.commands", "tools.integrations"))) for m in runtime}
    assert {m: e for m, e in wrong.items() if e} == {}
