"""The plugin-spec model: how a user names a loss or callback, everywhere.

``Engine.generate(losses=[...])``, ``attnguide generate --method/--param``, recipes, sweeps and
toy-world method labels all turn what the user wrote into a ``PluginSpec`` with ``to_spec``,
check it with ``spec_problems`` (one message per mistake, prefixed only by where it was
written) and build the run plugin with ``build_plugin``.

A spec is a registered name, or a mapping ``{"name": ..., "weight": ..., "window": [start,
end], **params}`` (losses; a nested ``params`` mapping is merged under the top-level keys) or
``{"name": ..., **params}`` (callbacks). ``"none"`` (or an empty name) in a loss list means no
guidance and is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import AttnguideError, ConfigError
from .callbacks import Callback
from .losses import LossPlugin, check_weight, check_window
from .manager import Registry
from .params import param_problems

Kind = Literal["loss", "callback"]
NO_GUIDANCE = ("none", "", None)
BASE_KEYS: dict[str, tuple[str, ...]] = {"loss": ("name", "weight", "window", "time_window"), "callback": ("name",)}
"""Spec keys the engine reads itself; every other key of a spec is a plugin parameter."""

RunPlugin = LossPlugin[Any] | Callback[Any]
LossLike = str | Mapping[str, Any] | LossPlugin[Any] | None
"""What ``Engine.generate(losses=[...])`` accepts per loss: a name, a spec mapping, an instance."""
CallbackLike = str | Mapping[str, Any] | Callback[Any]
"""What ``Engine.generate(callbacks=[...])`` accepts per callback."""


@dataclass(frozen=True)
class PluginSpec:
    """One loss or callback of a run as the user named it.

    Attributes:
        kind: ``"loss"`` or ``"callback"``.
        name: the registered plugin name.
        params: the plugin's parameters (validated against its ``Params`` when built).
        weight: a loss's weight in the combined update (1 when unset).
        window: a loss's ``[start, end]`` step window; the plugin's default when ``None``.
        time_window: a loss's ``[low, high]`` window in the scheduler's time (replaces
            ``window``).
    """

    kind: Kind
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    weight: Any = 1.0
    window: Any = None
    time_window: Any = None


def to_spec(kind: Kind, raw: Any, where: str) -> PluginSpec | None:
    """``raw`` (a name or a mapping) as a ``PluginSpec``; ``None`` for "no guidance".

    Raises:
        ConfigError: naming ``where`` (``"losses[0]"``, ``"losses.0"``, ``"--method"``) when
            ``raw`` is neither a name nor a mapping with a ``name``.
    """
    if isinstance(raw, str) or raw is None:
        if kind == "loss" and raw in NO_GUIDANCE:
            return None
        if not raw:
            raise ConfigError(f"{where}: a {kind} needs a registered name")
        return PluginSpec(kind, raw)
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: a {kind} is a registered name, a mapping with 'name', or a plugin "
                          f"instance; got {raw!r}")
    rest = dict(raw)
    if "name" not in rest:
        raise ConfigError(f"{where}: {kind} spec {raw!r} has no 'name'")
    name = rest.pop("name")
    if kind == "loss" and name in NO_GUIDANCE:
        return None
    nested = rest.pop("params", None) or {}
    if not isinstance(nested, Mapping):
        raise ConfigError(f"{where}.params: must be a mapping of parameters, got {nested!r}")
    if kind == "loss":
        weight, window, time_window = rest.pop("weight", 1.0), rest.pop("window", None), rest.pop("time_window", None)
        return PluginSpec(kind, str(name), {**nested, **rest}, weight, window, time_window)
    return PluginSpec(kind, str(name), {**nested, **rest})


def spec_problems(spec: PluginSpec, registry: Registry, family: str | None = None) -> list[tuple[str, str]]:
    """``(key, message)`` for everything wrong with ``spec``: an unknown plugin (``"name"``),
    unknown parameters or invalid values (the parameter's name), a bad weight or window.
    Empty when ``build_plugin`` would succeed. With a model ``family``, the plugin's parameter
    defaults for it apply and a plugin that family cannot run is a problem (``"name"``)."""
    try:
        cls = registry.get(spec.kind, spec.name)
    except AttnguideError as exc:
        return [("name", str(exc))]
    what = f"{spec.kind} plugin {spec.name!r}"
    problems = param_problems(what, cls.Params, with_family_defaults(cls, spec.params, family))
    if family is not None and (unsupported := family_problem(cls, family)):
        problems.insert(0, ("name", unsupported))
    if spec.kind == "loss":
        try:
            check_weight(spec.name, spec.weight)
        except ConfigError as exc:
            problems.append(("weight", str(exc)))
        for key, value in (("window", spec.window), ("time_window", spec.time_window)):
            if value is not None:
                try:
                    check_window(spec.name, value, key)
                except ConfigError as exc:
                    problems.append((key, str(exc)))
        if spec.window is not None and spec.time_window is not None:
            problems.append(("time_window", f"{what}: give window (steps) or time_window (scheduler time), not both"))
    return problems


def build_plugin(spec: PluginSpec, registry: Registry, where: str = "", family: str | None = None) -> RunPlugin:
    """The run plugin for ``spec`` (on a model of ``family`` when given: its parameter defaults
    apply, and a plugin it cannot run is refused); a ``ConfigError`` listing every problem,
    each prefixed with ``where.key``, otherwise."""
    problems = spec_problems(spec, registry, family)
    if problems:
        prefix = f"{where}." if where else ""
        raise ConfigError("; ".join(f"{prefix}{key}: {message}" for key, message in problems))
    cls = registry.get(spec.kind, spec.name)
    params = with_family_defaults(cls, spec.params, family)
    if spec.kind == "loss":
        kwargs = {"time_window": spec.time_window} if spec.time_window is not None else {}
        plugin: RunPlugin = cls(params, weight=float(spec.weight), window=spec.window, **kwargs)
    else:
        plugin = cls(params)
    return plugin


def with_family_defaults(cls: Any, params: dict[str, Any], family: str | None) -> dict[str, Any]:
    """``params`` over the plugin's ``family_defaults`` for ``family`` (explicit values win)."""
    defaults = getattr(cls, "family_defaults", {}).get(family, {}) if family else {}
    return {**defaults, **params}


def family_problem(plugin: Any, family: str) -> str | None:
    """Why ``plugin`` (a class or instance) cannot run on models of ``family``; ``None`` if it can."""
    from ..models.families import CAPABILITIES, PIPELINE_CLASS, missing_capabilities

    missing = missing_capabilities(family, getattr(plugin, "requires", frozenset()))
    if not missing:
        return None
    kind = "loss" if isinstance(plugin, LossPlugin) or (isinstance(plugin, type) and issubclass(plugin, LossPlugin)) else "callback"
    needs = "; ".join(CAPABILITIES.get(c, c) for c in missing)
    return (f"{kind} plugin {plugin.name!r} cannot run on {family} models ({PIPELINE_CLASS[family]}): "
            f"it needs {needs}")


def flat_spec(plugin: RunPlugin) -> dict[str, Any]:
    """A built plugin as one flat spec mapping, every parameter filled in: what resolved
    recipes and image metadata record (``{"name", "weight", "window", **params}`` for a loss)."""
    state = plugin.state_dict()
    return {k: v for k, v in state.items() if k != "params"} | dict(state.get("params", {}))


def build_losses(specs: Sequence[LossLike], registry: Registry, section: str = "losses",
                 family: str | None = None) -> list[LossPlugin[Any]]:
    """Loss instances for ``specs`` (names, mappings or ``LossPlugin`` instances), in order;
    ``"none"`` entries are dropped. Names must be unique in a run. ``family``: see
    ``build_plugin``."""
    return [p for p in _build_all("loss", specs, registry, section, family) if isinstance(p, LossPlugin)]


def build_callbacks(specs: Sequence[CallbackLike], registry: Registry, section: str = "callbacks",
                    family: str | None = None) -> list[Callback[Any]]:
    """Callback instances for ``specs`` (names, mappings or ``Callback`` instances), in order."""
    return [p for p in _build_all("callback", specs, registry, section, family) if isinstance(p, Callback)]


def _build_all(kind: Kind, specs: Sequence[Any], registry: Registry, section: str,
               family: str | None) -> list[RunPlugin]:
    own, other, other_section = (LossPlugin, Callback, "callbacks") if kind == "loss" else (Callback, LossPlugin, "losses")
    out: list[RunPlugin] = []
    for index, raw in enumerate(specs):
        where = f"{section}[{index}]"
        if isinstance(raw, own):
            if family is not None and (unsupported := family_problem(raw, family)):
                raise ConfigError(f"{where}: {unsupported}")
            out.append(raw)
        elif isinstance(raw, other):
            raise ConfigError(f"{where}: {raw.name!r} is not a {kind} plugin; pass it in {other_section}")
        elif (spec := to_spec(kind, raw, where)) is not None:
            out.append(build_plugin(spec, registry, where, family))
    _unique([p.name for p in out], kind)
    return out


def _unique(names: list[str], kind: str) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{kind} plugin(s) {', '.join(dupes)} listed twice in one run; combine their settings")
