"""Deferred imports of the heavy numerical modules: ``from attnguide.lazy import torch, F``.

Importing torch costs about 2.5 s on a small CPU machine, and every built-in plugin module is
imported when the plugin registry is built - also by ``attnguide validate``, ``plugins`` and
``parse``, which never touch a tensor. A module imported through ``lazy_import`` is a stand-in
that imports the real module the first time one of its attributes is read and forwards every
attribute read to it after that, so a plugin module can be imported (its ``Params`` model read,
its name registered) without loading torch. Type checkers see the real modules.

Nothing in ``sys.modules`` is replaced: code elsewhere that runs ``import torch`` gets the real
module as usual.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

__all__ = ["F", "lazy_import", "np", "torch"]


class _Deferred(ModuleType):
    """A module stand-in whose attribute reads go to the real module, imported on first use."""

    def __init__(self, name: str) -> None:
        super().__init__(name, f"deferred import of {name}")
        self._attnguide_target: ModuleType | None = None

    def _attnguide_load(self) -> ModuleType:
        target = self.__dict__["_attnguide_target"]
        if not isinstance(target, ModuleType):
            target = importlib.import_module(self.__name__)
            self.__dict__["_attnguide_target"] = target
        return target

    def __getattr__(self, attr: str) -> Any:
        # Called only for names missing from this stand-in's own ``__dict__``: every name of
        # the real module, read afresh each time so later changes to it are seen.
        return getattr(self._attnguide_load(), attr)

    def __dir__(self) -> list[str]:
        return dir(self._attnguide_load())


def lazy_import(name: str) -> ModuleType:
    """A stand-in for module ``name`` (dotted names allowed) that imports it on first use.

    An unknown name fails at first use with the ``ModuleNotFoundError`` a plain import gives.
    """
    return _Deferred(name)


if TYPE_CHECKING:
    import numpy as np
    import torch
    import torch.nn.functional as F
else:
    torch = lazy_import("torch")
    F = lazy_import("torch.nn.functional")
    np = lazy_import("numpy")
