"""Divide & Bind (Li et al., BMVC 2023): spread every object's attention, bind its attributes.

Implemented from reading the official pipeline (``boschresearch/Divide-and-Bind``,
``divide_and_bind/pipeline_divide_and_bind_latest.py``, commit 644dfda, ``loss_mode="tv_bind"``).
That code is AGPL-3.0: nothing of it is copied here, the formulas below are restated.

With ``A_s`` subject ``s``'s map after Attend-and-Excite's preprocessing (``maps[1:-1]``, x100,
softmax over tokens, 3x3 Gaussian smoothing), ``H x W`` its grid::

    TV(A)   = mean_{i, j<W-1} |A[i, j] - A[i, j+1]|  +  V(A)
    V(A)    = mean_{1<=i<H, j} |A[H-1, j] - A[i, j]|     ("reference", the official code)
            = mean_{i<H-1, j}  |A[i, j] - A[i+1, j]|     ("neighbour", the textbook form)

The official code's vertical term compares the *last row* with every other row but the first
(a broadcast), not neighbouring rows; it is reproduced by default (``tv_vertical``).

For a subject ``s`` with a modifier ``a`` (its map ``C_a``: the same preprocessing applied to
the cross-attention of the ``attribute_resolutions`` layers, nearest-resized to ``H x W`` and
averaged over the resolutions)::

    C'      = C_a / max C_a * max A_s
    p, q    = softmax(vec A_s), softmax(vec C')           (over the H*W pixels)
    t       = f * max p,   f = 0.3 if TV(A_s) < 0.1 else 0.2
    p~, q~  = relu(p - t) + 1e-5,  relu(q - t) + 1e-5      (both cut at the *object's* t)
    JSD     = 1/2 sum p~ log(p~ / m) + 1/2 sum q~ log(q~ / m),   m = (p~ + q~) / 2

(``p~, q~`` are not renormalised.) Per subject ``l_s = -TV(A_s) + w_i * B_s`` with ``B_s`` the
mean (or sum) of the JSD over its modifiers (``B_s = 0`` without any), ``w_i`` = 1, 5, 10 from
steps 0, 10, 20 (of 50), and::

    L = max_s l_s

Step size ``scale_factor * sqrt(linspace(1, 0.5, T)[i])`` (A&E's), window (0, 0.5). At steps
0, 10, 20 (of 50) the engine refines while ``min_s TV(A_s)`` is below 0.05, 0.2, 0.3
(at most 100 iterations at step 0, 50 otherwise). See docs/methods.md for every difference
from the official code.
"""

from __future__ import annotations

import math
from typing import Literal

import pydantic

from attnguide import LossParams, LossPlugin, MapRequest
from attnguide.lazy import F, torch
from attnguide.types import AlignedWord, GuidanceContext, LossTerm, PromptAnalysis

from ._maps import as_float, attend_excite_step_size
from .attend_excite import (
    REFERENCE_NUM_STEPS,
    TokenSlice,
    refinement_thresholds,
    slice_start,
    slice_stop,
    subject_maps,
    subjects,
)
from .syngen import guided_bindings

TvVertical = Literal["reference", "neighbour"]


class DivideBindParams(LossParams):
    scale_factor: float = pydantic.Field(
        20.0, gt=0, description="alpha_t = scale_factor * sqrt(linspace(1, 0.5, T)[t]), as A&E"
    )
    thresholds: dict[int, float] = pydantic.Field(
        default_factory=lambda: {0: 0.05, 10: 0.2, 20: 0.3},
        description="step (of a 50-step schedule) -> min total variation to reach by refinement",
    )
    max_refinement_steps: int = pydantic.Field(
        50, ge=0, description="refinement cap at the refinement steps after step 0"
    )
    max_refinement_steps_first: int = pydantic.Field(
        100, ge=0, description="refinement cap at step 0"
    )
    bind: bool = pydantic.Field(
        True, description="add the binding term (the official 'tv_bind'); False: attendance only ('tv')"
    )
    bind_weights: dict[int, float] = pydantic.Field(
        default_factory=lambda: {0: 1.0, 10: 5.0, 20: 10.0},
        description="step (of a 50-step schedule) from which a weight of the binding term holds",
    )
    mask_fraction: float = pydantic.Field(
        0.2, ge=0, le=1, description="binding: cut both distributions at this fraction of the object's max"
    )
    mask_fraction_low_tv: float = pydantic.Field(
        0.3, ge=0, le=1, description="... this fraction instead while the object's TV is below low_tv"
    )
    low_tv: float = pydantic.Field(0.1, ge=0, description="TV below which mask_fraction_low_tv applies")
    mask_eps: float = pydantic.Field(1e-5, gt=0, description="added to both cut distributions")
    tv_vertical: TvVertical = pydantic.Field(
        "reference",
        description="vertical TV term: the official code's last-row-against-every-row broadcast, "
        "or neighbouring rows",
    )
    attribute_resolutions: list[pydantic.PositiveInt] = pydantic.Field(
        default_factory=lambda: [64, 32],
        description="cross-attention grids the attribute maps come from (official: 64 and 32 "
        "at 512 px); [] reads them from the default maps",
    )
    modifier_reduction: Literal["mean", "sum"] = pydantic.Field(
        "mean", description="how a subject's several modifiers' JSDs combine (official: one modifier)"
    )
    token_slice: TokenSlice = pydantic.Field("sd1", description="softmax slice over tokens, as A&E")
    smooth: bool = pydantic.Field(True, description="3x3 Gaussian smoothing of every map")

    @pydantic.field_validator("thresholds")
    @classmethod
    def _check_thresholds(cls, value: dict[int, float]) -> dict[int, float]:
        for step, threshold in value.items():
            if step < 0:
                raise ValueError(f"step keys must be >= 0, got {step}")
            if threshold < 0:
                raise ValueError(f"thresholds must be >= 0, got {threshold} at step {step}")
        return value

    @pydantic.field_validator("bind_weights")
    @classmethod
    def _check_weights(cls, value: dict[int, float]) -> dict[int, float]:
        if 0 not in value:
            raise ValueError(f"needs a weight from step 0, got keys {sorted(value)}")
        for step, weight in value.items():
            if step < 0 or weight < 0:
                raise ValueError(f"steps and weights must be >= 0, got {step}: {weight}")
        return value

    @pydantic.field_validator("attribute_resolutions")
    @classmethod
    def _check_resolutions(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"resolutions must be distinct, got {value}")
        return value


# --- the two terms on [..., H, W] maps ----------------------------------------------------------


def total_variation(maps: torch.Tensor, vertical: TvVertical = "reference") -> torch.Tensor:
    """Divide & Bind's total variation of each map, ``[..., H, W] -> [...]``.

    The horizontal term is the mean absolute difference of horizontally neighbouring pixels.
    The vertical term is, with ``"neighbour"``, the same for vertical neighbours; with
    ``"reference"`` (the official code's broadcast) the mean over rows ``1 .. H-1`` and all
    columns of ``|A[H-1, j] - A[i, j]|`` (row ``H - 1`` against itself counts, as 0).
    """
    horizontal = (maps[..., :, :-1] - maps[..., :, 1:]).abs().flatten(-2).mean(-1)
    if vertical == "neighbour":
        rows = (maps[..., :-1, :] - maps[..., 1:, :]).abs()
    else:
        rows = (maps[..., -1:, :] - maps[..., 1:, :]).abs()
    return horizontal + rows.flatten(-2).mean(-1)


def jensen_shannon(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``1/2 sum p log(p/m) + 1/2 sum q log(q/m)``, ``m = (p + q) / 2``, over the last axis.

    ``p, q: [..., N]`` strictly positive; not renormalised (the official code hands it
    distributions cut and shifted by ``mask_eps``, which no longer sum to 1). Returns ``[...]``.
    """
    log_m = torch.log((p + q) / 2)
    return 0.5 * (p * (torch.log(p) - log_m)).sum(-1) + 0.5 * (q * (torch.log(q) - log_m)).sum(-1)


def binding_distributions(
    obj: torch.Tensor, attributes: torch.Tensor, fraction: float | torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two cut pixel distributions the binding term compares.

    Args:
        obj: ``[H, W]`` the subject's processed map.
        attributes: ``[M, H, W]`` its modifiers' processed maps.
        fraction: the cut, as a fraction of the object distribution's max.
        eps: added after the cut.

    Returns:
        ``(p~ [H*W], q~ [M, H*W])``: each attribute map rescaled to the object's max, both read
        as ``softmax`` over the pixels, then ``relu(x - fraction * max p) + eps`` with the
        *object's* ``max p`` for both.
    """
    peak = obj.max()
    scaled = attributes / attributes.flatten(1).amax(1)[:, None, None] * peak
    p = torch.softmax(obj.flatten(), dim=0)
    q = torch.softmax(scaled.flatten(1), dim=1)
    cut = fraction * p.max()
    return F.relu(p - cut) + eps, F.relu(q - cut) + eps


def bind_weight(weights: dict[int, float], step: int, num_steps: int) -> float:
    """The binding weight at ``step``: that of the last key at or before it, the keys (steps of
    a 50-step schedule) moved to ``floor(k * num_steps / 50 + 0.5)``; of keys landing on one
    step the later key wins."""
    current = 0.0
    for key in sorted(weights):
        if math.floor(key * num_steps / REFERENCE_NUM_STEPS + 0.5) <= step:
            current = weights[key]
    return current


def resized_mean(maps: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """``[tokens, h_k, w_k]`` maps nearest-resized to ``size`` and averaged: ``[tokens, *size]``."""
    resized = [m if tuple(m.shape[-2:]) == size else F.interpolate(m[None], size=size, mode="nearest")[0]
               for m in maps]
    return torch.stack(resized).mean(0)


def subject_modifiers(analysis: PromptAnalysis, words: list[AlignedWord]) -> list[list[AlignedWord]]:
    """For each subject of ``words``, the aligned modifiers of every binding of that entity,
    each token tuple once, in prompt order."""
    out: list[list[AlignedWord]] = [[] for _ in words]
    index = {w.tokens: k for k, w in enumerate(words)}
    for binding in guided_bindings(analysis.bindings):
        k = index.get(binding.entity.tokens)
        if k is None:
            continue
        for modifier in binding.modifiers:
            if all(modifier.tokens != m.tokens for m in out[k]):
                out[k].append(modifier)
    return out


class DivideBindLoss(LossPlugin[DivideBindParams]):
    """Divide & Bind: maximise the weakest subject's total variation, bind its attributes (JSD)."""

    name = "divide_bind"
    Params = DivideBindParams
    # The official pipeline alters latents while i < max_iter_to_alter = 25 of 50 steps.
    default_window = (0.0, 0.5)
    # Joint-attention models have no UNet grids to ask for: attribute maps from the default maps.
    family_defaults = {"sd3": {"attribute_resolutions": []},
                       "flux": {"attribute_resolutions": [], "token_slice": "prompt"}}

    def map_requests(self) -> tuple[MapRequest, ...]:
        """The cross-attention grids of the attribute maps (none with ``bind`` off)."""
        if not self.params.bind:
            return ()
        return tuple(MapRequest("cross", r) for r in self.params.attribute_resolutions)

    def _attribute_source(self, ctx: GuidanceContext, maps: torch.Tensor) -> torch.Tensor:
        """``[tokens, H, W]``: the requested grids' maps resized to ``maps``' grid and averaged,
        or ``maps`` itself when no grid is requested."""
        requests = self.map_requests()
        if not requests:
            return maps
        missing = [r.describe() for r in requests if r not in ctx.extra_maps]
        if missing:
            raise ValueError(f"no {', '.join(missing)} in ctx.extra_maps (the engine fills them from map_requests())")
        size = (int(maps.shape[-2]), int(maps.shape[-1]))
        return resized_mean([ctx.extra_maps[r].to(maps) for r in requests], size)

    def compute(self, ctx: GuidanceContext, maps: torch.Tensor) -> LossTerm | None:
        params = self.params
        analysis = ctx.analysis
        words = subjects(analysis)
        if not words:
            return None
        stop, start = slice_stop(maps, analysis, params.token_slice), slice_start(analysis)
        objects = subject_maps(maps, words, stop, params.smooth, start)  # [S, H, W]
        tv = total_variation(objects, params.tv_vertical)  # [S]
        modifiers = subject_modifiers(analysis, words) if params.bind else [[] for _ in words]
        weight = bind_weight(params.bind_weights, ctx.step, ctx.num_steps)

        logs: dict[str, float] = {"min_tv": as_float(tv.min()), "bind_weight": weight}
        per_subject = []
        source = self._attribute_source(ctx, maps) if any(modifiers) else None
        for k, (word, mods) in enumerate(zip(words, modifiers)):
            logs[f"tv.{k}.{word.text}"] = as_float(tv[k])
            if not mods or source is None:
                per_subject.append(-tv[k])
                continue
            attributes = subject_maps(source, mods, stop, params.smooth, start)  # [M, H, W]
            low = bool(tv[k].detach() < params.low_tv)
            fraction = params.mask_fraction_low_tv if low else params.mask_fraction
            p, q = binding_distributions(objects[k], attributes, fraction, params.mask_eps)
            jsd = jensen_shannon(p[None], q)  # [M]
            bound = jsd.mean() if params.modifier_reduction == "mean" else jsd.sum()
            logs[f"bind.{k}.{word.text}"] = as_float(bound)
            per_subject.append(-tv[k] + weight * bound)
        value = torch.stack(per_subject).max()
        logs["loss"] = as_float(value)

        term = LossTerm(
            value=value,
            step_size=attend_excite_step_size(ctx.step, ctx.num_timesteps, params.scale_factor),
            logs=logs,
        )
        threshold = refinement_thresholds(params.thresholds, ctx.num_steps).get(ctx.step)
        cap = params.max_refinement_steps_first if ctx.step == 0 else params.max_refinement_steps
        if threshold is not None and cap > 0:
            logs["refine_target"] = threshold
            if logs["min_tv"] < threshold:
                # The stop test is on min TV, not on the loss: refine while it is below target.
                term.refine_below = -math.inf
                term.max_refinement = cap
        return term
