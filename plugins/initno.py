"""InitNO (Guo et al., CVPR 2024): optimise the initial noise, then guide as Attend-and-Excite.

Per the official code (``xiefan-guo/initno``, ``initno/pipelines/pipeline_sd_initno.py``, commit
fa021c4, Apache-2.0; re-implemented, not copied). Every subject (the prompt's entities) gets
A&E's processed map ``S_s`` (token slice, x100 softmax over tokens, 3x3 Gaussian smoothing) and
its top-1 pixel ``p_s = argmax S_s``. With the 16x16 self-attention rows ``R_q`` (query pixel
``q``'s attention over the key pixels, smoothed)::

    cross = max_s max(0, 1 - S_s[p_s])                                  (response)
    self  = mean over pairs s < t of  sum min(R_ps, R_pt) / (sum (R_ps + R_pt) + 1e-6)   (conflict)
    clean = sum_s [bg_s.max() > fg_s.min()] * bg_s.max()               (secondary blobs)

where ``fg_s`` / ``bg_s`` are ``S_s`` inside / outside the 4-connected component, containing
``p_s``, of ``S_s``'s Otsu mask (OpenCV's 8-bit-level Otsu on ``floor(255 S_s)``).

**Initial noise** (``attnguide_initial_latents``): ``z = z_T * exp(logvar / 2) + mu`` with
``mu = logvar = 0`` at the start, Adam (lr 1e-2, eps 1e-3) on ``cross + self + clean`` (``self``
dropped while ``cross > 0.5``) through the conditional forward at the first timestep; after
every step Adam steps on ``KL = -mean(1 + logvar - mu^2 - e^logvar) / 2`` until ``KL <= 1e-3``.
A round succeeds (and stops, before stepping) once ``cross < 0.2`` and ``self < 0.3``; up to 5
rounds of 10 evaluations, round ``k > 0`` from ``ctx.fresh_noise(k)``. The round with the
lowest ``cross + self`` (``+ 1`` when ``self <= 1e-6``) wins; if it did not succeed, its starting
noise is optimised again from ``mu = logvar = 0`` for up to 50 evaluations.

**Denoising** (``attnguide_loss``): while ``i < 25`` of 50, A&E's update on ``cross`` with step
size ``20 sqrt(linspace(1, 0.5, T)[i])``; at steps 10 and 20, while ``cross > 0.2`` or
``self > 0.3``, refinement updates on ``cross + self + 0.1 clean + 0.1 align`` (at most 20),
``align`` being the L1 distance of each ``S_s`` to an exponential moving average (0.9) of the
maps. See docs/methods.md for every difference from the official code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import pydantic

from attnguide import LossParams, LossPlugin, hookimpl
from attnguide.engine.requests import MapRequest
from attnguide.lazy import np, torch
from attnguide.types import AlignedWord, GuidanceContext, LossTerm, NoiseContext, PromptAnalysis

from ._maps import as_float, attend_excite_preprocess, attend_excite_step_size, gaussian_smooth
from .attend_excite import TokenSlice, pieces_max, slice_start, slice_stop, subjects
from .conform import refinement_steps

# The official code's constants that are not parameters there either.
SELF_PAIR_EPS = 1e-6  # denominator guard of the self-attention conflict
EMPTY_SELF_AT_MOST = 1e-6  # a round whose self conflict is <= this scores + 1
OTSU_LEVELS = 255.0  # maps are quantised to floor(255 x) before OpenCV's Otsu
FLT_EPSILON = 2.0**-23  # float32 eps (np.finfo); OpenCV's Otsu skips splits with a class below it


class InitNOParams(LossParams):
    scale_factor: float = pydantic.Field(
        20.0, gt=0, description="alpha_t = scale_factor * sqrt(linspace(1, 0.5, T)[t]) (A&E's)"
    )
    tau_cross: float = pydantic.Field(
        0.2, ge=0, description="success / refinement target of the cross response loss (1 - 0.8)"
    )
    tau_self: float = pydantic.Field(
        0.3, ge=0, description="success / refinement target of the self-attention conflict loss"
    )
    self_drop_above: float = pydantic.Field(
        0.5, description="noise optimisation: the self conflict counts 0 while cross exceeds this"
    )
    refine_at: tuple[pydantic.NonNegativeInt, ...] = pydantic.Field(
        (10, 20), description="steps (of a 50-step schedule) refined while cross > tau_cross or self > tau_self"
    )
    max_refinement_steps: int = pydantic.Field(20, ge=0, description="refinement cap (0: none)")
    clean_weight: float = pydantic.Field(0.1, ge=0, description="weight of the clean loss in refinement")
    alignment_weight: float = pydantic.Field(
        0.1, ge=0, description="weight of the alignment loss (L1 to the maps' moving average) in refinement"
    )
    alignment_momentum: float = pydantic.Field(
        0.9, ge=0, le=1, description="moving average: cache <- momentum * cache + (1 - momentum) * maps"
    )
    optimize_noise: bool = pydantic.Field(True, description="run the initial-noise optimisation")
    noise_rounds: int = pydantic.Field(5, ge=1, description="rounds, each from fresh noise, until one succeeds")
    noise_steps: int = pydantic.Field(10, ge=0, description="evaluations (optimiser steps) per round")
    noise_final_steps: int = pydantic.Field(
        50, ge=0, description="evaluations re-optimising the best round's noise when no round succeeded"
    )
    noise_lr: float = pydantic.Field(1e-2, gt=0, description="Adam learning rate on (logvar, mu)")
    noise_adam_eps: float = pydantic.Field(1e-3, gt=0, description="Adam eps")
    noise_clean_weight: float = pydantic.Field(1.0, ge=0, description="weight of the clean loss in the noise loss")
    kl_threshold: float = pydantic.Field(1e-3, ge=0, description="KL(N(mu, sigma) || N(0, I)) kept at or below this")
    kl_max_steps: int = pydantic.Field(
        10_000, ge=0, description="cap on the Adam steps of one KL projection (the official loop has none)"
    )
    self_resolution: int = pydantic.Field(16, ge=2, description="grid of the self-attention layers read")
    token_slice: TokenSlice = pydantic.Field("sd1", description="A&E's token slice (sd1: [1:-1] of 77)")
    smooth: bool = pydantic.Field(True, description="3x3 Gaussian smoothing of cross and self maps")


# --- the three losses on one forward's maps ------------------------------------------------------


def otsu_level(levels: np.ndarray) -> int:
    """OpenCV's Otsu threshold (``cv2.threshold(..., THRESH_OTSU)``) of non-negative integer levels.

    The histogram split ``i`` maximising the between-class variance ``q1 q2 (mu1 - mu2)^2``
    (class 1: levels ``<= i``), first maximum on ties, splits leaving a class below float32 eps
    skipped; 0 when there is no split (a single level). Accumulated in float64 in OpenCV's
    order, so the level is OpenCV's bit for bit.
    """
    flat = np.asarray(levels, dtype=np.int64).ravel()
    counts = np.bincount(flat)
    scale = 1.0 / flat.size
    mean = 0.0
    for i, count in enumerate(counts.tolist()):
        mean += i * float(count)
    mean *= scale
    mu1 = q1 = 0.0
    best_sigma, best = 0.0, 0
    for i, count in enumerate(counts.tolist()):
        p_i = count * scale
        mu1 *= q1
        q1 += p_i
        q2 = 1.0 - q1
        if min(q1, q2) < FLT_EPSILON or max(q1, q2) > 1.0 - FLT_EPSILON:
            continue
        mu1 = (mu1 + i * p_i) / q1
        mu2 = (mean - q1 * mu1) / q2
        sigma = q1 * q2 * (mu1 - mu2) * (mu1 - mu2)
        if sigma > best_sigma:
            best_sigma, best = sigma, i
    return best


def otsu_mask(attention: torch.Tensor) -> torch.Tensor:
    """``[H, W]`` 0/1 (dtype of ``attention``, detached): the official ``fn_get_otsu_mask``.

    The map is quantised as ``uint16(x * 255)``, OpenCV's Otsu level ``t`` of those levels is
    found (``otsu_level``), and pixels with ``x >= t / 255`` are 1 - so the level ``t`` itself
    is foreground, where OpenCV's own binarisation (``level > t``) would not count it.
    """
    values = attention.detach()
    host = values.cpu() if values.dtype in (torch.float32, torch.float64) else values.float().cpu()
    levels = (host.numpy() * 255).astype(np.uint16)
    threshold = otsu_level(levels) * 1.0 / OTSU_LEVELS
    return torch.where(values < threshold, torch.zeros_like(values), torch.ones_like(values))


def peak_component(mask: torch.Tensor, peak: tuple[int, int]) -> torch.Tensor:
    """The 4-connected component of ``mask`` (0/1, ``[H, W]``) containing ``peak``, as 0/1 of
    the same dtype: the official ``fn_clean_mask``. All 0 when ``peak`` is not in the mask."""
    grid = mask.detach().cpu().numpy() > 0.5
    height, width = grid.shape
    keep = np.zeros_like(grid)
    if grid[peak]:
        keep[peak] = True
        stack = [peak]
        while stack:
            row, col = stack.pop()
            for r, c in ((row, col + 1), (row, col - 1), (row + 1, col), (row - 1, col)):
                if 0 <= r < height and 0 <= c < width and grid[r, c] and not keep[r, c]:
                    keep[r, c] = True
                    stack.append((r, c))
    return torch.from_numpy(keep).to(device=mask.device, dtype=mask.dtype)


def clean_loss(attention: torch.Tensor, peak: tuple[int, int]) -> torch.Tensor:
    """One subject's clean loss: the largest value outside the peak's Otsu component, counted
    only when it exceeds the smallest value inside (else 0, with a graph)."""
    component = peak_component(otsu_mask(attention), peak)
    foreground = attention * component + (1 - component)
    background = attention * (1 - component)
    largest = background.max()
    return largest if bool(largest > foreground.min()) else largest * 0


def top_pixel(attention: torch.Tensor) -> tuple[int, int]:
    """``(row, col)`` of the map's largest value (``topk(1)`` of the flattened, detached map)."""
    width = attention.shape[-1]
    index = int(attention.detach().flatten().topk(1).indices[0])
    return index // width, index % width


def self_rows(self_maps: torch.Tensor, peaks: list[tuple[int, int]], grid: tuple[int, int],
              smooth: bool) -> torch.Tensor:
    """``[len(peaks), h, w]``: the self-attention row of each peak, smoothed when ``smooth``.

    ``self_maps: [h * w, h, w]`` (row ``q``: query pixel ``q`` over the keys); ``peaks`` are
    pixels of the cross-attention ``grid``, moved to the self grid by scaling when it differs.
    """
    height, width = self_maps.shape[-2:]
    if self_maps.shape[0] != height * width:
        raise ValueError(f"self-attention maps must be [h*w, h, w], got {tuple(self_maps.shape)}")
    rows = []
    for row, col in peaks:
        r, c = row * height // grid[0], col * width // grid[1]
        rows.append(self_maps[r * width + c])
    out = torch.stack(rows)
    return gaussian_smooth(out) if smooth else out


def self_conflict(rows: torch.Tensor) -> torch.Tensor:
    """Mean over pairs ``s < t`` of ``sum min(R_s, R_t) / (sum (R_s + R_t) + 1e-6)``; 0 for
    fewer than two rows."""
    count = rows.shape[0]
    if count < 2:
        return rows.sum() * 0
    total = rows.new_zeros(())
    for s in range(count):
        for t in range(s + 1, count):
            total = total + torch.minimum(rows[s], rows[t]).sum() / ((rows[s] + rows[t]).sum() + SELF_PAIR_EPS)
    return total / (count * (count - 1) // 2)


@dataclass
class InitNOParts:
    """The losses of one forward, before they are combined.

    Attributes:
        processed: ``[stop - start, H, W]`` A&E-processed maps (what the moving average keeps).
        subject_maps: ``[S, H, W]`` each subject's smoothed map.
        peaks: each subject's top-1 pixel.
        max_attention: ``[S]`` each subject's map at its peak.
        cross, self_conflict, clean: scalars with graphs.
    """

    processed: torch.Tensor
    subject_maps: torch.Tensor
    peaks: list[tuple[int, int]]
    max_attention: torch.Tensor
    cross: torch.Tensor
    self_conflict: torch.Tensor
    clean: torch.Tensor


def initno_parts(maps: torch.Tensor, self_maps: torch.Tensor, words: list[AlignedWord], start: int,
                 stop: int, smooth: bool = True) -> InitNOParts:
    """Cross response, self conflict and clean loss of one forward.

    Args:
        maps: ``[tokens, H, W]`` cross-attention probabilities (the engine's maps).
        self_maps: ``[h * w, h, w]`` self-attention probabilities.
        words: the subjects; ``start``/``stop`` A&E's token slice.
    """
    processed = attend_excite_preprocess(maps, stop, start)
    subject = pieces_max(processed, words, start, stop, smooth)
    peaks = [top_pixel(m) for m in subject]
    max_attention = torch.stack([m[r, c] for m, (r, c) in zip(subject, peaks)])
    cross = (1.0 - max_attention).clamp(min=0.0).max()
    clean = torch.stack([clean_loss(m, p) for m, p in zip(subject, peaks)]).sum()
    rows = self_rows(self_maps.to(maps.dtype), peaks, (maps.shape[-2], maps.shape[-1]), smooth)
    return InitNOParts(processed, subject, peaks, max_attention, cross, self_conflict(rows), clean)


# --- the initial-noise optimisation -------------------------------------------------------------


def kl_to_standard_normal(log_var: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, e^logvar) || N(0, I))`` per element, averaged: ``-mean(1 + logvar - mu^2 - e^logvar) / 2``."""
    return -0.5 * torch.mean(1 + log_var - mu**2 - log_var.exp())


def reparameterise(noise: torch.Tensor, log_var: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """``z = noise * exp(logvar / 2) + mu``."""
    return noise * torch.exp(0.5 * log_var) + mu


def _set_gradients(loss: torch.Tensor, leaves: list[torch.Tensor]) -> None:
    """``zero_grad(); loss.backward()`` for ``leaves`` (a leaf ``loss`` does not reach keeps
    ``grad = None``, so Adam skips it, as after ``backward``)."""
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    for leaf, grad in zip(leaves, grads):
        leaf.grad = grad


def project_kl(optimiser: torch.optim.Optimizer, log_var: torch.Tensor, mu: torch.Tensor, threshold: float,
               max_steps: int) -> int:
    """Step ``optimiser`` (the noise optimiser itself, its moments included) on
    ``kl_to_standard_normal(log_var, mu)`` while it exceeds ``threshold``, at most ``max_steps``
    times; returns the number of steps."""
    steps = 0
    kl = kl_to_standard_normal(log_var, mu)
    while bool(kl > threshold) and steps < max_steps:
        _set_gradients(kl, [log_var, mu])
        optimiser.step()
        steps += 1
        kl = kl_to_standard_normal(log_var, mu)
    return steps


NoiseEvaluate: TypeAlias = "Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]"
"""``z -> (joint, cross, self)``: the noise loss of the forward on ``z`` and the two tested parts."""


@dataclass
class NoiseRound:
    """One run of the noise optimisation from one starting noise.

    Attributes:
        noise: the starting noise; ``latents`` the optimised latents (both detached).
        succeeded: ``cross < tau_cross`` and ``self < tau_self`` at an evaluation.
        score: ``cross + self`` of the last evaluation, ``+ 1`` when ``self <= 1e-6`` (inf
            without any evaluation): what selects the best round.
        cross, self_conflict: the last evaluation's values.
        evaluations, steps: forwards run and optimiser steps taken; ``kl_steps`` the Adam steps
            of the KL projections, all together.
    """

    noise: torch.Tensor
    latents: torch.Tensor
    succeeded: bool
    score: float
    cross: float
    self_conflict: float
    evaluations: int
    steps: int
    kl_steps: int

    def summary(self) -> dict[str, Any]:
        return {"succeeded": self.succeeded, "score": self.score, "cross": self.cross,
                "self": self.self_conflict, "evaluations": self.evaluations, "steps": self.steps,
                "kl_steps": self.kl_steps}


def optimise_noise(noise: torch.Tensor, evaluate: NoiseEvaluate, *, steps: int, lr: float = 1e-2,
                   adam_eps: float = 1e-3, tau_cross: float = 0.2, tau_self: float = 0.3,
                   kl_threshold: float = 1e-3, kl_max_steps: int = 10_000) -> NoiseRound:
    """The official ``fn_initno`` on one starting noise (one denoising step for the loss).

    Up to ``steps`` times: evaluate ``z = noise * exp(logvar / 2) + mu``; stop if it succeeded;
    else one Adam step on the joint loss, then Adam steps (same optimiser) on
    ``kl_to_standard_normal`` while it exceeds ``kl_threshold`` (at most ``kl_max_steps``).
    Returns the latents of the final ``(logvar, mu)`` - after the last step, which was not
    evaluated when no evaluation succeeded.
    """
    base = noise.detach().to(torch.promote_types(noise.dtype, torch.float32))  # Adam in float32 at least
    log_var = torch.zeros_like(base, requires_grad=True)
    mu = torch.zeros_like(base, requires_grad=True)
    optimiser = torch.optim.Adam([log_var, mu], lr=lr, eps=adam_eps)
    cross_t = self_t = torch.tensor(math.inf)
    succeeded = False
    evaluations = taken = kl_steps = 0
    for _ in range(steps):
        z = reparameterise(base, log_var, mu).to(noise.dtype)
        joint, cross_t, self_t = evaluate(z)
        cross_t, self_t = cross_t.detach(), self_t.detach()
        evaluations += 1
        # compared as tensors, in their dtype, as the official code does
        if bool(cross_t < tau_cross) and bool(self_t < tau_self):
            succeeded = True
            break
        _set_gradients(joint, [log_var, mu])
        optimiser.step()
        taken += 1
        kl_steps += project_kl(optimiser, log_var, mu, kl_threshold, kl_max_steps)
    with torch.no_grad():
        latents = reparameterise(base, log_var, mu).to(noise.dtype)
    bonus = self_t + 1.0 if bool(self_t <= EMPTY_SELF_AT_MOST) else self_t
    score = float(cross_t + bonus)
    return NoiseRound(noise.detach(), latents.detach(), succeeded, score, float(cross_t), float(self_t), evaluations,
                      taken, kl_steps)


def best_round(rounds: list[tuple[int, NoiseRound]]) -> tuple[int, NoiseRound]:
    """The ``(round, result)`` of lowest score, the earlier round on ties (the official sort)."""
    return min(rounds, key=lambda item: (item[1].score, item[0]))


def search_noise(latents: torch.Tensor, fresh_noise: Callable[[int], torch.Tensor], evaluate: NoiseEvaluate,
                 params: InitNOParams) -> tuple[torch.Tensor, dict[str, Any]]:
    """The official rounds: ``optimise_noise`` from ``latents`` (round 0) and from
    ``fresh_noise(k)`` (round ``k``) until a round succeeds, at most ``noise_rounds``; the best
    round (``best_round``) wins if it succeeded, else its starting noise is optimised again,
    from ``mu = logvar = 0``, for ``noise_final_steps`` evaluations, and that result is taken
    whether or not it succeeds.

    Returns the chosen latents (detached) and a summary: ``rounds`` (each round's
    ``NoiseRound.summary()``), ``chosen_round``, ``final`` (the re-optimisation's summary, or
    ``None``) and ``succeeded``.
    """

    def run(noise: torch.Tensor, steps: int) -> NoiseRound:
        return optimise_noise(noise, evaluate, steps=steps, lr=params.noise_lr, adam_eps=params.noise_adam_eps,
                              tau_cross=params.tau_cross, tau_self=params.tau_self,
                              kl_threshold=params.kl_threshold, kl_max_steps=params.kl_max_steps)

    rounds: list[tuple[int, NoiseRound]] = []
    for k in range(params.noise_rounds):
        result = run(latents if k == 0 else fresh_noise(k), params.noise_steps)
        rounds.append((k, result))
        if result.succeeded:
            break
    chosen, best = best_round(rounds)
    # a round that succeeded but scored worse than a failed one is not taken: the official
    # sort puts the failed round first, whose starting noise is then optimised again
    final = None if best.succeeded else run(best.noise, params.noise_final_steps)
    summary = {
        "rounds": [r.summary() for _, r in rounds],
        "chosen_round": chosen,
        "final": None if final is None else final.summary(),
        "succeeded": best.succeeded if final is None else final.succeeded,
    }
    return (best.latents if final is None else final.latents), summary


# --- the plugin ----------------------------------------------------------------------------------


class InitNOLoss(LossPlugin[InitNOParams]):
    """InitNO: initial-noise optimisation, then A&E's updates with conflict-aware refinement."""

    name = "initno"
    Params = InitNOParams
    # The official pipeline alters latents while i < max_iter_to_alter = 25 of 50 steps.
    default_window = (0.0, 0.5)
    requires = frozenset({"unet"})  # self-attention maps come from UNet layers
    # SDXL's default maps are 32x32 at 1024 px: read its self-attention there too.
    family_defaults = {"sdxl": {"self_resolution": 32}}

    def map_requests(self) -> tuple[MapRequest, ...]:
        return (MapRequest("self", self.params.self_resolution),)

    def _self_request(self) -> MapRequest:
        return MapRequest("self", self.params.self_resolution)

    def _parts(self, maps: torch.Tensor, extra: dict[Any, torch.Tensor], analysis: PromptAnalysis,
               words: list[AlignedWord]) -> InitNOParts:
        request = self._self_request()
        if request not in extra:
            raise ValueError(f"no {request.describe()} among the forward's maps (has: {len(extra)} requests)")
        start, stop = slice_start(analysis), slice_stop(maps, analysis, self.params.token_slice)
        return initno_parts(maps, extra[request], words, start, stop, self.params.smooth)

    # -- initial noise ---------------------------------------------------------------------------

    def _noise_losses(self, parts: InitNOParts) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        params = self.params
        conflict = parts.self_conflict
        if bool(parts.cross.detach() > params.self_drop_above):
            conflict = conflict * 0
        joint = parts.cross + conflict + params.noise_clean_weight * parts.clean
        return joint, parts.cross, conflict

    @hookimpl
    def attnguide_initial_latents(self, ctx: NoiseContext, latents: torch.Tensor) -> torch.Tensor | None:
        params = self.params
        words = subjects(ctx.analysis)
        if not params.optimize_noise or not words:
            return None

        def evaluate(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            maps, extra = ctx.forward(z)
            return self._noise_losses(self._parts(maps, extra, ctx.analysis, words))

        out, summary = search_noise(latents, ctx.fresh_noise, evaluate, params)
        ctx.state["noise"] = summary
        return out.to(dtype=latents.dtype, device=latents.device)

    # -- denoising steps -------------------------------------------------------------------------

    def _alignment(self, state: dict[str, Any], parts: InitNOParts, words: list[AlignedWord], start: int,
                   stop: int, updates: int) -> torch.Tensor:
        """Update the maps' moving average ``updates`` times with this forward's maps, then the
        sum over subjects of the mean L1 distance of their smoothed maps to the average's."""
        momentum = self.params.alignment_momentum
        current = parts.processed.detach()
        for _ in range(updates):
            cache = state.get("average")
            state["average"] = current.clone() if cache is None else cache * momentum + current * (1 - momentum)
        cached = pieces_max(state["average"], words, start, stop, self.params.smooth)
        return (parts.subject_maps - cached).abs().flatten(1).mean(dim=1).sum()

    def compute(self, ctx: GuidanceContext, maps: torch.Tensor) -> LossTerm | None:
        params = self.params
        words = subjects(ctx.analysis)
        if not words:
            return None
        parts = self._parts(maps, ctx.extra_maps, ctx.analysis, words)
        state = ctx.state
        cross, conflict = float(parts.cross.detach()), float(parts.self_conflict.detach())
        unmet = bool(parts.cross.detach() > params.tau_cross) or bool(parts.self_conflict.detach() > params.tau_self)
        if ctx.refinement == 0:
            repeated = state.get("last_evaluation") == (ctx.step, 0)  # reference_style repeats the forward
            state.pop("refining", None)
            refining = (params.max_refinement_steps > 0 and unmet
                        and ctx.step in refinement_steps(params.refine_at, ctx.num_steps))
            # the official refinement's first forward repeats the step's: its maps enter the
            # moving average twice (at the first evaluation, none at the engine's repeat)
            updates = 0 if repeated else 2 if refining else 1
        else:
            updates = 1
            last = state.get("refining")
            # the engine stops after the update of an evaluation that met the targets, or at the
            # cap; the evaluation after that one makes the step's own (cross) update
            refining = (last is not None and last["step"] == ctx.step and last["unmet"]
                        and ctx.refinement < params.max_refinement_steps)
            if not refining:
                state.pop("refining", None)
        state["last_evaluation"] = (ctx.step, ctx.refinement)
        start, stop = slice_start(ctx.analysis), slice_stop(maps, ctx.analysis, params.token_slice)
        align = self._alignment(state, parts, words, start, stop, updates)
        joint = parts.cross + parts.self_conflict + params.clean_weight * parts.clean + params.alignment_weight * align

        logs = {"cross": cross, "self": conflict, "clean": as_float(parts.clean), "alignment": as_float(align),
                "joint": as_float(joint), "refining": float(refining)}
        for k, (word, attn) in enumerate(zip(words, parts.max_attention.detach().tolist())):
            logs[f"max_attention.{k}.{word.text}"] = attn
        noise = state.get("noise")
        if noise is not None and not state.get("noise_logged"):
            state["noise_logged"] = True
            logs["noise_succeeded"] = float(noise["succeeded"])
            logs["noise_round"] = float(noise["chosen_round"])
            logs["noise_rounds"] = float(len(noise["rounds"]))
            logs["noise_final"] = float(noise["final"] is not None)

        step_size = attend_excite_step_size(ctx.step, ctx.num_timesteps, params.scale_factor)
        if not refining:
            logs["loss"] = cross
            return LossTerm(value=parts.cross, step_size=step_size, logs=logs)
        state["refining"] = {"step": ctx.step, "unmet": unmet}
        logs["loss"] = as_float(joint)
        return LossTerm(value=joint, step_size=step_size, logs=logs,
                        refine_below=-math.inf if unmet else math.inf,
                        max_refinement=params.max_refinement_steps)
