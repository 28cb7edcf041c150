"""The names under which the shipped toy-world models load (``--model toyworld-v2``): a module
without torch, so command-line checks and metric choices can ask ``is_toy_model`` cheaply.

``toyworld`` is the default toy model; ``toyworld-v1`` and ``toyworld-v2`` name each version
(docs/toyworld.md, "Versions"). Values are folders of ``attnguide/toyworld/``.
"""

from __future__ import annotations

TOY_MODELS: dict[str, str] = {"toyworld": "weights", "toyworld-v1": "weights", "toyworld-v2": "weights_v2"}


def is_toy_model(model: str) -> bool:
    """Whether ``model`` names a shipped toy-world model."""
    return model in TOY_MODELS
