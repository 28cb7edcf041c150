"""Seeded draws that give the same result on every Python version.

Python promises only that ``random.Random(seed).random()`` keeps its sequence; ``randint``,
``choice``, ``sample`` and ``shuffle`` may change between versions. Everything here is built on
``random()`` alone, so a prompt set shuffled or generated with a seed stays the same set.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def below(rng: random.Random, k: int) -> int:
    """Uniform integer in ``[0, k)`` from one ``random()`` draw (``k >= 1``)."""
    return min(int(rng.random() * k), k - 1)


def choice(rng: random.Random, items: Sequence[T]) -> T:
    return items[below(rng, len(items))]


def sample(rng: random.Random, items: Sequence[T], count: int) -> list[T]:
    """``count`` distinct items in draw order: the first ``count`` steps of a Fisher-Yates shuffle."""
    pool = list(items)
    for i in range(count):
        j = i + below(rng, len(pool) - i)
        pool[i], pool[j] = pool[j], pool[i]
    return pool[:count]


def shuffled(items: Sequence[T], seed: int) -> list[T]:
    """A permutation of ``items`` fixed by ``seed``."""
    return sample(random.Random(seed), items, len(items))
