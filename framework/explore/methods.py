"""The methods the page offers: every registered loss and intervention callback, with the
parameters of its ``Params`` model (default, type, description)."""

from __future__ import annotations

import json
from typing import Any

OBSERVERS = ("heatmaps",)
"""Callbacks that only watch a run: not methods (the page adds ``heatmaps`` itself)."""


def describe_methods(registry: Any) -> list[dict[str, Any]]:
    """``[{"name", "kind", "doc", "params": {field: {"default", "type", "description",
    "required"}}, "default_window"?}]``: ``none`` first, then losses, then intervention
    callbacks, each sorted by name. Defaults are JSON values (tuples become lists)."""
    rows: list[dict[str, Any]] = [{"name": "none", "kind": "none", "doc": "no guidance: the model's own sampling",
                                   "params": {}}]
    for kind in ("loss", "callback"):
        for name, cls in sorted(registry.classes[kind].items()):
            if kind == "callback" and (name in OBSERVERS or name in registry.classes["loss"]):
                continue
            row: dict[str, Any] = {"name": name, "kind": kind, "doc": _first_line(cls.__doc__),
                                   "params": params_of(cls)}
            if hasattr(cls, "default_window"):
                row["default_window"] = list(cls.default_window)
            rows.append(row)
    return rows


def params_of(cls: Any) -> dict[str, dict[str, Any]]:
    """The fields of ``cls.Params`` as ``{name: {"default", "type", "description", "required"}}``."""
    model = getattr(cls, "Params", None)
    out: dict[str, dict[str, Any]] = {}
    for field, info in getattr(model, "model_fields", {}).items():
        required = info.is_required()
        default = None if required else info.get_default(call_default_factory=True)
        out[field] = {
            "default": _json_value(default),
            "type": getattr(info.annotation, "__name__", str(info.annotation)).replace("typing.", ""),
            "description": info.description or "",
            "required": required,
        }
    return out


def _json_value(value: Any) -> Any:
    """``value`` as JSON would carry it (tuples -> lists, dict keys -> strings)."""
    return json.loads(json.dumps(value, default=str))


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if doc and doc.strip() else ""
