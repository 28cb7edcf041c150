"""Recipe checks that need the plugin registry: loss, callback and parser names and parameters.

A loss or callback is resolved to its full settings (every parameter, defaults filled in), so a
resolved recipe and the content hash of its images say exactly what ran.
"""

from __future__ import annotations

import difflib
from typing import Any

import pydantic

from ..errors import AttnguideError, ConfigError, RecipeError
from .schema import PluginEntry, Recipe
from ..plugin.specs import NO_GUIDANCE

BASE_KEYS = {"loss": ("name", "weight", "window"), "callback": ("name",)}
"""Spec keys the engine reads itself; every other key of a spec is a plugin parameter."""


def resolve_plugins(recipe: Recipe, registry: Any, source: str, context: str = "") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Full specs of the recipe's losses and callbacks; a ``RecipeError`` listing every problem."""

    problems: list[tuple[str, str]] = []
    losses = _resolve_all("loss", "losses", recipe.losses, registry, problems)
    callbacks = _resolve_all("callback", "callbacks", recipe.callbacks, registry, problems)
    if losses or callbacks:
        _check_parser(recipe, registry, problems)
    if problems:
        raise RecipeError(source, problems, context)
    return losses, callbacks


def _resolve_all(kind: str, section: str, entries: list[PluginEntry], registry: Any,
                 problems: list[tuple[str, str]]) -> list[dict[str, Any]]:
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
        resolved = _resolve_one(kind, key, entry, registry, problems)
        if resolved is not None:
            out.append(resolved)
    return out


def _resolve_one(kind: str, key: str, entry: PluginEntry, registry: Any,
                 problems: list[tuple[str, str]]) -> dict[str, Any] | None:
    try:
        cls = registry.get(kind, entry.name)
    except AttnguideError as exc:
        problems.append((f"{key}.name", str(exc)))
        return None
    spec = entry.spec()
    params = {k: v for k, v in spec.items() if k not in BASE_KEYS[kind]}
    params = {**(params.pop("params", None) or {}), **params}
    known = list(cls.Params.model_fields)
    bad = _param_problems(cls.Params, params, known, key, f"{kind} plugin {entry.name!r}")
    if bad:
        problems.extend(bad)
        return None
    try:
        if kind == "loss":
            plugin = cls(params, weight=spec["weight"], window=spec.get("window"))
        else:
            plugin = cls(params)
    except ConfigError as exc:
        problems.append((f"{key}.window" if "window" in str(exc) else key, str(exc)))
        return None
    state = plugin.state_dict()
    return {k: v for k, v in state.items() if k != "params"} | state.get("params", {})


def _param_problems(model: type[pydantic.BaseModel], params: dict[str, Any], known: list[str],
                    key: str, what: str) -> list[tuple[str, str]]:
    problems = []
    for name in params:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append((f"{key}.{name}", f"unknown parameter of {what}{hint} "
                                              f"(parameters: {', '.join(known) or 'none'})"))
    if problems:
        return problems
    try:
        model(**params)
    except pydantic.ValidationError as exc:
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            problems.append((f"{key}.{loc}" if loc else key, f"{msg} (got {err.get('input')!r})"))
    return problems


def _check_parser(recipe: Recipe, registry: Any, problems: list[tuple[str, str]]) -> None:
    try:
        cls = registry.get("parser", recipe.parser.name)
    except AttnguideError as exc:
        problems.append(("parser.name", f"{exc} (the losses and callbacks need a parser for bindings)"))
        return
    params_model = getattr(cls, "Params", None)
    if params_model is not None and hasattr(params_model, "model_fields"):
        problems.extend(_param_problems(params_model, recipe.parser.params(), list(params_model.model_fields),
                                        "parser", f"parser {recipe.parser.name!r}"))
