"""Plugin manager factory and the registry of loss, parser and callback classes.

No import-time global: ``make_plugin_manager()`` builds a manager, registers the built-in
registrars from an explicit tuple, then third parties from the ``attnguide`` entry-point group
(unless ``ATTNGUIDE_DISABLE_PLUGIN_AUTOLOAD=1``), and validates every hook implementation.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as metadata
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from ..errors import PluginError

ENTRY_POINT_GROUP = "attnguide"
DISABLE_AUTOLOAD_ENV = "ATTNGUIDE_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN_REGISTRARS: tuple[str, ...] = ("attnguide.plugins", "attnguide.parsers")
KINDS = ("loss", "parser", "callback")


@dataclass
class Registry:
    """Plugin classes by kind and registered name, with where each came from."""

    classes: dict[str, dict[str, type]] = field(default_factory=lambda: {k: {} for k in KINDS})
    sources: dict[tuple[str, str], str] = field(default_factory=dict)

    def add(self, kind: str, cls: type, source: str) -> None:
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

    def get(self, kind: str, name: str) -> type:
        """The class registered as ``name``; a message listing the known names otherwise."""
        known = self.classes[kind]
        if name in known:
            return known[name]
        close = difflib.get_close_matches(name, list(known), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        names = ", ".join(sorted(known)) or "none"
        raise PluginError(f"unknown {kind} plugin {name!r}.{hint} Registered: {names}")

    def names(self, kind: str) -> list[str]:
        return sorted(self.classes[kind])


class AttnguidePluginManager(pluggy.PluginManager):
    """A pluggy manager with the attnguide hook specification and a class registry."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.registry = Registry()

    def register_checked(self, plugin: object, name: str | None = None) -> str:
        """Register ``plugin``; a misspelled hook or argument is a ``PluginError`` naming
        the plugin, the hook and the argument."""
        label = name or getattr(plugin, "__name__", None) or type(plugin).__qualname__
        try:
            registered = self.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            detail = " ".join(str(exc).split())
            raise PluginError(f"plugin {label!r} is invalid: {detail}") from None
        except ValueError as exc:
            raise PluginError(f"plugin {label!r} cannot be registered: {exc}") from None
        _check_hook_names(plugin, label)
        return registered or label

    def collect_classes(self) -> None:
        """Ask every registrar for its classes and fill ``registry``."""
        self.registry = Registry()
        for kind, hook in (
            ("loss", self.hook.attnguide_register_losses),
            ("parser", self.hook.attnguide_register_parsers),
            ("callback", self.hook.attnguide_register_callbacks),
        ):
            for impl in hook.get_hookimpls():  # registration order: built-ins first
                source = impl.plugin_name
                try:
                    classes = impl.function()
                except Exception as exc:
                    raise PluginError(f"plugin {source!r} failed in hook {hook.name}: {exc}") from exc
                for cls in classes or ():
                    self.registry.add(kind, cls, source)


def _check_hook_names(plugin: object, label: str) -> None:
    """Reject hook implementations whose name matches no specification."""
    known = set(hookspecs.HOOK_NAMES)
    for attr in dir(plugin):
        if attr.startswith("_"):
            continue
        func = getattr(plugin, attr, None)
        if func is None or not hasattr(func, f"{hookspecs.PROJECT}_impl"):
            continue
        if attr not in known:
            close = difflib.get_close_matches(attr, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise PluginError(f"plugin {label!r} implements unknown hook {attr!r}{hint}")


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


def run_plugin_manager(plugins: Iterable[tuple[str, object]]) -> pluggy.PluginManager:
    """A fresh manager holding only one run's loss and callback instances (plus defaults)."""
    from ..engine import update as defaults

    pm = AttnguidePluginManager()
    pm.register_checked(defaults, name="attnguide.engine.update")
    for name, plugin in plugins:
        pm.register_checked(plugin, name=name)
    return pm


def call_each(hook: Any, **kwargs: Any) -> list[tuple[str, Any]]:
    """Call every implementation of ``hook`` in pluggy's order, collecting
    ``(plugin name, result)`` for non-None results; an exception becomes a ``PluginError``
    naming the plugin and the hook."""
    results: list[tuple[str, Any]] = []
    for impl in reversed(hook.get_hookimpls()):
        args = [kwargs[name] for name in impl.argnames]
        try:
            result = impl.function(*args)
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(
                f"plugin {impl.plugin_name!r} failed in hook {hook.name}: {type(exc).__name__}: {exc}"
            ) from exc
        if result is not None:
            results.append((impl.plugin_name, result))
    return results


def call_first(hook: Any, **kwargs: Any) -> Any:
    """Like ``call_each`` but stop at the first non-None result (firstresult hooks)."""
    for impl in reversed(hook.get_hookimpls()):
        args = [kwargs[name] for name in impl.argnames]
        try:
            result = impl.function(*args)
        except Exception as exc:
            raise PluginError(
                f"plugin {impl.plugin_name!r} failed in hook {hook.name}: {type(exc).__name__}: {exc}"
            ) from exc
        if result is not None:
            return result
    return None
