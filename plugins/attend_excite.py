"""Attend-and-Excite (Chefer et al., SIGGRAPH 2023): make every subject token attended somewhere.

Per the reference code: keep the token slice ``maps[1:stop]``, multiply by 100, softmax over
tokens; smooth each subject's map with a 3x3 Gaussian (reflect padding); take its max::

    L = max over subjects s of max(0, 1 - max_ij A_s[i, j])

Subjects are the prompt's entities. The step size is ``scale_factor * sqrt(linspace(1, 0.5,
T)[i])``; at the refinement steps ``{0: 0.05, 10: 0.5, 20: 0.8}`` the engine refines the
latents until ``L <= 1 - threshold`` (at most ``max_refinement_steps`` times).
"""

from __future__ import annotations

import math
from typing import Literal

import pydantic

from attnguide import LossParams, LossPlugin
from attnguide.lazy import torch
from attnguide.types import AlignedWord, GuidanceContext, LossTerm, PromptAnalysis

from ._maps import (
    as_float,
    attend_excite_preprocess,
    attend_excite_step_size,
    gaussian_smooth,
)

TokenSlice = Literal["sd1", "prompt"]

# The reference's thresholds are step indices of a 50-step schedule.
REFERENCE_NUM_STEPS = 50


class AttendExciteParams(LossParams):
    scale_factor: float = pydantic.Field(20.0, gt=0, description="alpha at step 0")
    thresholds: dict[int, float] = pydantic.Field(
        default_factory=lambda: {0: 0.05, 10: 0.5, 20: 0.8},
        description="step (of a 50-step schedule) -> max attention to reach by refinement",
    )
    max_refinement_steps: int = pydantic.Field(20, ge=0, description="refinement cap")
    token_slice: TokenSlice = pydantic.Field(
        "sd1",
        description="softmax over tokens 1..75 incl. end/padding (SD 1.x reference) "
        "or over the prompt's tokens only (SD 2.x reference)",
    )
    smooth: bool = pydantic.Field(True, description="3x3 Gaussian smoothing before the max")

    @pydantic.field_validator("thresholds")
    @classmethod
    def _check_thresholds(cls, value: dict[int, float]) -> dict[int, float]:
        for step, threshold in value.items():
            if step < 0:
                raise ValueError(f"step keys must be >= 0, got {step}")
            if not 0.0 <= threshold <= 1.0:
                raise ValueError(f"thresholds must lie in [0, 1], got {threshold} at step {step}")
        return value


def subjects(analysis: PromptAnalysis) -> list[AlignedWord]:
    """The prompt's entities with token positions, each token tuple once, in prompt order."""
    seen: set[tuple[int, ...]] = set()
    out = []
    for entity in analysis.entities:
        if entity.tokens and entity.tokens not in seen:
            seen.add(entity.tokens)
            out.append(entity)
    return out


def slice_stop(maps: torch.Tensor, analysis: PromptAnalysis, token_slice: TokenSlice) -> int:
    """Exclusive end of A&E's token slice: ``tokens - 1`` ([1:-1]) or the end-of-text position."""
    return maps.shape[0] - 1 if token_slice == "sd1" else analysis.tokens.eot_position


def slice_start(analysis: PromptAnalysis) -> int:
    """Start of A&E's token slice: the first prompt position (1 after CLIP's start token, as the
    reference; 0 for T5 on Flux, which has no start token)."""
    return analysis.tokens.prompt_positions[0] if analysis.tokens.prompt_positions else 1


def subject_maps(
    maps: torch.Tensor, words: list[AlignedWord], stop: int, smooth: bool, start: int = 1
) -> torch.Tensor:
    """A&E-processed map of each word: ``[len(words), H, W]``.

    ``maps: [tokens, H, W]`` are sliced to ``[start:stop]``, scaled by 100 and softmaxed over
    tokens, each word's pieces smoothed (if ``smooth``), then reduced by an elementwise max
    over the pieces, so a multi-piece word counts as attended where any of its pieces is.
    Pieces outside the slice are ignored; a word left with none raises ``ValueError``.
    """
    return pieces_max(attend_excite_preprocess(maps, stop, start), words, start, stop, smooth)


def pieces_max(processed: torch.Tensor, words: list[AlignedWord], start: int, stop: int,
               smooth: bool) -> torch.Tensor:
    """``[len(words), H, W]`` from A&E-processed maps (row ``k`` = position ``k + start``): each
    word's pieces inside ``[start:stop]`` smoothed (if ``smooth``), then their elementwise max."""
    out = []
    for word in words:
        rows = [p - start for p in word.tokens if start <= p < stop]
        if not rows:
            raise ValueError(f"word {word.text!r} has no token inside the slice [{start}:{stop}]")
        pieces = processed[rows]
        if smooth:
            pieces = gaussian_smooth(pieces)
        out.append(pieces.amax(dim=0))
    return torch.stack(out)


def refinement_thresholds(thresholds: dict[int, float], num_steps: int) -> dict[int, float]:
    """Map the reference's 50-step keys to a ``num_steps`` schedule.

    Key ``k`` becomes ``floor(k * num_steps / 50 + 0.5)`` (unchanged at 50 steps); keys that
    land on the same step keep the strictest (largest) threshold.
    """
    out: dict[int, float] = {}
    for step, threshold in thresholds.items():
        scaled = math.floor(step * num_steps / REFERENCE_NUM_STEPS + 0.5)
        out[scaled] = max(threshold, out.get(scaled, threshold))
    return out


class AttendExciteLoss(LossPlugin[AttendExciteParams]):
    """Attend-and-Excite: raise the weakest subject's maximum attention."""

    name = "attend_excite"
    Params = AttendExciteParams
    # The reference alters latents while i < max_iter_to_alter = 25 of 50 steps.
    default_window = (0.0, 0.5)
    # Flux's maps cover 512 T5 positions, most of them padding: softmax over the prompt's own
    # tokens (start .. end-of-text) instead of SD 1.x's [1:-1] of 77.
    family_defaults = {"flux": {"token_slice": "prompt"}}

    def compute(self, ctx: GuidanceContext, maps: torch.Tensor) -> LossTerm | None:
        params = self.params
        words = subjects(ctx.analysis)
        if not words:
            return None
        stop = slice_stop(maps, ctx.analysis, params.token_slice)
        start = slice_start(ctx.analysis)
        max_attention = subject_maps(maps, words, stop, params.smooth, start).flatten(1).amax(dim=1)
        losses = (1.0 - max_attention).clamp(min=0.0)
        value = losses.max()

        logs = {"loss": as_float(value), "min_max_attention": as_float(max_attention.min())}
        for k, (word, attn) in enumerate(zip(words, max_attention.detach().tolist())):
            logs[f"max_attention.{k}.{word.text}"] = attn

        term = LossTerm(
            value=value,
            step_size=attend_excite_step_size(ctx.step, ctx.num_timesteps, params.scale_factor),
            logs=logs,
        )
        threshold = refinement_thresholds(params.thresholds, ctx.num_steps).get(ctx.step)
        if threshold is not None:
            term.refine_below = max(0.0, 1.0 - threshold)
            term.max_refinement = params.max_refinement_steps
        return term
