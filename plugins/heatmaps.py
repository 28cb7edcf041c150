"""``heatmaps`` callback: each bound word's attention map over the final image, per step.

At the chosen steps it keeps, for every word of every binding, the aggregated map the losses
saw (the last guidance evaluation of that step) - or, at steps without guidance, the
conditional branch's map from the ordinary forward. At the end of the run it renders one sheet
per image (rows: words, columns: steps) and hands the sheet and the raw maps to the writer as
artifacts (``<image>.heatmaps.png``, ``<image>.maps.safetensors``).
"""

from __future__ import annotations

from typing import Any

import pydantic
from PIL import Image, ImageDraw

from attnguide import Callback, CallbackParams, RunState, hookimpl
from attnguide.lazy import np, torch

CELL = 128
LABEL_H = 16


class HeatmapParams(CallbackParams):
    steps: list[int] | None = pydantic.Field(None, description="steps to keep; default: `count` evenly spaced")
    count: int = pydantic.Field(4, ge=1, description="number of evenly spaced steps when `steps` is not given")
    alpha: float = pydantic.Field(0.6, ge=0.0, le=1.0, description="heat-map opacity over the image")


class HeatmapCallback(Callback[HeatmapParams]):
    """Save attention heat maps of the bound words as an overlay sheet per image."""

    name = "heatmaps"
    Params = HeatmapParams
    needs_analysis = True

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.steps: list[int] = []
        self.kept: dict[int, dict[int, torch.Tensor]] = {}  # image -> step -> [words, H, W]
        self.words: dict[int, list[str]] = {}

    @hookimpl
    def on_run_start(self, run: RunState) -> None:
        total = len(run.timesteps)
        if self.params.steps is not None:
            self.steps = sorted({s for s in self.params.steps if 0 <= s < total})
        else:
            count = min(self.params.count, total)
            self.steps = sorted({round(i * (total - 1) / max(count - 1, 1)) for i in range(count)})
        run.capture_steps.update(self.steps)
        for record in run.records:
            self.words[record.index] = _bound_words(record)[0]

    @hookimpl
    def on_step_end(self, run: RunState, step: int) -> None:
        if step not in self.steps:
            return
        for record in run.records:
            maps = run.guidance_maps.get(step, {}).get(record.index)
            if maps is None and step in run.step_maps:
                maps = run.step_maps[step][record.index]
            if maps is None:
                continue
            positions = _bound_words(record)[1]
            rows = [maps[list(pos)].float().mean(0) for pos in positions]
            if rows:
                self.kept.setdefault(record.index, {})[step] = torch.stack(rows)

    @hookimpl
    def on_run_end(self, run: RunState, images: list[Any]) -> None:
        artifacts = run.artifacts
        for index, by_step in self.kept.items():
            words = self.words[index]
            tensors = {f"step{s:03d}": m.contiguous() for s, m in by_step.items()}
            meta = {"words": "|".join(words), "steps": ",".join(str(s) for s in by_step)}
            entry = artifacts.setdefault(index, {})
            entry["maps.safetensors"] = (tensors, meta)
            if index < len(images):
                entry["heatmaps.png"] = render_sheet(images[index], words, by_step, self.params.alpha)


def _bound_words(record: Any) -> tuple[list[str], list[tuple[int, ...]]]:
    """Labels and token positions of every word of every binding, modifiers first."""
    words: list[str] = []
    positions: list[tuple[int, ...]] = []
    if record.analysis is None:
        return words, positions
    for binding in record.analysis.bindings:
        for word in (*binding.modifiers, binding.entity):
            if word.tokens:
                words.append(word.text)
                positions.append(tuple(word.tokens))
    return words, positions


def colorize(heat: np.ndarray) -> np.ndarray:
    """Map ``heat: [H, W]`` in [0, 1] to RGB ``[H, W, 3]`` uint8 (blue -> cyan -> yellow -> red)."""
    stops = np.array([[0, 0, 128], [0, 160, 255], [255, 230, 0], [220, 0, 0]], dtype=np.float32)
    pos = np.clip(heat, 0.0, 1.0) * (len(stops) - 1)
    low = np.floor(pos).astype(int).clip(0, len(stops) - 2)
    frac = (pos - low)[..., None]
    rgb: np.ndarray = (stops[low] * (1 - frac) + stops[low + 1] * frac).astype(np.uint8)
    return rgb


def overlay(image: Image.Image, heat: torch.Tensor, alpha: float) -> Image.Image:
    """``heat: [H, W]`` upsampled to the image, normalised to its own max, blended on top."""
    base = image.convert("RGB").resize((CELL, CELL))
    h = heat.detach().float()
    h = (h - h.min()) / (h.max() - h.min()).clamp_min(1e-12)
    up = Image.fromarray((h.numpy() * 255).astype(np.uint8)).resize((CELL, CELL), Image.Resampling.BILINEAR)
    colored = Image.fromarray(colorize(np.asarray(up, dtype=np.float32) / 255.0))
    return Image.blend(base, colored, alpha)


def render_sheet(image: Image.Image, words: list[str], by_step: dict[int, torch.Tensor], alpha: float) -> Image.Image:
    """Sheet: first column the image, then one column per step; one row per word."""
    steps = sorted(by_step)
    width = CELL * (len(steps) + 1)
    height = LABEL_H + (CELL + LABEL_H) * max(len(words), 1)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for col, step in enumerate(steps, start=1):
        draw.text((col * CELL + 4, 2), f"step {step}", fill="black")
    for row, word in enumerate(words):
        top = LABEL_H + row * (CELL + LABEL_H)
        sheet.paste(image.convert("RGB").resize((CELL, CELL)), (0, top + LABEL_H))
        draw.text((4, top + 2), word, fill="black")
        for col, step in enumerate(steps, start=1):
            sheet.paste(overlay(image, by_step[step][row], alpha), (col * CELL, top + LABEL_H))
    return sheet
