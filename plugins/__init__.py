"""The built-in plugins of attnguide, handed to the plugin manager by this registrar module."""

from __future__ import annotations

from attnguide import hookimpl

from .astar import AStarLoss
from .attend_excite import AttendExciteLoss
from .conform import ConformLoss
from .divide_bind import DivideBindLoss
from .entropy_syngen import EntropySynGenLoss
from .initno import InitNOLoss
from .predicated import PredicatedLoss
from .syngen import SynGenLoss
from .tome import ToMeLoss


@hookimpl
def attnguide_register_losses() -> list[type]:
    return [SynGenLoss, EntropySynGenLoss, AttendExciteLoss, AStarLoss, PredicatedLoss, ConformLoss, DivideBindLoss, InitNOLoss, ToMeLoss]


@hookimpl
def attnguide_register_callbacks() -> list[type]:
    from .heatmaps import HeatmapCallback
    from .structure_diffusion import StructureDiffusion

    return [HeatmapCallback, StructureDiffusion]
