"""Test helpers for plugin authors (and attnguide's own tests).

A loss plugin's test should be a few lines: build the prompt analysis a loss reads from a prompt
and explicit ``{noun: [modifiers]}`` bindings on the real CLIP tokenizer, hand it maps with a
known shape, and run the plugin for a few steps through the real engine on the tiny model::

    from attnguide.testing import analysis_for, context_for, peaked_maps, run_plugin

    analysis = analysis_for("a red cat and a blue frog", {"cat": ["red"], "frog": ["blue"]})
    maps = peaked_maps(analysis, {"red": (2, 2), "cat": (2, 2), "blue": (12, 12), "frog": (12, 12)})
    term = MyLoss().compute(context_for(analysis), maps)
    records = run_plugin(MyLoss(), "a red cat and a blue frog", {"cat": ["red"], "frog": ["blue"]})

Bindings are given in the ``{noun: [modifiers]}`` form on purpose: a plain list of words
(``["cat", "frog"]``) makes entities *without* modifiers, so every modifier-noun term of a
binding loss is empty - a test written that way passes while testing nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from .errors import ConfigError
from .types import GuidanceContext, LossRecord, PromptAnalysis

if TYPE_CHECKING:
    from .engine.engine import Engine

Bindings = Mapping[str, Sequence[str]]
"""``{noun: [modifiers]}``: each entity word of the prompt with the words bound to it."""


@functools.lru_cache(maxsize=1)
def clip_tokenizer() -> Any:
    """The shipped CLIP tokenizer (the real BPE vocabulary, 77 positions), made once."""
    from .models.tokenizer import clip_tokenizer as make

    return make()


def analysis_for(prompt: str, bindings: Bindings, tokenizer: Any = None) -> PromptAnalysis:
    """The ``PromptAnalysis`` of ``prompt`` with exactly ``bindings``, aligned to ``tokenizer``
    (default: the shipped CLIP tokenizer) by the engine's own alignment, so words of several
    BPE pieces get several positions as in a real run.

    Args:
        prompt: the prompt text.
        bindings: ``{noun: [modifiers]}``; every word must occur in ``prompt`` (whole words,
            case-insensitive; a word named twice takes the next occurrence).

    Raises:
        ConfigError: a word is not in the prompt, or ``bindings`` is not a mapping.
    """
    from .prompts.parsing import analyse_prompt, get_parser

    if not isinstance(bindings, Mapping):
        raise ConfigError(
            f"analysis_for: bindings must be {{noun: [modifiers]}}, got {bindings!r}; a list of "
            "words would make entities without modifiers"
        )
    as_lists = {noun: [modifiers] if isinstance(modifiers, str) else list(modifiers)
                for noun, modifiers in bindings.items()}
    parser = get_parser("manual", {"bindings": as_lists})
    return analyse_prompt(prompt, parser, tokenizer if tokenizer is not None else clip_tokenizer())


def positions(analysis: PromptAnalysis, word: str) -> tuple[int, ...]:
    """Token positions of ``word`` (an entity or modifier of ``analysis``'s bindings)."""
    for binding in analysis.bindings:
        for aligned in (binding.entity, *binding.modifiers):
            if aligned.text.lower() == word.lower():
                return aligned.tokens
    words = [w.text for b in analysis.bindings for w in (b.entity, *b.modifiers)]
    raise ConfigError(f"{word!r} is not a bound word of {analysis.prompt!r} (bound: {', '.join(words)})")


def context_for(analysis: PromptAnalysis, step: int = 0, num_steps: int = 50, *, timestep: int | float = 999,
                image_index: int = 0, state: dict[str, Any] | None = None, refinement: int = 0) -> GuidanceContext:
    """A ``GuidanceContext`` for calling a loss's ``compute`` directly (step 0 of 50 by
    default, with a fresh private ``state``)."""
    return GuidanceContext(step=step, num_steps=num_steps, timestep=timestep, image_index=image_index,
                           analysis=analysis, state={} if state is None else state, refinement=refinement)


def peaked_maps(analysis: PromptAnalysis | int, peaks: Mapping[str | int, tuple[int, int]], size: int = 16,
                *, strength: float = 8.0, width: float = 1.5) -> torch.Tensor:
    """Attention maps ``[tokens, size, size]`` float32 in which each named token peaks at a pixel.

    Each pixel's attention sums to 1 over the tokens, as captured maps do: the maps are a softmax
    over tokens of logits that are 0 except for a Gaussian bump of height ``strength`` and
    standard deviation ``width`` (pixels) centred on each token's ``(row, col)``.

    Args:
        analysis: a prompt analysis (``tokens`` = 77 for CLIP) or a number of tokens.
        peaks: ``{word or token position: (row, col)}``; a word (looked up with
            ``positions``) peaks on every one of its pieces.
    """
    tokens = len(analysis.tokens.pieces) if isinstance(analysis, PromptAnalysis) else int(analysis)
    if isinstance(analysis, PromptAnalysis):
        tokens = max(tokens, 77)
    rows = torch.arange(size, dtype=torch.float32)[:, None]
    cols = torch.arange(size, dtype=torch.float32)[None, :]
    logits = torch.zeros(tokens, size, size)
    for key, (row, col) in peaks.items():
        if isinstance(key, str):
            if not isinstance(analysis, PromptAnalysis):
                raise ConfigError(f"peaked_maps: word {key!r} needs an analysis, not a token count")
            targets = positions(analysis, key)
        else:
            targets = (key,)
        bump = strength * torch.exp(-((rows - row) ** 2 + (cols - col) ** 2) / (2 * width**2))
        for position in targets:
            logits[position] += bump
    return logits.softmax(dim=0)


def random_maps(tokens: int = 77, size: int = 16, *, seed: int = 0, temperature: float = 1.0) -> torch.Tensor:
    """Random attention maps ``[tokens, size, size]`` float32 (softmax over tokens of seeded
    Gaussian logits divided by ``temperature``): every pixel sums to 1 over tokens."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(tokens, size, size, generator=generator) / temperature
    return logits.softmax(dim=0)


@functools.lru_cache(maxsize=1)
def tiny_engine() -> Engine:
    """An ``Engine`` over the tiny random-weight pipeline with DDIM (built once per process).
    Its cross-attention is sharpened so that guidance visibly moves the latents."""
    from .engine.engine import Engine
    from .models.loading import load_pipeline

    return Engine(load_pipeline("tiny", scheduler="ddim"), parser="manual")


def run_plugin(plugin: Any, prompt: str, bindings: Bindings, *, steps: int = 4, seed: int = 0,
               callbacks: Sequence[Any] = (), engine: Engine | None = None) -> list[LossRecord]:
    """Run ``plugin`` (an instance, a registered name, or a spec mapping) through the real
    engine for ``steps`` denoising steps on the tiny model and return its per-step
    ``LossRecord`` s (an empty list means it never returned a term).

    The run uses ``analysis_for(prompt, bindings)`` for the prompt's bindings, 256x256 images
    (16x16 maps), and skips decoding. ``engine`` defaults to ``tiny_engine()``.
    """
    from .models.families import text_tokenizer

    engine = engine if engine is not None else tiny_engine()
    analysis = analysis_for(prompt, bindings, text_tokenizer(engine.pipe))
    result = engine.generate(prompt, [seed], losses=[plugin], callbacks=list(callbacks), analyses=[analysis],
                             steps=steps, height=256, width=256, output_type="latent", progress=False)
    return list(result.records[0].losses)
