"""Pictures and series for the page, drawn from what the ``heatmaps`` callback kept.

Overlays and sheets are the callback's own renderers (``attnguide.plugins.heatmaps``); only
the guided-vs-unguided picture is new: both maps of a word over the image in two colours.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from PIL import Image

from attnguide.plugins.heatmaps import CELL, overlay, render_sheet

GUIDED_RGB = np.array([230.0, 30.0, 30.0], dtype=np.float32)  # red
UNGUIDED_RGB = np.array([0.0, 200.0, 230.0], dtype=np.float32)  # cyan


def png_bytes(image: Image.Image) -> bytes:
    """``image`` encoded as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def map_png(image: Image.Image, heat: torch.Tensor, alpha: float) -> bytes:
    """``heat: [H, W]`` over ``image`` (``CELL`` px square), as the heat-map sheet draws it."""
    return png_bytes(overlay(image, heat, alpha))


def compare_png(image: Image.Image, guided: torch.Tensor, unguided: torch.Tensor, alpha: float) -> bytes:
    """Both maps ``[H, W]`` of one word over the guided ``image`` in grey: red where the guided
    run attends, cyan where the unguided run does, light where both do. Each map is
    normalised to its own range, so the picture compares where, not how much."""
    base = np.asarray(image.convert("L").convert("RGB").resize((CELL, CELL)), dtype=np.float32)
    out = base * (1.0 - alpha)
    for heat, colour in ((guided, GUIDED_RGB), (unguided, UNGUIDED_RGB)):
        out = out + alpha * _upsampled(heat)[..., None] * colour
    return png_bytes(Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)))


def _upsampled(heat: torch.Tensor) -> np.ndarray:
    """``heat: [H, W]`` scaled to [0, 1] and resized to ``[CELL, CELL]`` float32."""
    h = heat.detach().float()
    h = (h - h.min()) / (h.max() - h.min()).clamp_min(1e-12)
    small = Image.fromarray((h.numpy() * 255).astype(np.uint8))
    up: np.ndarray = np.asarray(small.resize((CELL, CELL), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    return up


def sheet_png(image: Image.Image, words: list[str], by_step: dict[int, torch.Tensor], steps: list[int],
              alpha: float) -> bytes:
    """The callback's heat-map sheet of ``words`` at ``steps`` (each ``[words, H, W]``)."""
    return png_bytes(render_sheet(image, words, {s: by_step[s] for s in steps}, alpha))


def loss_series(records: list[Any]) -> dict[str, list[list[float]]]:
    """Per-step loss terms for a plot: ``{"<plugin>" or "<plugin>.<log>": [[step, value], ...]}``
    from a run's ``LossRecord`` list, each step's first evaluation (refinement 0)."""
    series: dict[str, list[list[float]]] = {}
    for record in records:
        if record.refinement != 0:
            continue
        terms = {record.plugin: record.value, **{f"{record.plugin}.{k}": v for k, v in record.logs.items()}}
        for name, value in terms.items():
            series.setdefault(name, []).append([float(record.step), float(value)])
    return series


def refinements(records: list[Any]) -> dict[str, int]:
    """``{str(step): number of refinement passes}`` where a step was evaluated more than once."""
    counts: dict[str, int] = {}
    for record in records:
        if record.refinement > 0:
            counts[str(record.step)] = max(counts.get(str(record.step), 0), record.refinement)
    return counts
