"""Sweeps: axes over recipe keys, expanded as a grid (or zipped), one cell per combination.

An axis is either a dotted recipe key with a list of values (``sampling.guidance_scale:
[5, 7.5]``) or named values (``{low: 5, high: 7.5}``), or a named axis whose values are patches
of the recipe (``method: {none: {losses: []}, syngen: {losses: [syngen]}}``). ``zip: true`` (or a
list of axis names, or of lists of names) pairs axes value by value instead of crossing them.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import re
from dataclasses import dataclass
from typing import Any, NoReturn

from ..errors import RecipeError
from .keys import Path_, check_key, join_key, set_at, split_key
from .schema import UNSWEEPABLE

DEFAULT_CELL = "default"
_SHORTHANDS = {"model": "id", "parser": "name"}


@dataclass
class Axis:
    key: str  # as written under ``sweep:``
    short: str  # its name in cell names
    path: Path_ | None  # the recipe key it sets; None for a named axis of patches
    values: list[tuple[str, Any]]  # (label, value or patch)


def expand_sweep(raw: dict[str, Any], registry: Any, source: str) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
    """``(cell name, {axis: label}, cell recipe without a sweep)`` for every cell, grid order
    (first axis outermost). A recipe without a sweep is one cell named ``default``."""
    sweep = raw.get("sweep")
    base = {k: copy.deepcopy(v) for k, v in raw.items() if k != "sweep"}
    if not sweep:
        return [(DEFAULT_CELL, {}, base)]
    if not isinstance(sweep, dict):
        _fail(source, "sweep", f"expected a mapping of axes (KEY: [values] or NAME: {{label: {{...}}}}), got {sweep!r}")
    axes = [_parse_axis(str(k), v, base, registry, source) for k, v in sweep.items() if k != "zip"]
    if not axes:
        _fail(source, "sweep", "no axes: give at least one KEY: [values]")
    _unique_shorts(axes)
    groups = _zip_groups(sweep.get("zip"), axes, source)
    cells = []
    for combo in itertools.product(*(range(len(group[0].values)) for group in groups)):
        chosen = {axis.key: axis.values[i] for group, i in zip(groups, combo) for axis in group}
        cell = copy.deepcopy(base)
        labels = {}
        for axis in axes:  # patches apply in the order the axes are written
            label, value = chosen[axis.key]
            labels[axis.short] = label
            _apply(cell, axis, label, value, registry, source)
        cells.append(("__".join(f"{short}-{label}" for short, label in labels.items()), labels, cell))
    return cells


def _fail(source: str, key: str, message: str) -> NoReturn:

    raise RecipeError(source, [(key, message)])


def _parse_axis(key: str, values: Any, base: dict[str, Any], registry: Any, source: str) -> Axis:
    where = f"sweep.{key}"
    if values is None or (isinstance(values, (list, dict)) and not values):
        _fail(source, where, "empty axis: give at least one value")
    try:
        key_path = split_key(key)
    except ValueError as exc:
        _fail(source, where, str(exc))
    path: Path_ | None = key_path
    if isinstance(values, list):
        items = [(_label(v, i), v) for i, v in enumerate(values)]
    elif isinstance(values, dict):
        items = [(_safe(str(k)), v) for k, v in values.items()]
        if check_key(base, key_path, registry) is not None:
            path = None  # not a recipe key: a named axis whose values patch the recipe
            for label, patch in items:
                if not isinstance(patch, dict):
                    _fail(source, f"{where}.{label}", "a named axis takes {LABEL: {KEY: VALUE, ...}}; "
                          f"{key!r} is no recipe key ({check_key(base, split_key(key), registry)})")
    else:
        _fail(source, where, f"expected a list of values or a mapping of named values, got {values!r}")
    if path is not None and str(path[0]) in UNSWEEPABLE:
        _fail(source, where, _unsweepable(str(path[0])))
    return Axis(key, _safe(str(path[-1]) if path else key), path, _unique_labels(items))


def _unsweepable(top: str) -> str:
    return (f"{top!r} cannot vary between cells (one run has one name, output directory, runtime, "
            "prompt list and seed list; the comparison grids put prompts on pages and seeds on rows)")


def _apply(cell: dict[str, Any], axis: Axis, label: str, value: Any, registry: Any, source: str) -> None:
    where = f"sweep.{axis.key}" + (f".{label}" if axis.path is None else "")
    patches = [(axis.path, value)] if axis.path is not None else list(value.items())
    for key, patch_value in patches:
        try:
            path = split_key(key) if isinstance(key, str) else list(key)
        except ValueError as exc:
            _fail(source, where, str(exc))
        if len(path) == 1 and path[0] in _SHORTHANDS and isinstance(patch_value, str):
            path.append(_SHORTHANDS[str(path[0])])
        if str(path[0]) in UNSWEEPABLE:
            _fail(source, f"{where}.{join_key(path)}" if axis.path is None else where, _unsweepable(str(path[0])))
        problem = check_key(cell, path, registry)
        if problem:
            _fail(source, f"{where}.{join_key(path)}" if axis.path is None else where, problem)
        set_at(cell, path, patch_value)


def _zip_groups(spec: Any, axes: list[Axis], source: str) -> list[list[Axis]]:
    if spec is None or spec is False:
        return [[a] for a in axes]
    if spec is True:
        spec = [[a.key for a in axes]]
    if not isinstance(spec, list) or not spec:
        _fail(source, "sweep.zip", f"expected true or a list of axis names (or of lists of names), got {spec!r}")
    groups_spec = [spec] if all(isinstance(s, str) for s in spec) else spec
    by_key = {a.key: a for a in axes}
    group_of: dict[str, int] = {}
    for g, names in enumerate(groups_spec):
        if not isinstance(names, list) or not names:
            _fail(source, "sweep.zip", f"expected a list of axis names, got {names!r}")
        for name in names:
            if name not in by_key:
                close = difflib.get_close_matches(str(name), list(by_key), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                _fail(source, "sweep.zip", f"{name!r} is not an axis of the sweep{hint} (axes: {', '.join(by_key)})")
            if name in group_of:
                _fail(source, "sweep.zip", f"axis {name!r} is zipped twice")
            group_of[name] = g
        sizes = {name: len(by_key[name].values) for name in names}
        if len(set(sizes.values())) > 1:
            listing = ", ".join(f"{n} ({s} values)" for n, s in sizes.items())
            _fail(source, "sweep.zip", f"zipped axes need the same number of values: {listing}")
    groups: list[list[Axis]] = []
    emitted: set[int] = set()
    for axis in axes:
        if axis.key not in group_of:
            groups.append([axis])
        elif group_of[axis.key] not in emitted:
            emitted.add(group_of[axis.key])
            groups.append([a for a in axes if group_of.get(a.key) == group_of[axis.key]])
    return groups


def _label(value: Any, index: int) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, (int, float, str)) and str(value):
        return _safe(str(value))
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        return _safe(value["name"])
    if isinstance(value, list) and all(isinstance(v, str) or (isinstance(v, dict) and "name" in v) for v in value):
        return _safe("+".join(str(v if isinstance(v, str) else v["name"]) for v in value) or "none")
    return f"v{index}"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_") or "x"


def _unique_labels(items: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    labels = [label for label, _ in items]
    return [(f"{label}_{i}" if labels.count(label) > 1 else label, value) for i, (label, value) in enumerate(items)]


def _unique_shorts(axes: list[Axis]) -> None:
    shorts = [a.short for a in axes]
    for axis in axes:
        if shorts.count(axis.short) > 1:
            axis.short = _safe(axis.key)
