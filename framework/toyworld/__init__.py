"""A toy text-to-image world on which attribute binding can be measured offline.

``scene`` describes what is in a picture, ``render`` draws and captions it, ``judge`` reads a
picture back into ``(colour, shape)`` detections and scores them against a caption.
"""

from __future__ import annotations

from .judge import Detection, binding_outcome, detect, parse_caption, recovered
from .render import caption, object_mask, render, sample
from .scene import BACKGROUND, COLOURS, SHAPES, SIZES, Scene, ToyObject, sample_scene

__all__ = [
    "BACKGROUND",
    "COLOURS",
    "SHAPES",
    "SIZES",
    "Detection",
    "Scene",
    "ToyObject",
    "binding_outcome",
    "caption",
    "detect",
    "object_mask",
    "parse_caption",
    "recovered",
    "render",
    "sample",
    "sample_scene",
]
