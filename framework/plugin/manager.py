"""Plugin manager factory and the registry of loss, parser and callback classes.

No import-time global: ``make_plugin_manager()`` builds a manager, registers the built-in
registrars from an explicit tuple, then third parties from the ``attnguide`` entry-point group
(unless ``ATTNGUIDE_DISABLE_PLUGIN_AUTOLOAD=1``), and validates every hook implementation.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as metadata
import inspect
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import pluggy

from ..errors import PluginError
from . import hookspecs
from .dispatch import invoke

ENTRY_POINT_GROUP = "attnguide"
DISABLE_AUTOLOAD_ENV = "ATTNGUIDE_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN_REGISTRARS: tuple[str, ...] = ("attnguide.plugins", "attnguide.parsers")
KINDS = ("loss", "parser", "callback")


@dataclass
class Registry:
    """Plugin classes by kind and registered name, with where each came from."""

    classes: dict[str, dict[str, type[Any]]] = field(default_factory=lambda: {k: {} for k in KINDS})
    sources: dict[tuple[str, str], str] = field(default_factory=dict)

    def add(self, kind: str, cls: type[Any], source: str) -> None:
        name = getattr(cls, "name", "")
        if not isinstance(name, str) or not name:
            raise PluginError(f"{kind} plugin class {cls.__qualname__} from {source} has no 'name'")
        if name in self.classes[kind]:
            raise PluginError(
                f"duplicate {kind} plugin name {name!r}: registered by "
                f"{self.sources[(kind, name)]} and again by {source}"
            )
        self.classes[kind][name] = cls
        self.sources[(kind, name)] = source

    def get(self, kind: str, name: str) -> type[Any]:
        """The class registered as ``name``; a message listing the known names otherwise."""
        known = self.classes[kind]
        if name in known:
            return known[name]
        close = difflib.get_close_matches(name, list(known), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        names = ", ".join(sorted(known)) or "none"
        raise PluginError(f"unknown {kind} plugin {name!r}.{hint} Registered: {names}")

    def names(self, kind: str) -> list[str]:
        """Registered names of ``kind``, sorted."""
        return sorted(self.classes[kind])


Role = Literal["registrar", "run"]

_PLAIN_OPTS: dict[str, Any] = dict(getattr(hookspecs.hookimpl(lambda: None), f"{hookspecs.PROJECT}_impl"))
"""The options of a bare ``@hookimpl``: what an unmarked method named like a hook gets."""


class AttnguidePluginManager(pluggy.PluginManager):
    """A pluggy manager with the attnguide hook specification and a class registry.

    A function or method named exactly like a hook implements it, marked or not (as pytest
    treats ``pytest_*`` functions), so a ``Callback`` written the Lightning way is called.
    """

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.registry = Registry()

    def parse_hookimpl_opts(self, plugin: object, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name in hookspecs.HOOK_NAMES and _is_function(plugin, name):
            return dict(_PLAIN_OPTS)
        return opts

    def register_checked(self, plugin: object, name: str | None = None, *, role: Role = "registrar") -> str:
        """Register ``plugin`` as a registrar (module handing over classes) or a run plugin
        (a run's loss or callback instance). Whatever attnguide would never call is refused
        with a ``PluginError`` naming the plugin: an unknown or misspelled hook or argument, a
        wrapper, a run hook on a registrar, a registrar hook on a run plugin."""
        label = name or getattr(plugin, "__name__", None) or type(plugin).__qualname__
        _check_hook_names(plugin, label, role)
        try:
            registered = self.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            detail = " ".join(str(exc).split())
            raise PluginError(f"plugin {label!r} is invalid: {detail}") from None
        except ValueError as exc:
            raise PluginError(f"plugin {label!r} cannot be registered: {exc}") from None
        return registered or label

    def collect_classes(self) -> None:
        """Ask every registrar for its classes and fill ``registry`` (built-ins first)."""
        self.registry = Registry()
        for kind, hook in (
            ("loss", self.hook.attnguide_register_losses),
            ("parser", self.hook.attnguide_register_parsers),
            ("callback", self.hook.attnguide_register_callbacks),
        ):
            for source, classes in invoke(hook):
                if not isinstance(classes, (list, tuple)):
                    raise PluginError(
                        f"plugin {source!r}: hook {hook.name} must return a list of classes, "
                        f"got {type(classes).__name__}"
                    )
                for cls in classes:
                    self.registry.add(kind, cls, source)


def _is_function(plugin: object, name: str) -> bool:
    value = inspect.getattr_static(plugin, name, None)
    if isinstance(value, (staticmethod, classmethod)):
        return True
    return inspect.isfunction(value) or inspect.ismethod(value)


def _check_hook_names(plugin: object, label: str, role: Role) -> None:
    """Refuse hook-like names that attnguide would never call."""
    registrar_hooks, run_hooks = set(hookspecs.REGISTRAR_HOOKS), set(hookspecs.RUN_HOOKS)
    for attr in dir(plugin):
        if attr.startswith("_") or not _is_function(plugin, attr):
            continue
        opts: dict[str, Any] | None = getattr(getattr(plugin, attr, None), f"{hookspecs.PROJECT}_impl", None)
        marked = opts is not None
        if opts is not None and (opts.get("wrapper") or opts.get("hookwrapper")):
            raise PluginError(
                f"plugin {label!r}: hook {attr} is marked as a wrapper; attnguide calls every hook "
                "directly and runs no wrappers. Implement it as a plain hook (to act around a "
                "step, use on_step_start and on_step_end)"
            )
        if role == "registrar" and attr in run_hooks:
            raise PluginError(
                f"plugin {label!r} implements run hook {attr!r} at registrar level, where it would "
                "never be called: run hooks are called on the loss and callback instances of a run. "
                "Put it on a Callback (or LossPlugin) class and return that class from "
                "attnguide_register_callbacks (or attnguide_register_losses)"
            )
        if role == "run" and attr in registrar_hooks:
            raise PluginError(
                f"plugin {label!r} implements registrar hook {attr!r} on a run plugin, where it "
                "would never be called: registrar hooks belong in the module named by the "
                "'attnguide' entry point"
            )
        hook_like = attr.startswith(("on_", f"{hookspecs.PROJECT}_"))
        if attr not in hookspecs.HOOK_NAMES and (marked or hook_like):
            close = difflib.get_close_matches(attr, sorted(hookspecs.HOOK_NAMES), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise PluginError(
                f"plugin {label!r} implements unknown hook {attr!r}{hint} "
                "(names starting 'on_' or 'attnguide_' are reserved for hooks; rename a helper "
                "with a leading underscore)"
            )


def make_plugin_manager(
    *, autoload: bool | None = None, extra: Iterable[tuple[str, object]] = ()
) -> AttnguidePluginManager:
    """Build a plugin manager with the built-ins, entry-point plugins and ``extra``.

    Args:
        autoload: load the ``attnguide`` entry-point group; default: unless the environment
            sets ``ATTNGUIDE_DISABLE_PLUGIN_AUTOLOAD=1``.
        extra: ``(name, plugin)`` pairs to register as well (tests, notebooks).
    """
    pm = AttnguidePluginManager()
    for module_name in BUILTIN_REGISTRARS:
        pm.register_checked(importlib.import_module(module_name), name=module_name)
    if autoload is None:
        autoload = os.environ.get(DISABLE_AUTOLOAD_ENV, "") not in ("1", "true", "yes")
    if autoload:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(f"entry point {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
            pm.register_checked(plugin, name=ep.name)
    for name, plugin in extra:
        pm.register_checked(plugin, name=name)
    pm.collect_classes()
    return pm


def distribution_of(obj: Any) -> tuple[str, str]:
    """``(distribution, version)`` that ships the module of ``obj``, or ``("-", "-")``."""
    top = type(obj).__module__ if not isinstance(obj, type) else obj.__module__
    top = top.split(".")[0]
    for dist in metadata.packages_distributions().get(top, []):
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "-", "-"


def run_plugin_manager(plugins: Iterable[tuple[str, object]]) -> AttnguidePluginManager:
    """A fresh manager holding one run's loss and callback instances, in the run's order,
    and the built-in latent update (``trylast``)."""
    from ..engine import update

    pm = AttnguidePluginManager()
    pm.register_checked(update, name=update.DEFAULT_UPDATE, role="run")
    for name, plugin in plugins:
        pm.register_checked(plugin, name=name, role="run")
    return pm
