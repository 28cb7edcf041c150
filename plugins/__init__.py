"""The built-in plugins of attnguide, handed to the plugin manager by this registrar module."""

from __future__ import annotations

from attnguide import hookimpl

from .astar import AStarLoss
from .attend_excite import AttendExciteLoss
from .entropy_syngen import EntropySynGenLoss
from .syngen import SynGenLoss


@hookimpl
def attnguide_register_losses() -> list[type]:
    return [SynGenLoss, EntropySynGenLoss, AttendExciteLoss, AStarLoss]


@hookimpl
def attnguide_register_callbacks() -> list[type]:
    from .heatmaps import HeatmapCallback

    return [HeatmapCallback]
