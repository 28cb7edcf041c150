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
        try:
            result = impl.function(*[call_kwargs[arg] for arg in impl.argnames])
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(
                f"plugin {name!r} failed in hook {hook.name}{suffix}: {type(exc).__name__}: {exc}"
            ) from exc
        if result is not None:
            results.append((name, result))
            if firstresult:
                break
    return results


def invoke_first(hook: pluggy.HookCaller, *, where: str = "", **kwargs: Any) -> Any:
    """The first non-None result of ``hook`` in run order (``firstresult`` hooks), or None."""
    results = invoke(hook, firstresult=True, where=where, **kwargs)
    return results[0][1] if results else None
