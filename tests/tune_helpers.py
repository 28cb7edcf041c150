"""Shared by the tune tests: the tiny engine with manual bindings, an engine that counts the
images it is asked for, and a cheap score every tiny image has."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np


class CountingEngine:
    """Wraps an ``Engine``, counting the images it is asked for."""

    def __init__(self, engine: Any) -> None:
        self.engine, self.pm, self.images = engine, engine.pm, 0

    def generate(self, prompts, seeds, **kwargs):
        self.images += len(prompts)
        return self.engine.generate(prompts, seeds, **kwargs)


def tiny_engine() -> Iterator[Any]:
    """The tiny engine (DDIM, 8x8 maps, "cat" bound to "red" and "dog" to "blue") on one thread,
    for a module-scoped fixture; restores torch's thread count afterwards."""
    import torch

    from attnguide.engine.engine import Engine
    from attnguide.models.loading import load_pipeline

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Engine(load_pipeline("tiny", scheduler="ddim"), parser="manual", attention_resolution=8,
                 parser_params={"bindings": {"cat": ["red"], "dog": ["blue"]}})
    torch.set_num_threads(before)


def redness(image, prompt) -> float:
    """A cheap score any tiny image has: the mean of its red channel."""
    return float(np.asarray(image, dtype=np.float64)[..., 0].mean())
