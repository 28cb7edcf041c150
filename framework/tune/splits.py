"""Calibration and held-out samples: disjoint prompts and disjoint generation seeds.

The prompt pool is deduplicated and shuffled with ``numpy.random.default_rng(seed)``; the first
``calibration`` prompts are the calibration split, the next ``heldout`` the held-out split.
Calibration sample ``i`` uses generation seed ``seed + i``, held-out sample ``j`` seed
``seed + calibration + j``, so no prompt and no seed is in both. The held-out split is never
looked at while choosing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import ConfigError

Split = Literal["calibration", "heldout"]


@dataclass(frozen=True)
class Sample:
    """One (prompt, seed) of a split; ``index`` is its place in the split."""

    split: Split
    index: int
    prompt: str
    seed: int


def make_splits(prompts: Sequence[str], calibration: int, heldout: int,
                seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """``(calibration samples, held-out samples)`` from ``prompts`` (see the module docstring);
    ``ConfigError`` when there are fewer distinct prompts than both splits need."""
    if calibration < 1 or heldout < 1:
        raise ConfigError(f"--calibration and --heldout must be at least 1, got {calibration} and {heldout}")
    pool = list(dict.fromkeys(prompts))
    if len(pool) < calibration + heldout:
        raise ConfigError(f"{len(pool)} distinct prompts cannot make a calibration split of {calibration} and a "
                          f"disjoint held-out split of {heldout}; give more prompts or ask for fewer samples")
    order = np.random.default_rng(seed).permutation(len(pool))
    picked = [pool[int(k)] for k in order[: calibration + heldout]]
    calib = [Sample("calibration", i, p, seed + i) for i, p in enumerate(picked[:calibration])]
    held = [Sample("heldout", j, p, seed + calibration + j) for j, p in enumerate(picked[calibration:])]
    return calib, held


def toy_prompts(count: int, seed: int) -> list[str]:
    """At least ``count`` distinct two-object toy-world prompts ("a red circle and a blue square"),
    the evaluation's phrasing (``attnguide.toyworld.evaluate.two_object_prompts``)."""
    from ..toyworld.evaluate import two_object_prompts

    asked = count
    while True:
        texts = list(dict.fromkeys(p for p, _ in two_object_prompts(asked, seed)))
        if len(texts) >= count or asked > 50 * count + 1000:
            return texts
        asked *= 2
