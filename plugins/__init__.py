"""The built-in plugins of attnguide, handed to the plugin manager by this registrar module."""

from __future__ import annotations

from attnguide import hookimpl

from .astar import AStarLoss
from .attend_excite import AttendExciteLoss
from .conform import ConformLoss
from .divide_bind import DivideBindLoss
from .entropy_syngen import EntropySynGenLoss
from .predicated import PredicatedLoss
from .syngen import SynGenLoss


@hookimpl
def attnguide_register_losses() -> list[type]:
    return [SynGenLoss, EntropySynGenLoss, AttendExciteLoss, AStarLoss, PredicatedLoss, ConformLoss, DivideBindLoss]


@hookimpl
def attnguide_register_callbacks() -> list[type]:
    from .heatmaps import HeatmapCallback

    return [HeatmapCallback]
