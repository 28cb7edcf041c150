"""Heat-map sheets with their colour scale: the ``heatmaps`` callback's sheet plus a colour bar.

The callback scales every map to its own minimum and maximum before colouring, so the colours
of two maps are not comparable in absolute terms; the bar says so, and gives the raw attention
range of the sheet's maps (from ``<name>.maps.safetensors``) where the run saved them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

STRIP_WIDTH = 150
BAR_WIDTH = 18
MARGIN = 16


@dataclass(frozen=True)
class MapRange:
    """Smallest and largest raw attention value over all maps of one sheet."""

    low: float
    high: float


def map_range(path: Path) -> MapRange | None:
    """The raw value range of a ``maps.safetensors`` (tensors ``[words, H, W]`` per step); None
    when the file is missing, unreadable or empty."""
    from safetensors.numpy import load_file

    try:
        maps = load_file(str(path))
    except (OSError, ValueError, RuntimeError):
        return None
    values = [m for m in maps.values() if m.size]
    if not values:
        return None
    return MapRange(float(min(v.min() for v in values)), float(max(v.max() for v in values)))


def colour_bar(height: int) -> Image.Image:
    """``[height, BAR_WIDTH]`` RGB gradient of the callback's colour map, 1 at the top."""
    from attnguide.plugins.heatmaps import colorize

    ramp = np.linspace(1.0, 0.0, height, dtype=np.float32)[:, None].repeat(BAR_WIDTH, axis=1)
    return Image.fromarray(colorize(ramp))


def with_colour_scale(sheet: Image.Image, value_range: MapRange | None) -> Image.Image:
    """``sheet`` with a strip on the right: the colour bar (ticks 0, 0.5, 1 of each map's own
    min-max range) and, when known, the raw attention range of the sheet's maps."""
    height = max(sheet.height, 160)
    out = Image.new("RGB", (sheet.width + STRIP_WIDTH, height), "white")
    out.paste(sheet.convert("RGB"), (0, 0))
    draw = ImageDraw.Draw(out)
    left, top = sheet.width + MARGIN, MARGIN + 12
    bar_h = min(height - top - 60, 256)
    draw.text((left, 2), "colour scale", fill="black")
    out.paste(colour_bar(bar_h), (left, top))
    draw.rectangle((left - 1, top - 1, left + BAR_WIDTH, top + bar_h), outline="black")
    for frac, text in ((1.0, "1: map max"), (0.5, "0.5"), (0.0, "0: map min")):
        y = top + round((1.0 - frac) * (bar_h - 1))
        draw.line((left + BAR_WIDTH, y, left + BAR_WIDTH + 4, y), fill="black")
        draw.text((left + BAR_WIDTH + 7, y - 5), text, fill="black")
    notes = ["each map scaled to", "its own min..max"]
    if value_range is not None:
        notes += ["raw attention:", f"{value_range.low:.4g} .. {value_range.high:.4g}"]
    for k, line in enumerate(notes):
        draw.text((left, top + bar_h + 6 + 12 * k), line, fill="black")
    return out
