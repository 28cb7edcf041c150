"""A-STAR (Agarwal et al., ICCV 2023): segregate the concepts' attention, retain it across steps.

Implemented from the paper (no official code). With ``A^m`` the attention map of concept ``m``
(A&E-processed by default) and ``B^m`` its binarised map from the previous guided step::

    L_seg = sum_{m > n} sum_ij min(A^m, A^n) / sum_ij (A^m + A^n)
    L_ret = sum_m [ 1 - sum_ij min(A^m, B^m) / sum_ij (A^m + B^m) ]
    L     = L_seg + L_ret

Concepts are the prompt's entities. The first guided step has no ``B`` and only ``L_seg``; one
concept has no pair and only ``L_ret``. The paper leaves the binarisation threshold and the
step size open: see docs/methods.md for the choices made here.
"""

from __future__ import annotations

from typing import Any, Literal

import pydantic

from attnguide import LossParams, LossPlugin
from attnguide.lazy import torch
from attnguide.types import AlignedWord, GuidanceContext, LossTerm

from ._maps import (
    as_float,
    attend_excite_step_size,
    binarize_otsu,
    binarize_relative_max,
)
from .attend_excite import TokenSlice, slice_start, slice_stop, subject_maps, subjects
from .syngen import zero_with_graph

# Guards the ratios against an all-zero raw map; processed maps are strictly positive.
_TINY = 1e-12


class AStarParams(LossParams):
    scale_factor: float = pydantic.Field(
        20.0, gt=0, description="alpha_t = scale_factor * sqrt(linspace(1, 0.5, T)[t]), as A&E"
    )
    binarize: Literal["relative_max", "otsu"] = pydantic.Field(
        "relative_max", description="how B^m is made from the previous step's map"
    )
    threshold: float = pydantic.Field(
        0.5, ge=0, le=1, description="relative_max: B = A >= threshold * max(A)"
    )
    attention: Literal["processed", "raw"] = pydantic.Field(
        "processed",
        description="processed: A&E's x100 softmax over tokens and Gaussian smoothing; "
        "raw: the layer-averaged probabilities",
    )
    token_slice: TokenSlice = pydantic.Field("sd1", description="processed maps' slice, as A&E")


def overlap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum_ij min(a, b) / sum_ij (a + b)`` over the last two axes: ``[..., H, W] -> [...]``."""
    shared = torch.minimum(a, b).flatten(-2).sum(-1)
    total = (a + b).flatten(-2).sum(-1).clamp(min=_TINY)
    return shared / total


def segregation_loss(concepts: torch.Tensor) -> torch.Tensor:
    """``L_seg`` over every unordered pair of ``concepts: [C, H, W]`` (0 when ``C < 2``)."""
    first, second = torch.triu_indices(len(concepts), len(concepts), offset=1).tolist()
    if not first:
        return zero_with_graph(concepts)
    return overlap(concepts[first], concepts[second]).sum()


def retention_loss(concepts: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``L_ret`` of ``concepts: [C, H, W]`` against the previous binarised ``masks: [C, H, W]``."""
    return (1.0 - overlap(concepts, masks)).sum()


def _concept_keys(words: list[AlignedWord]) -> tuple[tuple[int, ...], ...]:
    return tuple(word.tokens for word in words)


def previous_masks(state: dict[str, Any], step: int) -> dict[tuple[int, ...], torch.Tensor]:
    """Masks of the latest guided step before ``step`` (refinement passes of ``step`` itself
    re-read the same previous masks, not their own)."""
    if state.get("current_step") is not None and state["current_step"] < step:
        state["previous"] = state.pop("current")
        state["current_step"] = None
    previous: dict[tuple[int, ...], torch.Tensor] = state.get("previous", {})
    return previous


class AStarLoss(LossPlugin[AStarParams]):
    """A-STAR: attention segregation between concepts plus retention of each concept's mask."""

    name = "astar"
    Params = AStarParams
    default_window = (0.0, 0.5)
    family_defaults = {"flux": {"token_slice": "prompt"}}  # as Attend-and-Excite's

    def _concept_maps(self, maps: torch.Tensor, ctx: GuidanceContext,
                      words: list[AlignedWord]) -> torch.Tensor:
        params = self.params
        if params.attention == "raw":
            return torch.stack([maps[list(w.tokens)].amax(dim=0) for w in words])
        stop = slice_stop(maps, ctx.analysis, params.token_slice)
        return subject_maps(maps, words, stop, smooth=True, start=slice_start(ctx.analysis))

    def compute(self, ctx: GuidanceContext, maps: torch.Tensor) -> LossTerm | None:
        params = self.params
        words = subjects(ctx.analysis)
        if not words:
            return None
        concepts = self._concept_maps(maps, ctx, words)  # [C, H, W]
        keys = _concept_keys(words)

        seg = segregation_loss(concepts)
        previous = previous_masks(ctx.state, ctx.step)
        has_ret = bool(previous) and all(key in previous for key in keys)
        if has_ret:
            masks = torch.stack([previous[key] for key in keys]).to(concepts)
            ret = retention_loss(concepts, masks)
        else:
            ret = zero_with_graph(concepts)

        if params.binarize == "otsu":
            new_masks = binarize_otsu(concepts)
        else:
            new_masks = binarize_relative_max(concepts, params.threshold)
        ctx.state["current"] = dict(zip(keys, new_masks))
        ctx.state["current_step"] = ctx.step

        value = seg + ret
        return LossTerm(
            value=value,
            step_size=attend_excite_step_size(ctx.step, ctx.num_timesteps, params.scale_factor),
            logs={"seg": as_float(seg), "ret": as_float(ret), "has_retention": float(has_ret)},
        )
