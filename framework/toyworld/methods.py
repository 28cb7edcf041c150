"""The toy-world evaluation's named methods, in a module of their own so that ``attnguide
toyworld evaluate --help`` can show the default list without importing torch
(``attnguide.toyworld.evaluate`` re-exports both names)."""

from __future__ import annotations

from typing import Any

METHODS: dict[str, list[dict[str, Any]]] = {
    "none": [],
    "syngen": [{"name": "syngen"}],
    "entropy_syngen": [{"name": "entropy_syngen", "unrelated_entropy": "as_written"}],
    "entropy_syngen_diffuse": [{"name": "entropy_syngen", "unrelated_entropy": "diffuse"}],
    "attend_excite": [{"name": "attend_excite"}],
    "astar": [{"name": "astar"}],
}
"""Method name -> the losses it runs, each with the plugin's defaults (the papers' settings).
Any other registered loss plugin name is accepted too and runs with its defaults."""
DEFAULT_METHODS = tuple(METHODS)
