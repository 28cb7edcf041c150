"""Validation of plugin parameters, shared by loss, callback and parser plugins.

One message per mistake, wherever the parameters come from (a constructor, ``Engine.generate``,
``--param``, a recipe or a sweep): ``param_problems`` words them, the callers only prefix where
the value came from.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, TypeVar

import pydantic

from ..errors import ConfigError

M = TypeVar("M", bound=pydantic.BaseModel)


def param_problems(what: str, model: type[pydantic.BaseModel], params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(parameter, message)`` for every unknown parameter of ``params`` (with the closest
    known name) or, when all are known, for every invalid value. ``what`` names the plugin:
    ``"loss plugin 'syngen'"``. Empty when ``params`` validates."""
    known = list(model.model_fields)
    problems: list[tuple[str, str]] = []
    for key in params:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append((str(key), f"{what} has no parameter {key!r}{hint} (parameters: {', '.join(known) or 'none'})"))
    if problems:
        return problems
    try:
        model.model_validate(dict(params))
    except pydantic.ValidationError as exc:
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            problems.append((loc, f"{what}: parameter {loc!r}: {msg} (got {err.get('input')!r})"))
    return problems


def validate_plugin_params(kind: str, name: str, model: type[M], params: Mapping[str, Any] | pydantic.BaseModel | None) -> M:
    """``params`` as an instance of ``model``; otherwise a ``ConfigError`` naming the plugin
    (``kind``: "loss plugin", "callback plugin", "parser"), every bad parameter, and the
    known ones."""
    if isinstance(params, model):
        return params
    if isinstance(params, pydantic.BaseModel):
        params = params.model_dump()
    problems = param_problems(f"{kind} {name!r}", model, dict(params or {}))
    if problems:
        raise ConfigError("; ".join(message for _, message in problems))
    return model.model_validate(dict(params or {}))
