"""The one path by which attnguide calls a hook.

``invoke`` calls a hook's implementations in *run order* - the order in which their plugins
were registered, which for a run is the order its losses and callbacks are listed, with
``tryfirst`` implementations moved to the front and ``trylast`` ones to the back (the built-in
latent update is ``trylast``). pluggy itself calls the last-registered plugin first; attnguide
does not, so a recipe's ``losses: [attend_excite, syngen]`` evaluates and logs attend_excite
first, as Lightning calls its callbacks in list order.

Each result comes back with the name of the plugin that returned it, and an exception raised
by a plugin becomes a ``PluginError`` naming the plugin and the hook.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pluggy

from ..errors import PluginError

ArgumentsFor = Callable[[str, dict[str, Any]], Mapping[str, Any]]
"""``(plugin name, keyword arguments) -> keyword arguments`` for that plugin's call."""


def _rank(impl: pluggy.HookImpl) -> int:
    return 0 if impl.tryfirst else 2 if impl.trylast else 1


def run_order(hook: pluggy.HookCaller) -> list[pluggy.HookImpl]:
    """The implementations of ``hook`` in the order ``invoke`` calls them."""
    # pluggy keeps its list in registration order, trylast ones at the front and tryfirst
    # ones at the back, and calls it back to front; a stable sort by rank gives run order.
    return sorted(hook.get_hookimpls(), key=_rank)


def invoke(
    hook: pluggy.HookCaller,
    *,
    firstresult: bool = False,
    arguments_for: ArgumentsFor | None = None,
    where: str = "",
    **kwargs: Any,
) -> list[tuple[str, Any]]:
    """Call every implementation of ``hook`` in run order.

    Args:
        hook: ``pm.hook.<name>``.
        firstresult: stop at the first non-None result.
        arguments_for: gives a plugin its own arguments (``attnguide_loss`` hands each plugin
            a context holding its own state); ``kwargs`` for every plugin otherwise.
        where: appended to error messages (``"at step 3"``).
        kwargs: the hook's arguments by name; each implementation gets those it names.

    Returns:
        ``(plugin name, result)`` for every non-None result, in call order.
    """
    results: list[tuple[str, Any]] = []
    suffix = f" {where}" if where else ""
    for impl in run_order(hook):
        name = impl.plugin_name
        call_kwargs = arguments_for(name, kwargs) if arguments_for is not None else kwargs
        result = _call(hook, impl, call_kwargs, suffix)
        if result is not None:
            results.append((name, result))
            if firstresult:
                break
    return results


def invoke_chain(hook: pluggy.HookCaller, argument: str, value: Any, *, arguments_for: ArgumentsFor | None = None,
                 where: str = "", check: Callable[[str, Any], Any] | None = None, **kwargs: Any) -> Any:
    """Call every implementation of ``hook`` in run order, each with ``argument=value``; a
    non-None result (passed through ``check(plugin name, result)`` when given) is the value the
    next one gets. Returns the last value (``value`` itself when every plugin returned None)."""
    suffix = f" {where}" if where else ""
    for impl in run_order(hook):
        name = impl.plugin_name
        call_kwargs: Mapping[str, Any] = {**kwargs, argument: value}
        if arguments_for is not None:
            call_kwargs = arguments_for(name, dict(call_kwargs))
        result = _call(hook, impl, call_kwargs, suffix)
        if result is not None:
            value = check(name, result) if check is not None else result
    return value


def _call(hook: pluggy.HookCaller, impl: pluggy.HookImpl, kwargs: Mapping[str, Any], suffix: str) -> Any:
    """One implementation's result; its exception as a ``PluginError`` naming plugin and hook."""
    try:
        return impl.function(*[kwargs[arg] for arg in impl.argnames])
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(
            f"plugin {impl.plugin_name!r} failed in hook {hook.name}{suffix}: {type(exc).__name__}: {exc}"
        ) from exc


def has_implementations(hook: pluggy.HookCaller) -> bool:
    """Whether any registered plugin implements ``hook`` (the engine skips work nobody asked for)."""
    return bool(hook.get_hookimpls())


def implementers(hook: pluggy.HookCaller) -> list[str]:
    """Names of the plugins that implement ``hook``, in run order."""
    return [impl.plugin_name for impl in run_order(hook)]


def invoke_first(hook: pluggy.HookCaller, *, where: str = "", **kwargs: Any) -> Any:
    """The first non-None result of ``hook`` in run order (``firstresult`` hooks), or None."""
    results = invoke(hook, firstresult=True, where=where, **kwargs)
    return results[0][1] if results else None
