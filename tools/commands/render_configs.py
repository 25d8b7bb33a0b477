"""Render each bundle's shared configs from its family's template and the bundle's overlay (``tools/bundle_templates/``).

The bundles of a family (COVID-19 CT: slices and volumes; 2D RGB: colonoscopy and dermoscopy) share most of their
``train.json``, ``evaluate.json`` and ``inference.json``; every bundle shares ``multi_gpu_train.json`` and
``logging.conf``. Each bundle folder must still stand alone (MONAI's CLI, MONAI Label and the model zoo read
``configs/*.json`` directly), so these files stay committed in the bundle, but as *renderings*: one template a family,
one overlay a bundle, both under ``tools/bundle_templates/`` (its README describes the layout). Edit the template or the
overlay, then run ``python -m tools render_configs``; ``--check`` (and ``tests/test_render_configs.py``) fails when a
committed file differs from its rendering.

A template file is a config in which the leaves that differ between the family's bundles hold :data:`PER_BUNDLE`,
and the keys that only some of them have hold :data:`OPTIONAL` (dropped from a bundle whose overlay does not set
them; they keep their place in the file where it does). An overlay is ``{"family": FAMILY, FILE: {ID: VALUE}}``,
with MONAI ids (keys and list indices joined by ``#``). An id that reaches an existing key or list item replaces it;
one whose last part is not there adds that key. A key that itself contains ``#`` (the top-level
``"validate#dataset"``-style keys of ``evaluate.json``) is matched whole, the longest existing key first: MONAI's own
``ConfigParser.update`` cannot address such keys, so the overlay is applied here. A rendering that still holds
:data:`PER_BUNDLE` is refused.
"""

from __future__ import annotations

import sys

import json
from pathlib import Path
from typing import Any

__all__ = ["PER_BUNDLE", "OPTIONAL", "TEMPLATES", "RenderError", "apply_overlay", "render_overlay",
           "render_bundle_configs", "render_all", "dump_config"]

TEMPLATES = Path(__file__).resolve().parents[1] / "bundle_templates"
BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
PER_BUNDLE = "<per-bundle>"
OPTIONAL = "<per-bundle-optional>"
COMMON = "common"


class RenderError(ValueError):
    """A template or overlay that cannot be rendered (unknown family or file, bad id, a placeholder left)."""


def dump_config(obj: Any) -> str:
    """The text of a rendered JSON config: 4-space indent, a list of plain values on one line where that line fits
    in 120 characters (``"keys": ["image", "label"]``, as the model zoo's configs are written), a final newline."""
    return _dump(obj, 0, 0) + "\n"


def _dump(obj: Any, level: int, prefix: int) -> str:
    """``obj`` as JSON at indent ``level``; ``prefix`` = characters before it on its first line."""
    pad, inner = "    " * level, "    " * (level + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = []
        for k, v in obj.items():
            head = f"{inner}{json.dumps(k)}: "
            items.append(head + _dump(v, level + 1, len(head)))
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list):
        if all(not isinstance(v, (dict, list)) for v in obj):
            one_line = "[" + ", ".join(json.dumps(v) for v in obj) + "]"
            if prefix + len(one_line) + 1 <= 120:
                return one_line
        return "[\n" + ",\n".join(inner + _dump(v, level + 1, len(inner)) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj)


def _set(tree: Any, config_id: str, value: Any) -> None:
    """Set ``config_id`` (MONAI id; a key holding ``#`` is matched whole, longest first) in ``tree`` to ``value``."""
    parts = config_id.split("#")
    node, i = tree, 0
    while True:
        if isinstance(node, dict):
            for j in range(len(parts), i, -1):
                key: Any = "#".join(parts[i:j])
                if key in node:
                    break
            else:  # not there: the rest of the id is one new key
                node["#".join(parts[i:])] = value
                return
        elif isinstance(node, list):
            try:
                key, j = int(parts[i]), i + 1
                node[key]
            except (ValueError, IndexError):
                raise RenderError(f"{config_id!r}: {parts[i]!r} is not an index of a list of {len(node)}") from None
        else:
            raise RenderError(f"{config_id!r}: {'#'.join(parts[:i])!r} is a value, not a dict or list")
        if j == len(parts):
            node[key] = value
            return
        node, i = node[key], j


def apply_overlay(template: Any, overrides: dict[str, Any]) -> Any:
    """A copy of ``template`` with each ``{id: value}`` of ``overrides`` set (module docstring)."""
    tree = json.loads(json.dumps(template))
    for config_id, value in overrides.items():
        _set(tree, config_id, value)
    return tree


def _drop_optional(tree: Any) -> Any:
    """``tree`` without the dict entries still holding :data:`OPTIONAL`."""
    if isinstance(tree, dict):
        return {k: _drop_optional(v) for k, v in tree.items() if v != OPTIONAL}
    if isinstance(tree, list):
        return [_drop_optional(v) for v in tree]
    return tree


def _placeholders(tree: Any, path: str = "") -> list[str]:
    if tree in (PER_BUNDLE, OPTIONAL):
        return [path]
    if isinstance(tree, dict):
        return [p for k, v in tree.items() for p in _placeholders(v, f"{path}#{k}" if path else k)]
    if isinstance(tree, list):
        return [p for i, v in enumerate(tree) for p in _placeholders(v, f"{path}#{i}" if path else str(i))]
    return []


def render_overlay(overlay: dict[str, Any], templates_dir: str | Path = TEMPLATES,
                   name: str = "bundle") -> dict[str, str]:
    """``{filename: text}`` of the configs rendered from ``overlay`` (``{"family": ..., FILE: {id: value}}``).

    The files are the family folder's and ``common/``'s (the family's file wins where both have one); ``.json``
    files get the overlay's ids for them, other files (``logging.conf``) are copied as they are.

    Raises:
        RenderError: unknown family, an overlay for a file the family has no template of, a bad id, or a
            :data:`PER_BUNDLE` placeholder the overlay left unset.
    """
    templates_dir = Path(templates_dir)
    family = overlay.get("family")
    family_dir = templates_dir / str(family)
    if not family or family == COMMON or not family_dir.is_dir():
        raise RenderError(f"{name}: unknown family {family!r} (a folder of {templates_dir})")
    sources = {p.name: p for d in (templates_dir / COMMON, family_dir) if d.is_dir() for p in d.iterdir()
               if p.is_file() and not p.name.startswith(".")}
    unknown = sorted(set(overlay) - {"family"} - {n for n in sources if n.endswith(".json")})
    if unknown:
        raise RenderError(f"{name}: overlay for {', '.join(unknown)}, which family {family!r} has no template of")
    rendered = {}
    for filename, path in sorted(sources.items()):
        if not filename.endswith(".json"):
            rendered[filename] = path.read_text()
            continue
        try:
            tree = apply_overlay(json.loads(path.read_text()), overlay.get(filename, {}))
        except RenderError as e:
            raise RenderError(f"{name}/{filename}: {e}") from None
        tree = _drop_optional(tree)
        left = _placeholders(tree)
        if left:
            raise RenderError(f"{name}/{filename}: {', '.join(left)} left {PER_BUNDLE!r} (or {OPTIONAL!r} in a list): "
                              "set them in the overlay")
        rendered[filename] = dump_config(tree)
    return rendered


def render_bundle_configs(bundle_name: str, templates_dir: str | Path = TEMPLATES) -> dict[str, str]:
    """``{filename: text}`` of bundle ``bundle_name``'s rendered configs (``templates_dir/overlays/<name>.json``)."""
    overlay_file = Path(templates_dir) / "overlays" / f"{bundle_name}.json"
    if not overlay_file.is_file():
        raise RenderError(f"{bundle_name}: no overlay {overlay_file}")
    return render_overlay(json.loads(overlay_file.read_text()), templates_dir, name=bundle_name)


def render_all(bundles_dir: str | Path | None = None, check: bool = False,
               templates_dir: str | Path | None = None) -> list[Path]:
    """Render every bundle that has an overlay in ``templates_dir`` (default :data:`TEMPLATES`) into
    ``bundles_dir/<name>/configs/`` (default the repository's ``bundles/``).

    Returns the files that differed from their rendering (written unless ``check``).
    """
    from tools.io import atomic_write_text

    bundles_dir = Path(bundles_dir) if bundles_dir is not None else BUNDLES
    templates_dir = Path(templates_dir) if templates_dir is not None else TEMPLATES
    differing = []
    for overlay_file in sorted((templates_dir / "overlays").glob("*.json")):
        name = overlay_file.stem
        for filename, text in render_bundle_configs(name, templates_dir).items():
            target = bundles_dir / name / "configs" / filename
            if not target.is_file() or target.read_text() != text:
                differing.append(target)
                if not check:
                    atomic_write_text(target, text)
    return differing


# ---------------------------------------------------------------- the command line (python -m tools render_configs)


def render_configs_command(check: bool = False) -> str:
    """Write each bundle's shared configs from its family's template and its overlay; print what was written.

    The shared configs (train, evaluate, inference, multi_gpu_train.json, logging.conf) are rendered from
    tools/bundle_templates/ (its README.md describes the layout); metadata.json and the bundle-only overlays are not.
    Exits 1 with a message on a template or overlay that cannot be rendered, and with --check on any committed file
    that differs from its rendering (naming each).

    Args:
        check: write nothing; exit 1 naming each file that differs from its rendering.
    """
    try:
        differing = render_all(check=check)
    except RenderError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    names = [str(p.relative_to(TEMPLATES.parents[1])) for p in differing]
    if check:
        if names:
            print("differs from its rendering (run python -m tools render_configs): " + ", ".join(names),
                  file=sys.stderr)
            sys.exit(1)
        return "every rendered config matches tools/bundle_templates/"
    return "wrote " + ", ".join(names) if names else "every rendered config was up to date"
