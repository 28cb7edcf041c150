"""The built-in plugins of attnguide, handed to the plugin manager by this registrar module."""

from __future__ import annotations

from attnguide.plugin.hookspecs import hookimpl
from attnguide.plugins.astar import AStarLoss
from attnguide.plugins.attend_excite import AttendExciteLoss
from attnguide.plugins.entropy_syngen import EntropySynGenLoss
from attnguide.plugins.syngen import SynGenLoss


@hookimpl
def attnguide_register_losses() -> list[type]:
    return [SynGenLoss, EntropySynGenLoss, AttendExciteLoss, AStarLoss]


@hookimpl
def attnguide_register_callbacks() -> list[type]:
    from attnguide.plugins.heatmaps import HeatmapCallback

    return [HeatmapCallback]
