"""Helpers for recipe tests: write a recipe, skip only when a needed plugin is not registered."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import yaml

# Tiny model, two steps, 128 px (16x16 latents: the tiny UNet's 16x16 cross-attention layers
# are there, so guidance runs): a job takes about a second on a CPU.
TINY_FAST = {
    "model": "tiny",
    "runtime": {"accelerator": "cpu", "devices": 1},
    "sampling": {"steps": 2, "guidance_scale": 7.5, "height": 128, "width": 128},
    "attention": {"resolution": 16},
}


def write_recipe(folder: Path, data: dict[str, Any] | str, name: str = "recipe.yaml") -> Path:
    path = folder / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def tiny_recipe(out: Path, **keys: Any) -> dict[str, Any]:
    return {"name": "t", **TINY_FAST, "prompts": ["a red cube"], "seeds": [0], "output_dir": str(out), **keys}


@functools.lru_cache(maxsize=1)
def registry() -> Any:
    from attnguide.plugin.manager import make_plugin_manager

    return make_plugin_manager().registry


def plugins_in(raw: Any) -> set[tuple[str, str]]:
    """``(kind, name)`` of every loss, callback and (when one is used) parser in a raw recipe,
    the sweep's values included."""
    found: set[tuple[str, str]] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                kind = {"losses": "loss", "callbacks": "callback"}.get(str(key))
                if kind and isinstance(value, list):
                    for entry in value:
                        name = entry if isinstance(entry, str) else (entry or {}).get("name")
                        if name and name != "none":
                            found.add((kind, name))
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(raw)
    if found:
        parser = raw.get("parser", "spacy") if isinstance(raw, dict) else "spacy"
        found.add(("parser", parser if isinstance(parser, str) else (parser or {}).get("name", "spacy")))
    return found


def skip_unless_registered(needed: set[tuple[str, str]]) -> None:
    """Skip (naming them) when plugins the test needs are not registered yet - and only then."""
    reg = registry()
    missing = sorted(f"{kind} {name!r}" for kind, name in needed if name not in reg.classes[kind])
    if missing:
        pytest.skip(f"plugin not registered: {', '.join(missing)}")
