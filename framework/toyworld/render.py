"""Procedural renderer and captioner for toy scenes.

Shapes are polygons (and one ellipse) drawn at ``SUPERSAMPLE`` times the resolution and
box-filtered down: edges are anti-aliased, while each object's interior keeps its exact palette
colour, which is what lets the judge recover colours by nearest-palette lookup.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from .scene import COLOURS, IMAGE_SIZE, Scene, ToyObject, sample_scene

SUPERSAMPLE = 4


def _star(points: int = 5, inner: float = 0.45) -> list[tuple[float, float]]:
    out = []
    for k in range(2 * points):
        r = 1.0 if k % 2 == 0 else inner
        a = -math.pi / 2 + k * math.pi / points
        out.append((r * math.cos(a), r * math.sin(a)))
    return out


def _heart(n: int = 72) -> list[tuple[float, float]]:
    # the classic parametric heart, scaled into the unit circle and centred on its bounding box
    pts = []
    for k in range(n):
        t = 2 * math.pi * k / n
        x = 16 * math.sin(t) ** 3
        y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
        pts.append((x, y))
    ys = [p[1] for p in pts]
    mid = (max(ys) + min(ys)) / 2
    return [(x / 17.0, (y - mid) / 17.0) for x, y in pts]


_H = 0.24  # half-width of a cross arm, in units of the bounding radius
UNIT_POLYGONS: dict[str, list[tuple[float, float]]] = {
    "square": [(-0.72, -0.72), (0.72, -0.72), (0.72, 0.72), (-0.72, 0.72)],
    "triangle": [(math.cos(a), math.sin(a) + 0.25) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)],
    "star": _star(),
    "cross": [(-_H, -0.85), (_H, -0.85), (_H, -_H), (0.85, -_H), (0.85, _H), (_H, _H), (_H, 0.85),
              (-_H, 0.85), (-_H, _H), (-0.85, _H), (-0.85, -_H), (-_H, -_H)],
    "heart": _heart(),
}
"""Shape -> polygon inside the unit circle (y points down, as in images). The circle is an ellipse
of radius ``CIRCLE_RADIUS``."""
CIRCLE_RADIUS = 0.85


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, centre: tuple[float, float], radius: float,
               fill: int | tuple[int, int, int]) -> None:
    """Draw ``shape`` with its bounding circle at ``centre`` (pixels) of ``radius`` (pixels)."""
    cx, cy = centre
    if shape == "circle":
        r = CIRCLE_RADIUS * radius
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape in UNIT_POLYGONS:
        draw.polygon([(cx + radius * x, cy + radius * y) for x, y in UNIT_POLYGONS[shape]], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def object_mask(obj: ToyObject, image_size: int = IMAGE_SIZE, supersample: int = SUPERSAMPLE) -> np.ndarray:
    """Coverage of one object: ``[image_size * s, image_size * s]`` bool at ``s = supersample``."""
    s = supersample * image_size / IMAGE_SIZE
    big = Image.new("L", (image_size * supersample,) * 2, 0)
    draw_shape(ImageDraw.Draw(big), obj.shape, (obj.centre[0] * s, obj.centre[1] * s), obj.radius * s, 255)
    return np.asarray(big) > 0


def render(scene: Scene, supersample: int = SUPERSAMPLE) -> Image.Image:
    """The scene as an RGB ``PIL.Image`` of ``scene.image_size`` pixels square."""
    n = scene.image_size
    s = supersample * n / IMAGE_SIZE
    big = Image.new("RGB", (n * supersample,) * 2, scene.background)
    draw = ImageDraw.Draw(big)
    for obj in scene.objects:
        draw_shape(draw, obj.shape, (obj.centre[0] * s, obj.centre[1] * s), obj.radius * s, COLOURS[obj.colour])
    return big.resize((n, n), Image.Resampling.BOX)


def article(word: str) -> str:
    """The indefinite article captions put before ``word`` ("an orange", "a red")."""
    return "an" if word[0] in "aeiou" else "a"


def _phrase(obj: ToyObject) -> str:
    words = ([obj.size] if obj.size != "medium" else []) + [obj.colour, obj.shape]
    return " ".join([article(words[0]), *words])


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A caption naming every object in order, e.g. "a red circle and a blue square", "a yellow
    star next to a green heart", "a small red circle", "a red circle, a blue square and a large yellow star"."""
    phrases = [_phrase(o) for o in scene.objects]
    if len(phrases) == 1:
        return phrases[0]
    if len(phrases) == 2:
        joiner = str(rng.choice([" and ", " next to ", " and ", " with "]))
        return phrases[0] + joiner + phrases[1]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def sample(seed: int, n_objects: int, *, size_words: bool = True) -> tuple[Image.Image, str, Scene]:
    """``(image, caption, scene)`` for ``seed``: the same seed always gives the same triple."""
    rng = np.random.default_rng(seed)
    scene = sample_scene(rng, n_objects, size_words=size_words)
    return render(scene), caption(scene, rng), scene
