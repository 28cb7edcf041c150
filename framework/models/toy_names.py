"""The names under which the shipped toy-world models load: a module without torch, so
command-line checks and metric choices can ask ``is_toy_model`` cheaply.

``toyworld`` is the default toy model; ``toyworld-v1`` names version 1 explicitly, so that
commands and tables stay comparable when a later version becomes the default (docs/toyworld.md,
"Versions"). Values are folders of ``attnguide/toyworld/``.
"""

from __future__ import annotations

TOY_MODELS: dict[str, str] = {"toyworld": "weights", "toyworld-v1": "weights"}


def is_toy_model(model: str) -> bool:
    """Whether ``model`` names a shipped toy-world model."""
    return model in TOY_MODELS
