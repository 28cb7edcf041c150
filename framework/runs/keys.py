"""Dotted keys into a raw recipe (``losses.0.step_size``): split, check, read and set.

Overrides on the command line and the values of a sweep both name recipe keys this way. A key
is checked against the schema (and, under a loss or callback, against that plugin's
parameters) before it is set, so a typo is an error that suggests the closest valid key.
"""

from __future__ import annotations

import copy
import difflib
from typing import Any

from ..plugin.params import param_problems
from ..plugin.specs import BASE_KEYS
from .schema import LossEntry, ParserSpec, PluginEntry, field_names, model_at

Path_ = list[str | int]
_OPEN_MODELS = (LossEntry, PluginEntry, ParserSpec)
_ENTRY_KEYS = {"losses": (*BASE_KEYS["loss"], "params"), "callbacks": (*BASE_KEYS["callback"], "params")}
_KINDS = {"losses": "loss", "callbacks": "callback"}
# Their mapping forms are alternatives ({file: ...} or {set: ...}), so a new one replaces the old.
_ALTERNATIVES = (["prompts"], ["seeds"])


def split_key(key: str) -> Path_:
    """``"losses.0.step_size"`` -> ``["losses", 0, "step_size"]``."""
    parts = key.strip().split(".")
    if not key.strip() or any(not p for p in parts):
        raise ValueError(f"{key!r} is not a dotted key like 'sampling.steps'")
    return [int(p) if p.isdigit() else p for p in parts]


def join_key(path: Path_) -> str:
    return ".".join(str(p) for p in path)


def get_at(raw: Any, path: Path_, default: Any = None) -> Any:
    node = raw
    for part in path:
        if isinstance(part, int) and isinstance(node, list) and part < len(node):
            node = node[part]
        elif isinstance(part, str) and isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return default
    return node


def set_at(raw: dict[str, Any], path: Path_, value: Any) -> None:
    """Set ``value`` at ``path``, creating missing mappings; a mapping given where a mapping
    stands is merged into it (``sampling={steps: 5}`` keeps the other sampling keys), except
    for ``prompts`` and ``seeds``, whose mapping forms replace each other."""
    node: Any = raw
    for part in path[:-1]:
        child = node[part] if _holds(node, part) else None
        if not isinstance(child, (dict, list)):
            child = {}
            node[part] = child
        node = child
    last = path[-1]
    current: Any = node[last] if _holds(node, last) else None
    mergeable = isinstance(current, dict) and isinstance(value, dict) and path not in _ALTERNATIVES
    node[last] = merge(current, value) if mergeable else copy.deepcopy(value)


def _holds(node: Any, part: str | int) -> bool:
    """Whether ``node[part]`` is read: always in a list (a bad index raises), by key in a mapping."""
    return isinstance(node, list) or part in node


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def valid_keys(raw: dict[str, Any], path: Path_, registry: Any) -> list[str] | None:
    """Keys allowed in the mapping at ``path``, or ``None`` when anything may go there."""
    if _is_plugin_entry(path):
        return _plugin_keys(registry, _KINDS[str(path[0])], get_at(raw, [*path, "name"]), _ENTRY_KEYS[str(path[0])])
    if path == ["parser"]:
        return _plugin_keys(registry, "parser", get_at(raw, ["parser", "name"], "spacy"), ("name", "params"))
    if path == ["sweep"]:
        return None
    model = model_at(path)
    if model is None or model in _OPEN_MODELS:
        return None
    return field_names(model)


def _is_plugin_entry(path: Path_) -> bool:
    """Whether ``path`` names one entry of ``losses`` or ``callbacks`` (``losses.0``)."""
    return len(path) == 2 and path[0] in _ENTRY_KEYS and isinstance(path[1], int)


def _plugin_class(registry: Any, kind: str, name: Any) -> Any:
    """The registered class of a plugin entry, or ``None`` (an unknown plugin is reported by
    name when the recipe is validated)."""
    classes = getattr(registry, "classes", {}).get(kind, {}) if registry is not None else {}
    cls = classes.get(name) if isinstance(name, str) else None
    return cls if hasattr(getattr(cls, "Params", None), "model_fields") else None


def _plugin_keys(registry: Any, kind: str, name: Any, base: tuple[str, ...]) -> list[str] | None:
    cls = _plugin_class(registry, kind, name)
    return None if cls is None else [*base, *cls.Params.model_fields]


def _unknown_parameter(raw: dict[str, Any], path: Path_, part: Any, registry: Any) -> str | None:
    """The plugin-spec message for an unknown parameter of the plugin entry at ``path`` (the
    same text a recipe file or ``Engine.generate`` gives), or ``None`` if ``path`` is no entry."""
    if not _is_plugin_entry(path):
        return None
    kind, name = _KINDS[str(path[0])], get_at(raw, [*path, "name"])
    cls = _plugin_class(registry, kind, name)
    if cls is None:
        return None
    return param_problems(f"{kind} plugin {name!r}", cls.Params, {str(part): None})[0][1]


def check_key(raw: dict[str, Any], path: Path_, registry: Any) -> str | None:
    """Why ``path`` names no key of ``raw``'s schema, or ``None`` when it does."""
    for depth, part in enumerate(path):
        here, container = path[:depth], get_at(raw, path[:depth])
        where = join_key(here) or "the recipe"
        if isinstance(part, int):
            if container is None or container == []:
                return f"{where} has no entries, so there is no {join_key([*here, part])} to set"
            if not isinstance(container, list):
                return f"{where} is not a list, so {part} is no index into it"
            if part >= len(container):
                return f"index {part} is out of range: {where} has {len(container)} entr{'y' if len(container) == 1 else 'ies'}"
            continue
        if isinstance(container, list):
            return f"{where} is a list: use an index (like {where}.0), not {part!r}"
        keys = valid_keys(raw, here, registry)
        if keys is None:
            if _is_open(raw, here) or (isinstance(container, dict) and part in container):
                continue
            known = sorted(container) if isinstance(container, dict) else []
            return _unknown(part, known, where)
        if part not in keys:
            return _unknown_parameter(raw, here, part, registry) or _unknown(part, keys, where)
    return None


def _is_open(raw: dict[str, Any], path: Path_) -> bool:
    """Plugin entries (a mapping with ``name``) take parameters the plugin checks later."""
    node = get_at(raw, path)
    return (isinstance(node, dict) and "name" in node) or path[:1] in (["parser"], ["losses"], ["callbacks"])


def _unknown(part: Any, keys: list[str], where: str) -> str:
    close = difflib.get_close_matches(str(part), [str(k) for k in keys], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listing = f" (valid keys in {where}: {', '.join(map(str, keys))})" if keys else ""
    return f"unknown key {part!r}{hint}{listing}"
