"""The toy world's vocabulary and scene description: what is in a picture, before any pixels.

A scene is 1-3 non-overlapping objects on a plain near-black background. Within one scene every
object has its own colour and its own shape, so a caption names each object unambiguously and a
colour-shape swap is always observable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (40, 190, 60),
    "blue": (40, 80, 235),
    "yellow": (245, 225, 40),
    "purple": (150, 50, 200),
    "orange": (250, 140, 20),
    "pink": (250, 135, 200),
    "white": (245, 245, 245),
}
"""Colour word -> sRGB. Chosen so that every pair is far apart and no colour lies near the line
from the background to another colour (anti-aliased edges must not look like a third colour)."""

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "heart")
SIZES: dict[str, float] = {"small": 8.0, "medium": 10.5, "large": 13.0}
"""Size word -> radius in pixels (of a 64x64 image) of the circle that bounds the shape."""

BACKGROUND: tuple[int, int, int] = (24, 24, 24)
IMAGE_SIZE = 64
GAP = 3.0
"""Minimum distance in pixels between the bounding circles of two objects."""


@dataclass(frozen=True)
class ToyObject:
    """One object: ``centre`` is ``(x, y)`` in pixels of an ``IMAGE_SIZE`` image; ``size`` is a
    key of ``SIZES`` ("medium" objects get no size word in captions)."""

    colour: str
    shape: str
    size: str
    centre: tuple[float, float]

    @property
    def radius(self) -> float:
        return SIZES[self.size]

    @property
    def pair(self) -> tuple[str, str]:
        return (self.colour, self.shape)


@dataclass(frozen=True)
class Scene:
    """Objects in caption order on a plain background of colour ``background``."""

    objects: tuple[ToyObject, ...]
    background: tuple[int, int, int] = BACKGROUND
    image_size: int = IMAGE_SIZE
    pairs: tuple[tuple[str, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pairs", tuple(o.pair for o in self.objects))


def _place(rng: np.random.Generator, radii: list[float], image_size: int) -> list[tuple[float, float]] | None:
    """Centres for bounding circles of ``radii`` that keep ``GAP`` pixels apart and one pixel from
    the border; ``None`` if rejection sampling gives up (the caller resamples sizes)."""
    centres: list[tuple[float, float]] = []
    for r in radii:
        for _ in range(200):
            x, y = rng.uniform(r + 1, image_size - 1 - r, size=2)
            if all(np.hypot(x - cx, y - cy) >= r + cr + GAP for (cx, cy), cr in zip(centres, radii)):
                centres.append((round(float(x), 2), round(float(y), 2)))
                break
        else:
            return None
    return centres


def sample_scene(rng: np.random.Generator, n_objects: int, *, size_words: bool = True,
                 image_size: int = IMAGE_SIZE) -> Scene:
    """A random scene of ``n_objects`` (1-3) with distinct colours and distinct shapes.

    ``size_words=False`` makes every object medium. Reproducible: the same generator state gives
    the same scene.
    """
    if not 1 <= n_objects <= 3:
        raise ValueError(f"n_objects must be 1, 2 or 3, got {n_objects}")
    colours = [str(c) for c in rng.choice(list(COLOURS), size=n_objects, replace=False)]
    shapes = [str(s) for s in rng.choice(SHAPES, size=n_objects, replace=False)]
    size_names = list(SIZES) if size_words else ["medium"]
    while True:
        sizes = [str(s) for s in rng.choice(size_names, size=n_objects, p=_size_weights(size_names))]
        centres = _place(rng, [SIZES[s] * image_size / IMAGE_SIZE for s in sizes], image_size)
        if centres is not None:
            break
    objects = tuple(ToyObject(c, s, z, xy) for c, s, z, xy in zip(colours, shapes, sizes, centres))
    return Scene(objects=objects, image_size=image_size)


def _size_weights(size_names: list[str]) -> list[float]:
    """Half the objects are medium (no size word); the rest small or large."""
    if size_names == ["medium"]:
        return [1.0]
    return [0.25 if s != "medium" else 0.5 for s in size_names]
