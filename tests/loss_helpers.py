"""Small builders for loss-plugin tests: words, bindings and a GuidanceContext, no parser."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch

from attnguide.types import (
    AlignedBinding,
    AlignedWord,
    GuidanceContext,
    PromptAnalysis,
    PromptTokens,
)


def word(text: str, *tokens: int) -> AlignedWord:
    """An aligned word at token positions ``tokens`` (several for a multi-piece word)."""
    return AlignedWord(text=text, tokens=tuple(tokens))


def binding(entity: AlignedWord, *modifiers: AlignedWord) -> AlignedBinding:
    return AlignedBinding(entity=entity, modifiers=tuple(modifiers))


def make_context(
    bindings: list[AlignedBinding],
    num_prompt_tokens: int,
    *,
    step: int = 0,
    num_steps: int = 50,
    state: dict[str, Any] | None = None,
    refinement: int = 0,
) -> GuidanceContext:
    """A context for a prompt of ``num_prompt_tokens`` tokens: positions ``1 .. n``, end token
    at ``n + 1``."""
    n = num_prompt_tokens
    pieces = ("<|startoftext|>", *(f"tok{i}</w>" for i in range(1, n + 1)), "<|endoftext|>")
    tokens = PromptTokens(
        prompt="synthetic prompt",
        pieces=pieces,
        prompt_positions=tuple(range(1, n + 1)),
        eot_position=n + 1,
    )
    analysis = PromptAnalysis(prompt="synthetic prompt", tokens=tokens, bindings=list(bindings))
    return GuidanceContext(
        step=step,
        num_steps=num_steps,
        timestep=999,
        image_index=0,
        analysis=analysis,
        state={} if state is None else state,
        refinement=refinement,
    )


def random_maps(num_tokens: int, size: int = 4, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """``[num_tokens, size, size]`` attention probabilities: each pixel sums to 1 over tokens."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_tokens, size, size, generator=gen, dtype=dtype)
    return torch.softmax(logits, dim=0)


# --- independent numpy references -------------------------------------------------------------


def np_sym_kl(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric KL of two maps read as pixel distributions (all pixels > 0 here)."""
    p = np.asarray(a, dtype=np.float64).ravel()
    q = np.asarray(b, dtype=np.float64).ravel()
    p, q = p / p.sum(), q / q.sum()
    return float((np.sum(p * np.log(p / q)) + np.sum(q * np.log(q / p))) / 2)


def np_entropy(a: np.ndarray) -> float:
    p = np.asarray(a, dtype=np.float64).ravel()
    p = p / p.sum()
    return float(-np.sum(p * np.log(p)))


def np_ae_weights() -> np.ndarray:
    """A&E's 1-D weights: exp(-((x - 1) / (2 * 0.5)) ** 2) on x = 0, 1, 2, normalised."""
    w = np.exp(-(((np.arange(3) - 1.0) / 1.0) ** 2))
    return w / w.sum()


def np_smooth(a: np.ndarray) -> np.ndarray:
    """3x3 A&E smoothing of one map by explicit loops over a reflect-padded copy."""
    w = np_ae_weights()
    kernel = np.outer(w, w)
    padded = np.pad(np.asarray(a, dtype=np.float64), 1, mode="reflect")
    out = np.zeros_like(np.asarray(a, dtype=np.float64))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = np.sum(padded[i : i + 3, j : j + 3] * kernel)
    return out


def np_ae_process(maps: np.ndarray, stop: int) -> np.ndarray:
    """Slice tokens [1:stop], scale by 100, softmax over tokens (numpy, float64)."""
    x = np.asarray(maps, dtype=np.float64)[1:stop] * 100.0
    x = np.exp(x - x.max(axis=0, keepdims=True))
    return x / x.sum(axis=0, keepdims=True)


def syngen_reference_reading(maps: torch.Tensor, subtrees: list[list], prompt_positions: Any,
                             include_entities: bool = False) -> float:
    """An independent re-reading of the SynGen reference's loop: subtree = [modifiers..., noun],
    each item an int or a list of pieces; Categorical on the flattened maps. With
    ``include_entities`` a subtree without modifiers gives the noun's negative term alone (no
    1/2); without it such a subtree gives nothing."""

    def sym(a: int, b: int) -> float:
        p = torch.distributions.Categorical(probs=maps[a].reshape(-1))
        q = torch.distributions.Categorical(probs=maps[b].reshape(-1))
        kl = torch.distributions.kl_divergence
        return float((kl(p, q) + kl(q, p)) / 2)

    def pieces(item: Any) -> list[int]:
        return item if isinstance(item, list) else [item]

    def negative(src: Any, outside: list[int]) -> float:
        vals = [max(sym(t, u) for t in pieces(src)) for u in outside]
        return -sum(vals) / len(outside) if outside else 0.0

    total = 0.0
    for subtree in subtrees:
        noun, modifiers = subtree[-1], subtree[:-1]
        inside = {p for item in subtree for p in pieces(item)}
        outside = [p for p in prompt_positions if p not in inside]
        if include_entities and not modifiers:
            total += negative(noun, outside)
        for modifier in modifiers:
            total += max(sym(s, d) for s, d in itertools.product(pieces(modifier), pieces(noun)))
            total += (negative(modifier, outside) + negative(noun, outside)) / 2
    return total
