"""The search space of ``attnguide tune``: parameters of a loss plugin and the values to try.

A dimension is written ``NAME=VALUES`` (``--param``) or ``NAME: VALUES`` (``params:`` of a space
YAML). ``VALUES`` is one of:

* a comma-separated list of YAML scalars: ``step_size=1,3,10``, ``unrelated_entropy=as_written,diffuse``;
* a YAML flow list, for values that are lists themselves: ``window=[[0, 0.5], [0, 0.25]]``;
* ``log:LOW..HIGH:N``, N values spaced evenly on a log scale from LOW to HIGH (LOW > 0);
* ``lin:LOW..HIGH:N``, N values spaced evenly from LOW to HIGH.

Range values are rounded to four significant digits, or to whole numbers when LOW and HIGH are
written as whole numbers and the N rounded values stay distinct (``log:1..20:6`` is 1, 2, 3, 6,
11, 20; ``lin:0..1:5`` is 0.0, 0.25, 0.5, 0.75, 1.0). A space
YAML may also give a list directly (``step_size: [1, 3, 10]``).

The grid is every combination, the first dimension outermost. Random search draws ``trials``
distinct points of that grid with ``random.Random(seed)`` and evaluates them in grid order, so
the same seed gives the same points.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..keyvalue import parse_key_value

RANGE_KINDS = ("log", "lin")


@dataclass(frozen=True)
class Dimension:
    """One tuned parameter: ``name`` (a plugin parameter, or a loss's ``weight``/``window``),
    the ``values`` to try in order, and ``source``, how the user wrote it (for error messages)."""

    name: str
    values: tuple[Any, ...]
    source: str


def parse_param(item: str) -> Dimension:
    """``"step_size=1,3,10"`` -> ``Dimension("step_size", (1, 3, 10), ...)``; ``ConfigError``
    naming the ``--param`` item when it is malformed."""
    name, sep, text = item.partition("=")
    if not sep or not name.strip() or not text.strip():
        raise ConfigError(f"--param {item!r} must look like NAME=VALUES, e.g. step_size=1,3,10 or "
                          "step_size=log:0.5..20:6")
    where = f"--param {item!r}"
    return Dimension(name.strip(), tuple(parse_values(text.strip(), where)), where)


def parse_values(text: str, where: str) -> list[Any]:
    """The values ``text`` stands for (see the module docstring); at least one, no repeats."""
    kind = text.split(":", 1)[0]
    if kind in RANGE_KINDS:
        values = _range_values(text, where)
    elif text.startswith("["):
        _, parsed = parse_key_value(f"x={text}", where)
        if not isinstance(parsed, list):
            raise ConfigError(f"{where}: {text!r} is not a YAML list")
        values = parsed
    else:
        values = [parse_key_value(f"x={part.strip()}", where)[1] for part in text.split(",")]
    return _distinct(values, where)


def _range_values(text: str, where: str) -> list[Any]:
    kind, _, rest = text.partition(":")
    bounds, sep, count_text = rest.rpartition(":")
    low_text, dots, high_text = bounds.partition("..")
    example = f"{kind}:0.5..20:6"
    try:
        low, high, count = float(low_text), float(high_text), int(count_text)
    except ValueError:
        raise ConfigError(f"{where}: {text!r} must look like {kind}:LOW..HIGH:N, e.g. {example}") from None
    if not (sep and dots) or count < 1 or not (math.isfinite(low) and math.isfinite(high)):
        raise ConfigError(f"{where}: {text!r} must look like {kind}:LOW..HIGH:N with N >= 1, e.g. {example}")
    if kind == "log" and (low <= 0 or high <= 0):
        raise ConfigError(f"{where}: a log range needs LOW and HIGH above 0, got {text!r}")
    fractions = [i / (count - 1) if count > 1 else 0.0 for i in range(count)]
    if kind == "log":
        raw = [low * (high / low) ** f for f in fractions]
    else:
        raw = [low + (high - low) * f for f in fractions]
    whole = [int(round(v)) for v in raw]
    if _is_whole(low_text) and _is_whole(high_text) and len(set(whole)) == len(whole):
        return whole
    return [float(f"{v:.4g}") for v in raw]


def _is_whole(text: str) -> bool:
    return text.strip().lstrip("+-").isdigit()


def _distinct(values: Sequence[Any], where: str) -> list[Any]:
    if not values:
        raise ConfigError(f"{where}: no values to try")
    out: list[Any] = []
    for value in values:
        if value not in out:
            out.append(value)
    return out


def read_space_file(path: str | Path) -> tuple[str | None, list[Dimension]]:
    """A space YAML ``{method: NAME (optional), params: {NAME: VALUES, ...}}`` -> the method it
    names (or None) and its dimensions; ``ConfigError`` naming the file and key at fault."""
    file = Path(path)
    raw = read_yaml(file, "space file")
    if not isinstance(raw, Mapping) or not isinstance(raw.get("params"), Mapping) or not raw["params"]:
        raise ConfigError(f"space file {file}: expected a mapping with 'params: {{NAME: VALUES, ...}}' "
                          "(and optionally 'method: NAME')")
    unknown = sorted(set(raw) - {"method", "params"})
    if unknown:
        raise ConfigError(f"space file {file}: unknown key {unknown[0]!r} (keys: method, params)")
    method = raw.get("method")
    if method is not None and not isinstance(method, str):
        raise ConfigError(f"space file {file}: 'method' must be a name, got {method!r}")
    return method, space_dimensions(raw["params"], f"space file {file}: params")


def read_yaml(file: Path, what: str) -> Any:
    """The YAML document in ``file``; ``ConfigError`` saying ``what`` the file is, its path and
    why it cannot be read or parsed."""
    try:
        return yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{what} {file}: cannot be read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {file}: not valid YAML ({' '.join(str(exc).split())})") from None


def space_dimensions(params: Mapping[Any, Any], where: str) -> list[Dimension]:
    """``{NAME: VALUES}`` (a YAML list, or a text such as ``log:1..20:3``) -> dimensions, each
    named ``where.NAME`` in errors."""
    dims = []
    for name, spec in params.items():
        at = f"{where}.{name}"
        values = _distinct(list(spec), at) if isinstance(spec, list) else parse_values(str(spec), at)
        dims.append(Dimension(str(name), tuple(values), at))
    return dims


def merge_dimensions(first: Sequence[Dimension], then: Sequence[Dimension]) -> list[Dimension]:
    """``first`` with each dimension of ``then`` replacing the one of the same name (or appended):
    the command line's ``--param`` over a space file's."""
    out = {d.name: d for d in first}
    out.update({d.name: d for d in then})
    return list(out.values())


def grid_size(dims: Sequence[Dimension]) -> int:
    return math.prod(len(d.values) for d in dims)


def grid_points(dims: Sequence[Dimension]) -> list[dict[str, Any]]:
    """Every combination of the dimensions' values, the first dimension outermost."""
    return [dict(zip((d.name for d in dims), combo)) for combo in itertools.product(*(d.values for d in dims))]


def random_points(dims: Sequence[Dimension], trials: int, seed: int) -> list[dict[str, Any]]:
    """``trials`` distinct grid points (all of them when the grid is smaller) drawn with
    ``random.Random(seed)``, returned in grid order."""
    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    total = grid_size(dims)
    chosen = sorted(random.Random(seed).sample(range(total), min(trials, total)))
    return [_point_at(dims, index) for index in chosen]


def _point_at(dims: Sequence[Dimension], index: int) -> dict[str, Any]:
    """The grid point at ``index`` in ``grid_points`` order (mixed radix, last dimension fastest)."""
    point: dict[str, Any] = {}
    for dim in reversed(dims):
        index, digit = divmod(index, len(dim.values))
        point[dim.name] = dim.values[digit]
    return {d.name: point[d.name] for d in dims}
