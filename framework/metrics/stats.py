"""Aggregation: means with seeded percentile-bootstrap confidence intervals, and SynGen's
per-noun-phrase comparison of images of the same prompt and seed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_SAMPLES = 2000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """``mean`` of ``n`` values with a ``[low, high]`` bootstrap interval."""

    mean: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-ready: an empty estimate's NaNs become ``None``."""
        def num(x: float) -> float | None:
            return None if x != x else x

        return {"mean": num(self.mean), "ci_low": num(self.low), "ci_high": num(self.high), "n": self.n}


def bootstrap_ci(values: Sequence[float], *, samples: int = BOOTSTRAP_SAMPLES,
                 confidence: float = CONFIDENCE, seed: int = 0) -> Estimate:
    """Mean and percentile-bootstrap interval: resample ``values`` with replacement
    ``samples`` times (``numpy.random.default_rng(seed)``), take the ``(1 +- confidence) / 2``
    quantiles of the resampled means. One value gives a zero-width interval."""
    data = np.asarray([float(v) for v in values], dtype=np.float64)
    if data.size == 0:
        nan = float("nan")
        return Estimate(nan, nan, nan, 0)
    mean = float(data.mean())
    if data.size == 1:
        return Estimate(mean, mean, mean, 1)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(samples, data.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    # the percentile interval of a skewed sample can miss the sample mean by rounding; keep it in
    return Estimate(mean, min(float(low), mean), max(float(high), mean), int(data.size))


def phrase_preference(logits: Sequence[Sequence[float]]) -> list[float]:
    """SynGen's automatic comparison of competing images of one prompt (one per method).

    ``logits[i][j]`` is CLIP's logit-scaled similarity of image ``i`` and noun phrase ``j``.
    For each phrase, a softmax over the images says which image shows it best; an image's
    preference is the mean over phrases. Preferences sum to 1 over the images; the highest wins.
    """
    table = np.asarray(logits, dtype=np.float64)
    if table.ndim != 2 or table.shape[0] == 0:
        return []
    if table.shape[1] == 0:
        return [1.0 / table.shape[0]] * table.shape[0]
    shifted = np.exp(table - table.max(axis=0, keepdims=True))
    probs = shifted / shifted.sum(axis=0, keepdims=True)
    preferences: list[float] = probs.mean(axis=1).tolist()
    return preferences
