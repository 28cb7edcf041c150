"""A deterministic judge: read a toy image back into ``(colour, shape)`` detections, parse a
caption into the objects it asks for, and score one against the other.

Pipeline: every pixel takes its nearest palette colour if within ``COLOUR_THRESHOLD`` (else it is
background or an anti-aliased edge); same-colour pixels form 4-connected components; components
under ``MIN_AREA`` pixels are dropped; each survivor's mask, cropped to its bounding box and
resized to ``TEMPLATE_SIZE`` squared, is compared with every shape's template (made by the same
pipeline from the renderer) by intersection over union, penalised by the mismatch in aspect ratio.
"""

from __future__ import annotations

import math
import re
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from .scene import COLOURS, SHAPES, SIZES, Scene, ToyObject

COLOUR_THRESHOLD = 60.0
"""Largest RGB distance at which a pixel still counts as a palette colour."""
MIN_AREA = 12
"""Components with fewer pixels are noise (or slivers of edge), not objects."""
TEMPLATE_SIZE = 16
ASPECT_WEIGHT = 0.5

_PALETTE_NAMES = list(COLOURS)
_PALETTE = np.array([COLOURS[c] for c in _PALETTE_NAMES], dtype=np.float32)  # [colours, 3]


@dataclass(frozen=True)
class Detection:
    """One object found in an image: ``bbox`` is ``(x0, y0, x1, y1)`` in pixels, exclusive end;
    ``score`` is the template match of the chosen shape (about 0.6-1 for a clean render)."""

    colour: str
    shape: str
    bbox: tuple[int, int, int, int]
    area: int
    score: float

    @property
    def pair(self) -> tuple[str, str]:
        return (self.colour, self.shape)


def colour_labels(image: Image.Image | np.ndarray, threshold: float = COLOUR_THRESHOLD) -> np.ndarray:
    """Palette index per pixel, -1 where no palette colour is within ``threshold``.

    image: ``[H, W, 3]`` uint8 (or an RGB PIL image). Returns ``[H, W]`` int64.
    """
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float32)
    dist = np.linalg.norm(rgb[:, :, None, :] - _PALETTE[None, None], axis=-1)  # [H, W, colours]
    labels: np.ndarray = dist.argmin(axis=-1)
    labels[dist.min(axis=-1) > threshold] = -1
    return labels


def connected_components(labels: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """4-connected regions of equal non-negative label: ``(label, mask [H, W] bool)`` each, in
    raster order of their first pixel."""
    h, w = labels.shape
    seen = labels < 0
    out: list[tuple[int, np.ndarray]] = []
    for y0, x0 in zip(*np.nonzero(~seen)):
        if seen[y0, x0]:
            continue
        label = labels[y0, x0]
        mask = np.zeros_like(seen)
        queue = deque([(y0, x0)])
        seen[y0, x0] = True
        while queue:
            y, x = queue.popleft()
            mask[y, x] = True
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and not seen[ny, nx] and labels[ny, nx] == label:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        out.append((int(label), mask))
    return out


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def normalised_mask(mask: np.ndarray, size: int = TEMPLATE_SIZE) -> tuple[np.ndarray, float]:
    """The mask cropped to its bounding box and resized to ``[size, size]`` bool, and the box's
    aspect ratio (width / height)."""
    x0, y0, x1, y1 = _bbox(mask)
    crop = Image.fromarray(mask[y0:y1, x0:x1].astype(np.uint8) * 255)
    small = np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR)) >= 128
    return small, (x1 - x0) / (y1 - y0)


_TEMPLATE_OFFSETS = tuple((dx / 3, dy / 3) for dx in range(3) for dy in range(3))


@lru_cache(maxsize=1)
def shape_templates() -> dict[str, list[tuple[np.ndarray, float]]]:
    """Shape -> ``(normalised mask, aspect ratio)`` for each size and sub-pixel offset, made by rendering the shape
    alone and passing it through the judge's own segmentation."""
    from .render import render

    templates: dict[str, list[tuple[np.ndarray, float]]] = {}
    for shape in SHAPES:
        templates[shape] = []
        for size in SIZES:
            for dx, dy in _TEMPLATE_OFFSETS:  # sub-pixel placement changes which edge pixels survive
                scene = Scene(objects=(ToyObject("white", shape, size, (32 + dx, 32 + dy)),))
                (_, mask), *_ = connected_components(colour_labels(render(scene)))
                templates[shape].append(normalised_mask(mask))
    return templates


def classify_shape(mask: np.ndarray) -> tuple[str, float]:
    """The best-matching shape for a component ``mask [H, W] bool`` and its score (IoU minus
    ``ASPECT_WEIGHT`` times the absolute log aspect-ratio mismatch)."""
    norm, aspect = normalised_mask(mask)
    best, best_score = SHAPES[0], -math.inf
    for shape, variants in shape_templates().items():
        for template, t_aspect in variants:
            iou = (norm & template).sum() / max(int((norm | template).sum()), 1)
            score = float(iou) - ASPECT_WEIGHT * abs(math.log(aspect / t_aspect))
            if score > best_score:
                best, best_score = shape, score
    return best, best_score


def detect(image: Image.Image | np.ndarray, *, threshold: float = COLOUR_THRESHOLD,
           min_area: int = MIN_AREA) -> list[Detection]:
    """Every object in ``image`` (``[H, W, 3]`` uint8 or RGB PIL), largest first."""
    found = []
    for label, mask in connected_components(colour_labels(image, threshold)):
        area = int(mask.sum())
        if area < min_area:
            continue
        shape, score = classify_shape(mask)
        found.append(Detection(_PALETTE_NAMES[label], shape, _bbox(mask), area, round(score, 4)))
    return sorted(found, key=lambda d: -d.area)


_PHRASE = re.compile(r"\b(?:(?:small|medium|large)\s+)?(" + "|".join(COLOURS) + r")\s+(" + "|".join(SHAPES) + r")s?\b")


def parse_caption(caption: str) -> list[tuple[str, str]]:
    """The ``(colour, shape)`` pairs a caption asks for, in order: "a small red circle next to a
    blue square" -> ``[("red", "circle"), ("blue", "square")]``."""
    return [(m.group(1), m.group(2)) for m in _PHRASE.finditer(caption.lower())]


Pair = tuple[str, str]


def _pairs(items: Iterable[Pair | Detection | ToyObject]) -> list[Pair]:
    return [x.pair if isinstance(x, (Detection, ToyObject)) else (x[0], x[1]) for x in items]


def binding_outcome(expected: Sequence[Pair | ToyObject], detected: Sequence[Pair | Detection]) -> dict[str, bool]:
    """Score detections against the objects a caption asked for.

    - ``correct``: every expected object is present with its own colour (extras are allowed);
    - ``neglect``: some expected shape is missing in every colour;
    - ``swap``: two expected objects ``(c1, s1)``, ``(c2, s2)`` with different colours and shapes
      appear as ``(c2, s1)`` and ``(c1, s2)``, and neither appears as asked;
    - ``leak``: an expected object ``(c1, s1)`` does not appear as asked, but its shape appears in
      another expected object's colour ``(c2, s1)``, ``c2 != c1`` (attribute leakage; every swap
      is also a leak).
    """
    want, got = _pairs(expected), _pairs(detected)
    have = Counter(got)
    shapes_seen = {s for _, s in got}
    correct = not (Counter(want) - have)
    neglect = any(s not in shapes_seen for _, s in want)
    swap = any(
        c1 != c2 and s1 != s2 and have[(c2, s1)] and have[(c1, s2)] and not have[(c1, s1)] and not have[(c2, s2)]
        for i, (c1, s1) in enumerate(want) for (c2, s2) in want[i + 1:]
    )
    leak = any(
        not have[(c1, s1)] and any(c2 != c1 and have[(c2, s1)] for c2, _ in want)
        for c1, s1 in want
    )
    return {"correct": correct, "neglect": neglect, "swap": swap, "leak": leak}


def recovered(scene: Scene, detections: Sequence[Detection]) -> int:
    """How many of the scene's objects are found with the right colour and shape (each
    detection used once)."""
    have = Counter(d.pair for d in detections)
    hits = 0
    for pair in scene.pairs:
        if have[pair]:
            have[pair] -= 1
            hits += 1
    return hits
