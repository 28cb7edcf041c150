"""attnguide: test-time attention guidance for text-to-image diffusion models.

The public API: build an ``Engine`` over a diffusers pipeline, ``generate`` with chosen loss
plugins, read back images, attention maps and per-step losses from the result; write plugins
by subclassing ``LossPlugin``, ``Callback`` or ``Parser``. Test helpers for plugin authors live
in ``attnguide.testing``.

Heavy modules (torch, diffusers) are imported when a name is first used, so ``attnguide
--help`` stays fast; the ``TYPE_CHECKING`` imports below give type checkers and editors the
same names.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import AttnguideError, ConfigError, ModelLoadError, ParserError, PluginError, RecipeError

if TYPE_CHECKING:
    from .engine.engine import Engine, GenerationResult
    from .engine.requests import MapRequest
    from .engine.runtime import RuntimeConfig
    from .engine.sampling import SamplingConfig
    from .engine.state import ImageRecord, RunState
    from .models.loading import load_pipeline
    from .models.tiny import tiny_pipeline
    from .plugin.callbacks import Callback, CallbackParams
    from .plugin.hookspecs import hookimpl
    from .plugin.losses import LossParams, LossPlugin
    from .plugin.manager import make_plugin_manager
    from .prompts.parsing import Parser
    from .types import (
        AttentionContext,
        AttentionEdit,
        EmbeddingContext,
        GuidanceContext,
        LossRecord,
        LossTerm,
        NoiseContext,
        PromptAnalysis,
    )

__version__ = "0.1.0"

__all__ = [
    "AttentionContext",
    "AttentionEdit",
    "AttnguideError",
    "Callback",
    "CallbackParams",
    "ConfigError",
    "EmbeddingContext",
    "Engine",
    "GenerationResult",
    "GuidanceContext",
    "ImageRecord",
    "LossParams",
    "LossPlugin",
    "LossRecord",
    "LossTerm",
    "MapRequest",
    "ModelLoadError",
    "NoiseContext",
    "Parser",
    "ParserError",
    "PluginError",
    "PromptAnalysis",
    "RecipeError",
    "RunState",
    "RuntimeConfig",
    "SamplingConfig",
    "hookimpl",
    "load_pipeline",
    "make_plugin_manager",
    "tiny_pipeline",
]

_LAZY = {
    "Engine": ".engine.engine",
    "GenerationResult": ".engine.engine",
    "RuntimeConfig": ".engine.runtime",
    "SamplingConfig": ".engine.sampling",
    "ImageRecord": ".engine.state",
    "RunState": ".engine.state",
    "MapRequest": ".engine.requests",
    "load_pipeline": ".models.loading",
    "tiny_pipeline": ".models.tiny",
    "Callback": ".plugin.callbacks",
    "CallbackParams": ".plugin.callbacks",
    "hookimpl": ".plugin.hookspecs",
    "LossParams": ".plugin.losses",
    "LossPlugin": ".plugin.losses",
    "make_plugin_manager": ".plugin.manager",
    "Parser": ".prompts.parsing",
    "GuidanceContext": ".types",
    "LossRecord": ".types",
    "LossTerm": ".types",
    "PromptAnalysis": ".types",
    "AttentionContext": ".types",
    "AttentionEdit": ".types",
    "EmbeddingContext": ".types",
    "NoiseContext": ".types",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module when the name is first used."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'attnguide' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
