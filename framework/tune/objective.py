"""What ``attnguide tune`` maximises: a score per generated image, higher is better.

Built in (``--metric``):

* ``toy_binding``: the toy judge's binding accuracy (1 when every asked-for toy-world object is
  there in its own colour, else 0; ``attnguide.metrics.toy_judge``), for ``--model toyworld``;
* ``clip``: CLIP's cosine similarity of the image and the whole prompt;
* ``clip_min_object``: the smallest CLIP similarity of the image and one of the prompt's noun
  phrases (Attend-and-Excite's "minimum object" score).

From Python, any ``(image, prompt) -> float`` callable works (``metric_from_callable``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

METRICS: dict[str, str] = {
    "toy_binding": "toy judge's binding accuracy (0/1 per image; --model toyworld)",
    "clip": "CLIP cosine similarity of image and prompt",
    "clip_min_object": "smallest CLIP similarity of image and one noun phrase of the prompt",
}


@dataclass(frozen=True)
class Metric:
    """A named per-image score: ``score(images, prompts)`` returns one float per image
    (``images``: RGB PIL images, ``prompts``: the prompt each was made from)."""

    name: str
    score: Callable[[Sequence[Any], Sequence[str]], list[float]]


def metric_from_callable(fn: Callable[[Any, str], float], name: str | None = None) -> Metric:
    """A ``Metric`` that calls ``fn(image, prompt)`` on each image."""
    def score(images: Sequence[Any], prompts: Sequence[str]) -> list[float]:
        return [float(fn(image, prompt)) for image, prompt in zip(images, prompts)]

    return Metric(name or str(getattr(fn, "__name__", "custom")), score)


def toy_binding_metric() -> Metric:
    """The toy judge's binding accuracy; a ``ConfigError`` naming the prompt when a prompt asks
    for no toy-world object."""
    from ..metrics.toy_judge import judge_image

    return metric_from_callable(lambda image, prompt: judge_image(image, prompt)["binding_accuracy"], "toy_binding")


def clip_metric(scorer: Any, *, min_object: bool = False) -> Metric:
    """CLIP similarity with ``scorer`` (an ``attnguide.metrics.ClipScorer``): of the whole prompt,
    or (``min_object``) the smallest of its noun phrases' (``attnguide.metrics.noun_phrases``)."""
    from ..metrics.phrases import noun_phrases

    def score(images: Sequence[Any], prompts: Sequence[str]) -> list[float]:
        embeddings = scorer.image_embeddings(list(images))  # [N, D]
        out = []
        for embedding, prompt in zip(embeddings, prompts):
            phrases = noun_phrases(prompt)[0] if min_object else []
            scores = scorer.score(embedding, prompt, phrases)
            out.append(float(scores.min_object if min_object else scores.full))
        return out

    return Metric("clip_min_object" if min_object else "clip", score)


def builtin_metric(name: str, *, clip_model: str | None = None, device: str = "cpu") -> Metric:
    """The built-in metric ``name`` (loading CLIP for the CLIP scores); ``ConfigError`` for an
    unknown name."""
    if name == "toy_binding":
        return toy_binding_metric()
    if name in ("clip", "clip_min_object"):
        from ..metrics.clip_score import ClipScorer
        from ..metrics.models import DEFAULT_CLIP, load_clip

        model, processor = load_clip(clip_model or DEFAULT_CLIP, device)
        return clip_metric(ClipScorer(model, processor, device=device), min_object=name == "clip_min_object")
    raise ConfigError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")
