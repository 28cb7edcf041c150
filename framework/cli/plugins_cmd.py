"""``attnguide plugins [--json]``: every loss, parser and callback with source and parameters."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("plugins", help="list registered loss, parser and callback plugins")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def describe_plugins(pm: Any) -> list[dict[str, Any]]:
    """One dict per registered class: kind, name, registrar, distribution, version, params."""
    from ..plugin.manager import KINDS, distribution_of

    rows = []
    for kind in KINDS:
        for name, cls in sorted(pm.registry.classes[kind].items()):
            dist, version = distribution_of(cls)
            params_model = getattr(cls, "Params", None)
            params = {}
            if params_model is not None and hasattr(params_model, "model_fields"):
                for field, info in params_model.model_fields.items():
                    default = None if info.is_required() else info.get_default(call_default_factory=True)
                    params[field] = {"default": default, "required": info.is_required(),
                                     "type": getattr(info.annotation, "__name__", str(info.annotation))}
            row = {"kind": kind, "name": name, "registered_by": pm.registry.sources[(kind, name)],
                   "distribution": dist, "version": version, "params": params,
                   "doc": (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""}
            if hasattr(cls, "default_window"):
                row["default_window"] = list(cls.default_window)
            if kind != "parser":
                row["hooks"] = run_hooks(cls)
            rows.append(row)
    return rows


def run_hooks(cls: Any) -> list[str]:
    """The run hooks ``cls`` implements (a loss plugin implements ``attnguide_loss``)."""
    from ..plugin.hookspecs import RUN_HOOKS
    from ..plugin.losses import LossPlugin

    own = [h for h in RUN_HOOKS if callable(getattr(cls, h, None))]
    if isinstance(cls, type) and issubclass(cls, LossPlugin) and "attnguide_loss" not in own:
        own.append("attnguide_loss")
    return own


def run(args: argparse.Namespace) -> int:
    from ..plugin.manager import make_plugin_manager

    rows = describe_plugins(make_plugin_manager())
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    for row in rows:
        print(f"{row['kind']:<9} {row['name']:<16} {row['distribution']} {row['version']}  {row['doc']}")
        for field, info in row["params"].items():
            print(f"{'':<27}{field} = {info['default']!r}")
    return 0
