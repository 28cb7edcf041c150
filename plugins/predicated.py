"""Predicated Diffusion (Sueyoshi & Matsubara, CVPR 2024): the prompt as fuzzy-logic propositions.

Each pixel of a token's attention map is read as the truth value of a fuzzy predicate, and a
proposition about the prompt becomes a loss through product fuzzy logic (``a AND b = ab``,
``NOT a = 1 - a``, ``a -> b = NOT(a AND NOT b)``, and ``-log`` of the truth value). With ``A``
a word's map min-max normalised to ``[0, 1]`` and ``E`` its Attend-and-Excite-processed map
(100x softmax over the token slice, no smoothing), and every pixel sum divided by ``H * W``::

    L_exist = -log(1 - exp(sum_ij log(1 - E_n / (1 + e_E)) / HW) + eps)  each entity n
    L_corr  = -sum_ij [log(1 - A_n (1 - A_m) + eps) + log(1 - A_m (1 - A_n) + eps)] / HW
                                                            each (modifier m, its entity n)
    L_leak  = -sum_ij log(1 - A_n' A_m + eps) / HW    each modifier m and OTHER entity n'
    L       = 0.1 mean(L_exist) + mean(L_corr) + 0.3 mean(L_leak)

Existence is "some pixel shows n" as a product-probability OR over pixels, normalised by the
pixel count; correspondence is the implication both ways between a modifier and its noun;
leak is "no pixel is both n' and m". The paper's possession term
``-sum log(1 - A_poss (1 - A_holder))`` is not implemented: the prompt analysis gives no
possession relations. Step size ``scale_factor * sqrt(linspace(1, 0.5, T)[i])`` (A&E's), window
(0, 0.5), and 5 extra updates at step 0. There is no official code; defaults follow the A&E-based
derivative (``PredicatedDiffPipeline``). See docs/methods.md for every difference from it.
"""

from __future__ import annotations

import math

import pydantic

from attnguide import LossParams, LossPlugin
from attnguide.lazy import torch
from attnguide.types import AlignedWord, GuidanceContext, LossTerm, PromptAnalysis

from ._maps import as_float, attend_excite_step_size
from .attend_excite import (
    TokenSlice,
    refinement_thresholds,
    slice_start,
    slice_stop,
    subject_maps,
    subjects,
)
from .syngen import guided_bindings, zero_with_graph

# Guards the min-max normalisation of a constant map (which then normalises to all zeros).
_TINY = 1e-12

Pair = tuple[AlignedWord, AlignedWord]


class PredicatedParams(LossParams):
    scale_factor: float = pydantic.Field(
        20.0, gt=0, description="alpha_t = scale_factor * sqrt(linspace(1, 0.5, T)[t]), as A&E"
    )
    exist_weight: float = pydantic.Field(0.1, ge=0, description="weight of the existence term")
    corr_weight: float = pydantic.Field(1.0, ge=0, description="weight of the correspondence term")
    leak_weight: float = pydantic.Field(0.3, ge=0, description="weight of the leak term")
    eps: float = pydantic.Field(
        1e-6, gt=0, lt=1, description="added inside every outer -log (derivative code: 1e-20)"
    )
    exist_eps: float = pydantic.Field(
        1e-4, gt=0, lt=1, description="existence: log(1 - E / (1 + exist_eps)) per pixel"
    )
    token_slice: TokenSlice = pydantic.Field(
        "sd1", description="existence maps' softmax slice, as Attend-and-Excite"
    )
    refinement_steps: list[pydantic.NonNegativeInt] = pydantic.Field(
        default_factory=lambda: [0],
        description="steps (of a 50-step schedule) with a fixed number of extra updates",
    )
    refinement_iterations: int = pydantic.Field(
        5, ge=0, description="extra updates at each refinement step (0: none)"
    )


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Each map rescaled to ``[0, 1]``: ``(A - min A) / (max A - min A)``.

    Args:
        maps: ``[..., H, W]``.

    Returns:
        ``[..., H, W]``; a constant map becomes all zeros (the range is clamped at 1e-12).
    """
    flat = maps.flatten(-2)
    low = flat.amin(-1)[..., None, None]
    high = flat.amax(-1)[..., None, None]
    return (maps - low) / (high - low).clamp(min=_TINY)


def word_maps(maps: torch.Tensor, words: list[AlignedWord]) -> torch.Tensor:
    """Min-max normalised raw map of each word, ``[len(words), H, W]``; a multi-piece word
    takes the elementwise max over its pieces before normalising."""
    return minmax(torch.stack([maps[list(w.tokens)].amax(dim=0) for w in words]))


def existence_loss(processed: torch.Tensor, exist_eps: float, eps: float) -> torch.Tensor:
    """``-log(1 - exp(mean_ij log(1 - E / (1 + exist_eps))) + eps)`` per map.

    Args:
        processed: ``[N, H, W]`` maps in ``[0, 1]`` (A&E-processed).

    Returns:
        ``[N]``. ``exp(mean log(1 - E))`` is the geometric mean of ``1 - E`` over the pixels,
        the normalised product "no pixel shows the entity"; it is at most 1, so the loss is
        finite and >= -log(1 + eps) even for an all-zero or all-one map.
    """
    none_shows = torch.exp(torch.log1p(-processed / (1.0 + exist_eps)).flatten(1).mean(-1))
    return -torch.log((1.0 - none_shows).clamp(min=0.0) + eps)


def correspondence_loss(entity: torch.Tensor, modifier: torch.Tensor, eps: float) -> torch.Tensor:
    """``-mean_ij [log(1 - A_n (1 - A_m) + eps) + log(1 - A_m (1 - A_n) + eps)]``.

    Args:
        entity, modifier: ``[P, H, W]`` normalised maps of ``P`` (entity, modifier) pairs.

    Returns:
        ``[P]``.
    """
    n_to_m = torch.log(1.0 - entity * (1.0 - modifier) + eps)
    m_to_n = torch.log(1.0 - modifier * (1.0 - entity) + eps)
    return -(n_to_m + m_to_n).flatten(1).mean(-1)


def leak_loss(entity: torch.Tensor, modifier: torch.Tensor, eps: float) -> torch.Tensor:
    """``-mean_ij log(1 - A_n' A_m + eps)`` for ``[P, H, W]`` maps of ``P`` (other entity,
    modifier) pairs: ``[P]``."""
    return -torch.log(1.0 - entity * modifier + eps).flatten(1).mean(-1)


def correspondence_pairs(analysis: PromptAnalysis) -> list[Pair]:
    """``(entity, modifier)`` for every modifier of every attribute binding, in prompt order."""
    return [(b.entity, m) for b in guided_bindings(analysis.attribute_bindings) for m in b.modifiers]


def leak_pairs(analysis: PromptAnalysis) -> list[Pair]:
    """``(other entity, modifier)``: each modifier against every entity of another binding
    (with or without modifiers), each token pair once."""
    entities = subjects(analysis)
    seen: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()
    out: list[Pair] = []
    for binding in guided_bindings(analysis.attribute_bindings):
        for modifier in binding.modifiers:
            for other in entities:
                key = (other.tokens, modifier.tokens)
                if other.tokens == binding.entity.tokens or key in seen:
                    continue
                seen.add(key)
                out.append((other, modifier))
    return out


def _pair_maps(maps: torch.Tensor, pairs: list[Pair]) -> tuple[torch.Tensor, torch.Tensor]:
    return word_maps(maps, [p[0] for p in pairs]), word_maps(maps, [p[1] for p in pairs])


class PredicatedLoss(LossPlugin[PredicatedParams]):
    """Predicated Diffusion: existence, attribute correspondence and leak as fuzzy logic."""

    name = "predicated"
    Params = PredicatedParams
    # The derivative alters latents while i < max_iter_to_alter = 25 of 50 steps.
    default_window = (0.0, 0.5)
    family_defaults = {"flux": {"token_slice": "prompt"}}  # as Attend-and-Excite's

    def compute(self, ctx: GuidanceContext, maps: torch.Tensor) -> LossTerm | None:
        params = self.params
        analysis = ctx.analysis
        entities = subjects(analysis)
        corr, leak = correspondence_pairs(analysis), leak_pairs(analysis)
        if not entities and not corr:
            return None

        zero = zero_with_graph(maps)
        exist_value = corr_value = leak_value = zero
        if entities:
            stop, start = slice_stop(maps, analysis, params.token_slice), slice_start(analysis)
            processed = subject_maps(maps, entities, stop, smooth=False, start=start)
            exist_value = existence_loss(processed, params.exist_eps, params.eps).mean()
        if corr:
            corr_value = correspondence_loss(*_pair_maps(maps, corr), params.eps).mean()
        if leak:
            leak_value = leak_loss(*_pair_maps(maps, leak), params.eps).mean()
        value = (params.exist_weight * exist_value + params.corr_weight * corr_value
                 + params.leak_weight * leak_value)

        term = LossTerm(
            value=value,
            step_size=attend_excite_step_size(ctx.step, ctx.num_timesteps, params.scale_factor),
            logs={"exist": as_float(exist_value), "corr": as_float(corr_value), "leak": as_float(leak_value),
                  "n_exist": float(len(entities)), "n_corr": float(len(corr)), "n_leak": float(len(leak))},
        )
        refine_at = refinement_thresholds({s: 0.0 for s in params.refinement_steps}, ctx.num_steps)
        if params.refinement_iterations and ctx.step in refine_at:
            term.refine_below = -math.inf  # a fixed number of extra updates, no stop test
            term.max_refinement = params.refinement_iterations
        return term
