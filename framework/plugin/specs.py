"""Turn user-facing plugin specs (names, dicts, instances) into run plugin instances."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .callbacks import Callback
from ..errors import ConfigError
from .losses import LossPlugin
from .manager import Registry

NO_GUIDANCE = ("none", "", None)


def _split(spec: Any, kind: str) -> tuple[str, dict[str, Any]]:
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, dict):
        if "name" not in spec:
            raise ConfigError(f"{kind} spec {spec!r} has no 'name'")
        rest = dict(spec)
        return str(rest.pop("name")), rest
    raise ConfigError(f"{kind} spec must be a name, a dict with 'name', or a plugin instance; got {spec!r}")


def build_losses(specs: Sequence[Any], registry: Registry) -> list[LossPlugin]:
    """Instances for ``specs``; ``"none"`` entries are dropped. Names must be unique in a run."""
    out: list[LossPlugin] = []
    for spec in specs:
        if isinstance(spec, LossPlugin):
            out.append(spec)
            continue
        if spec in NO_GUIDANCE:
            continue
        name, rest = _split(spec, "loss")
        if name in NO_GUIDANCE:
            continue
        cls = registry.get("loss", name)
        weight = rest.pop("weight", 1.0)
        window = rest.pop("window", None)
        params = rest.pop("params", {}) | rest
        out.append(cls(params, weight=weight, window=window))
    _unique([p.name for p in out], "loss")
    return out


def build_callbacks(specs: Sequence[Any], registry: Registry) -> list[Callback]:
    out: list[Callback] = []
    for spec in specs:
        if isinstance(spec, Callback):
            out.append(spec)
            continue
        name, rest = _split(spec, "callback")
        cls = registry.get("callback", name)
        out.append(cls(rest.pop("params", {}) | rest))
    _unique([c.name for c in out], "callback")
    return out


def _unique(names: list[str], kind: str) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{kind} plugin(s) {', '.join(dupes)} listed twice in one run; combine their settings")
