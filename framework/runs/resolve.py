"""Recipe checks that need the plugin registry: loss, callback and parser names and parameters.

A loss or callback is resolved to its full settings (every parameter, defaults filled in), so a
resolved recipe and the content hash of its images say exactly what ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import AttnguideError, RecipeError
from ..plugin.manager import Registry
from ..plugin.params import param_problems
from ..plugin.specs import NO_GUIDANCE, Kind, build_plugin, flat_spec, spec_problems, to_spec
from .schema import PluginEntry, Recipe


def resolve_plugins(recipe: Recipe, registry: Registry, source: str, context: str = "") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Full specs of the recipe's losses and callbacks; a ``RecipeError`` listing every problem.

    Where the model's family can be told without weights (``attnguide.models.identify``), the
    plugins' defaults for that family apply, a plugin the family cannot run is a problem, and
    so is an ``attention.layers`` name the model does not have."""
    from ..models.identify import model_family

    problems: list[tuple[str, str]] = []
    family = model_family(recipe.model.id)
    losses = _resolve_all("loss", "losses", recipe.losses, registry, problems, family)
    callbacks = _resolve_all("callback", "callbacks", recipe.callbacks, registry, problems, family)
    _check_layers(recipe, problems)
    if losses or callbacks:
        _check_parser(recipe, registry, problems)
    if problems:
        raise RecipeError(source, problems, context)
    return losses, callbacks


def _resolve_all(kind: Kind, section: str, entries: Sequence[PluginEntry], registry: Registry,
                 problems: list[tuple[str, str]], family: str | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        key = f"{section}.{index}"
        if kind == "loss" and entry.name in NO_GUIDANCE:
            continue
        if entry.name in seen:
            problems.append((key, f"{kind} {entry.name!r} is already {section}.{seen[entry.name]}; "
                                  "list each plugin once and combine its settings"))
            continue
        seen[entry.name] = index
        resolved = _resolve_one(kind, key, entry, registry, problems, family)
        if resolved is not None:
            out.append(resolved)
    return out


def _resolve_one(kind: Kind, key: str, entry: PluginEntry, registry: Registry,
                 problems: list[tuple[str, str]], family: str | None) -> dict[str, Any] | None:
    spec = to_spec(kind, entry.spec(), key)
    assert spec is not None  # "none" entries are dropped before
    found = spec_problems(spec, registry, family)
    if found:
        problems.extend((f"{key}.{sub}", message) for sub, message in found)
        return None
    return flat_spec(build_plugin(spec, registry, family=family))


def _check_layers(recipe: Recipe, problems: list[tuple[str, str]]) -> None:
    """``attention.layers`` against the model's layer names, when its config is at hand."""
    if not recipe.attention.layers:
        return
    from ..engine.attention import layer_problem
    from ..models.identify import denoiser_layers

    processors = denoiser_layers(recipe.model.id)
    if processors is not None and (problem := layer_problem(processors, recipe.attention.layers,
                                                             f"model {recipe.model.id!r}")):
        problems.append(("attention.layers", problem))


def _check_parser(recipe: Recipe, registry: Registry, problems: list[tuple[str, str]]) -> None:
    try:
        cls = registry.get("parser", recipe.parser.name)
    except AttnguideError as exc:
        problems.append(("parser.name", f"{exc} (the losses and callbacks need a parser for bindings)"))
        return
    found = param_problems(f"parser {recipe.parser.name!r}", cls.Params, recipe.parser.params())
    problems.extend((f"parser.{param}", message) for param, message in found)
