"""Validation of plugin parameters, shared by loss, callback and parser plugins."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import pydantic

from ..errors import ConfigError

P = TypeVar("P", bound=pydantic.BaseModel)


def validate_plugin_params(kind: str, name: str, model: type[P], params: Mapping[str, Any] | pydantic.BaseModel | None) -> P:
    """``params`` as an instance of ``model``; otherwise a ``ConfigError`` naming the plugin
    (``kind``: "loss plugin", "callback plugin", "parser"),
    every bad parameter, and the known ones."""
    if isinstance(params, model):
        return params
    if isinstance(params, pydantic.BaseModel):
        params = params.model_dump()
    try:
        return model.model_validate(dict(params or {}))
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"parameter {'.'.join(str(p) for p in err['loc']) or 'params'!r}: {err['msg']}" for err in exc.errors()
        )
        known = ", ".join(model.model_fields) or "none"
        raise ConfigError(f"{kind} {name!r}: {problems} (known parameters: {known})") from None
