"""attnguide: test-time attention guidance for text-to-image diffusion models.

The public API: build an ``Engine`` over a diffusers pipeline, ``generate`` with chosen loss
plugins, read back images, attention maps and per-step losses from the result.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "Callback",
    "Engine",
    "GenerationResult",
    "LossParams",
    "LossPlugin",
    "LossTerm",
    "SamplingConfig",
    "hookimpl",
    "load_pipeline",
    "make_plugin_manager",
    "tiny_pipeline",
]

_LAZY = {
    "Engine": "attnguide.engine.engine",
    "GenerationResult": "attnguide.engine.engine",
    "Callback": "attnguide.plugin.callbacks",
    "LossParams": "attnguide.plugin.losses",
    "LossPlugin": "attnguide.plugin.losses",
    "LossTerm": "attnguide.types",
    "SamplingConfig": "attnguide.engine.sampling",
    "hookimpl": "attnguide.plugin.hookspecs",
    "load_pipeline": "attnguide.models.loading",
    "make_plugin_manager": "attnguide.plugin.manager",
    "tiny_pipeline": "attnguide.models.tiny",
}


def __getattr__(name: str) -> Any:
    """Import heavy modules (torch, diffusers) only when their names are used."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'attnguide' has no attribute {name!r}")
