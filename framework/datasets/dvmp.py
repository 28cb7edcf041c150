"""DVMP, SynGen's "diverse visual modifier prompts": a seeded generator of attribute-binding prompts.

SynGen (Rassin et al., NeurIPS 2023) evaluates on prompts such as "a spotted baby dog and a
sliced apple". This module follows the vocabulary and the sampling described by SynGen's
``dvmp.py`` (written anew here, with its own random stream, so the prompts are not the same
strings as any published DVMP file):

* a prompt is 1 to ``max_phrases`` noun phrases (uniform), joined with " and ";
* each phrase is an animal, a fruit or an object (uniform);
* a phrase takes 0-2 modifiers of its type (0-1 for fruit) without repetition, and with
  probability 1/3 a colour in front of them; a phrase without any modifier is drawn again;
* the article is "an" before a vowel, else "a"; a phrase appears at most once per prompt and a
  prompt at most once per set.

The same ``(n, seed, max_phrases)`` always gives the same prompts, on every platform and
Python version (every draw goes through ``attnguide.datasets.seeded``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..errors import ConfigError
from .seeded import below, choice, sample

OBJECTS: tuple[str, ...] = (
    "backpack", "crown", "suitcase", "chair", "balloon", "bow", "car", "bowl", "bench", "clock",
    "camera", "umbrella", "guitar", "shoe", "hat", "surfboard", "skateboard", "bicycle",
)
FRUITS: tuple[str, ...] = ("apple", "tomato", "banana", "strawberry")
ANIMALS: tuple[str, ...] = (
    "cat", "dog", "bird", "bear", "lion", "horse", "elephant", "monkey", "frog", "turtle",
    "rabbit", "mouse", "panda", "zebra", "gorilla", "penguin",
)
COLORS: tuple[str, ...] = (
    "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "gray", "black",
    "white", "beige", "teal",
)
MODIFIERS: dict[str, tuple[str, ...]] = {
    "animal": ("furry", "baby", "spotted", "sleepy"),
    "object": ("modern", "spotted", "wooden", "metal", "curved", "spiky", "checkered"),
    "fruit": ("sliced", "skewered"),
}
NOUNS: dict[str, tuple[str, ...]] = {"animal": ANIMALS, "fruit": FRUITS, "object": OBJECTS}
MAX_EXTRA_MODIFIERS: dict[str, int] = {"animal": 2, "object": 2, "fruit": 1}
COLOR_PROBABILITY = 1 / 3
MAX_MISSES = 20_000  # consecutive repeated prompts before giving up


@dataclass(frozen=True)
class DvmpPhrase:
    """One noun phrase: ``"a spotted baby dog"`` = article, modifiers (colour first), noun."""

    kind: str  # "animal", "fruit" or "object"
    modifiers: tuple[str, ...]
    noun: str

    @property
    def text(self) -> str:
        first = self.modifiers[0] if self.modifiers else self.noun
        article = "an" if first[0] in "aeiou" else "a"
        return " ".join((article, *self.modifiers, self.noun))


@dataclass(frozen=True)
class DvmpPrompt:
    """A generated prompt with the phrases it was built from."""

    phrases: tuple[DvmpPhrase, ...]

    @property
    def text(self) -> str:
        return " and ".join(p.text for p in self.phrases)

    @property
    def subjects(self) -> tuple[str, ...]:
        return tuple(p.noun for p in self.phrases)

    @property
    def num_modifiers(self) -> int:
        return sum(len(p.modifiers) for p in self.phrases)


def sample_phrase(rng: random.Random, kind: str) -> DvmpPhrase:
    """One phrase of ``kind`` with at least one modifier."""
    while True:
        modifiers = sample(rng, MODIFIERS[kind], below(rng, MAX_EXTRA_MODIFIERS[kind] + 1))
        if rng.random() < COLOR_PROBABILITY:
            modifiers.insert(0, choice(rng, COLORS))
        if modifiers:
            return DvmpPhrase(kind, tuple(modifiers), choice(rng, NOUNS[kind]))


def sample_prompt(rng: random.Random, num_phrases: int) -> DvmpPrompt:
    """A prompt of ``num_phrases`` distinct phrases."""
    phrases: list[DvmpPhrase] = []
    while len(phrases) < num_phrases:
        phrase = sample_phrase(rng, choice(rng, ("animal", "fruit", "object")))
        if phrase.text not in {p.text for p in phrases}:
            phrases.append(phrase)
    return DvmpPrompt(tuple(phrases))


def generate_dvmp(n: int = 200, seed: int = 0, max_phrases: int = 3) -> list[DvmpPrompt]:
    """``n`` distinct DVMP prompts, drawn from ``random.Random(seed)``.

    Raises:
        ConfigError: ``n < 0``, ``max_phrases < 1``, or ``n`` more than the vocabulary can make
            distinct (only possible for ``max_phrases=1``).
    """
    if n < 0 or max_phrases < 1:
        raise ConfigError(f"DVMP needs n >= 0 and max_phrases >= 1, got n={n}, max_phrases={max_phrases}")
    rng = random.Random(seed)
    prompts: list[DvmpPrompt] = []
    seen: set[str] = set()
    misses = 0
    while len(prompts) < n:
        prompt = sample_prompt(rng, 1 + below(rng, max_phrases))
        if prompt.text in seen:
            misses += 1
            if misses > MAX_MISSES:
                raise ConfigError(f"DVMP found only {len(prompts)} distinct prompts with max_phrases={max_phrases}; "
                                  f"ask for fewer than {n} or allow more phrases")
            continue
        misses = 0
        seen.add(prompt.text)
        prompts.append(prompt)
    return prompts
