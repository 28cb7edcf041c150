"""The method being tuned: its loss specs, and the check that every value of the search space is
one its plugins accept, before any weights are loaded.

A method is ``NAME[:KEY=VALUE...]``: a toy-world method name (``attnguide.toyworld.methods``:
``entropy_syngen_diffuse`` ...) or a registered loss plugin, with fixed parameter overrides that
apply to each of its losses (``syngen:weight=2``). A tuned parameter applies to each of its
losses too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigError
from ..keyvalue import parse_key_values
from ..plugin.manager import Registry
from ..plugin.specs import spec_problems, to_spec
from .space import Dimension


def method_specs(label: str, registry: Registry) -> list[dict[str, Any]]:
    """``"syngen:weight=2"`` -> ``[{"name": "syngen", "weight": 2}]``; ``ConfigError`` for an
    unknown name, a method without losses (``none``) or a callback (tune sets loss parameters)."""
    from ..toyworld.methods import METHODS

    name, *pairs = label.split(":")
    name = name.strip()
    overrides = parse_key_values(pairs, f"--method {label!r}:", "syngen:weight=2")
    if name in METHODS:
        base = METHODS[name]
    elif name in registry.classes["loss"]:
        base = [{"name": name}]
    else:
        kind = "a callback, not a loss plugin" if name in registry.classes["callback"] else "not a loss plugin"
        raise ConfigError(f"--method {label!r}: {name!r} is {kind}; tune sets loss parameters "
                          f"(loss plugins: {', '.join(registry.names('loss'))})")
    if not base:
        raise ConfigError(f"--method {label!r}: {name!r} runs no loss, so it has no parameters to tune; "
                          "it is the baseline every tuned method is compared with")
    specs = [{**spec, **overrides} for spec in base]
    for spec in specs:
        _raise_problems(spec, registry, f"--method {label!r}")
    return specs


def with_point(specs: Sequence[Mapping[str, Any]], point: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The method's loss specs with a grid point's values set on each loss."""
    return [{**spec, **point} for spec in specs]


def check_space(specs: Sequence[Mapping[str, Any]], dims: Sequence[Dimension], registry: Registry) -> None:
    """``ConfigError`` naming the dimension (as written), the plugin and the parameter for an
    unknown parameter or any value its ``Params`` model (or the loss's weight/window check)
    refuses; also when no dimension is given or one is given twice."""
    if not dims:
        raise ConfigError("nothing to tune: give at least one --param NAME=VALUES (or a --space file)")
    seen: set[str] = set()
    for dim in dims:
        if dim.name in seen:
            raise ConfigError(f"{dim.source}: parameter {dim.name!r} is given twice")
        seen.add(dim.name)
        if dim.name == "name":
            raise ConfigError(f"{dim.source}: 'name' chooses the plugin; tune one method at a time")
        for value in dim.values:
            for spec in specs:
                _raise_problems({**spec, dim.name: value}, registry, dim.source)


def _raise_problems(raw: Mapping[str, Any], registry: Registry, where: str) -> None:
    spec = to_spec("loss", dict(raw), where)
    if spec is None:
        return
    problems = spec_problems(spec, registry)
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(message for _, message in problems))
