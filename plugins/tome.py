"""ToMe (Hu et al., NeurIPS 2024): token merging for semantic binding.

Restated from reading the official code (``hutaiHang/ToMe`` at commit 9fd67a0: ``pipe_tome.py``,
``configs/demo_config.py``, ``utils/ptp_utils.py``); that repository has no licence, so nothing
of it is copied. ToMe edits the conditional text embeddings ``E: [L, D]`` and the latents.

Every attribute binding of the prompt (an entity with modifiers) is a *subject* ``s``; its
*composite position* ``c_s`` is the entity's first token. Per image:

* **Token merge** (once, before the first step): ``E[c_s] <- 1.1 * sum_{p in noun(s)} E[p] +
  1.2 * sum_{p in mod(s)} E[p]``, then the other noun pieces and the modifier positions are set
  to 0.
* **End-token substitution** (optional, at one step, kept afterwards): ``E[e:] <- E_merged[e:]``
  from the end-of-text position ``e`` of the prompt on, ``E_merged`` the embedding of the
  *merged prompt* (each entity with its determiner: "a cat and a dog").
* **Semantic binding** (steps in ``binding_window``): for each subject, with ``eps(z, C)`` the
  conditional UNet prediction on the image's current latents under the text states ``C``,
  ``iterations`` times::

      x <- x - grad_x( scale * mean( (eps(z, [x]) - eps(z, E_anchor(s)))^2 ) ),   x = E[c_s]

  ``[x]`` is the composite token alone (a one-token context), ``E_anchor(s)`` the embedding of
  the subject's *anchor prompt* ("a cat wearing sunglasses"); ``scale = 1e4``, 3 iterations.
* **Entropy** (steps in the window): with ``A`` the layer- and head-averaged maps and ``P`` the
  prompt's own positions (no start, end or padding token)::

      Q   = softmax_{p in P}(A_p / 0.5)                      per pixel
      m_s = (Q_{c_s} - min Q_{c_s}) / (max Q_{c_s} - min Q_{c_s}),   p_s = m_s / sum m_s
      L   = -2 * sum_s sum_pixels p_s log(p_s + 1e-5)

  descended on the embeddings with ``alpha_i = 3 * linspace(1, 0, T)[i]`` (in the embedding
  hook, through ``ctx.forward``) and on the latents with ``alpha_i / 2`` (as a loss term), each
  with the official loop: forward, update, stop once the loss *before* that update was below
  ``tau_i = (thresholds[i] / 2 * n - 2) * log(H W) / log(1024)`` (``n`` subjects; the table
  ``{0: 26, ..., 9: 21}`` holds for 32x32 maps), at most ``4`` updates.

See docs/methods.md ("ToMe") for the defaults, the construction of the anchor and merged
prompts, and every difference from the official code.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pydantic

from attnguide import LossParams, LossPlugin, hookimpl
from attnguide.engine.requests import MapRequest
from attnguide.lazy import F, np, torch
from attnguide.plugin.losses import window_contains
from attnguide.types import (
    AlignedBinding,
    AlignedWord,
    EmbeddingContext,
    GuidanceContext,
    LossTerm,
    PromptAnalysis,
)

from ._maps import as_float

TOME_SDXL_LAYERS: tuple[str, ...] = tuple(
    f"up_blocks.0.attentions.1.transformer_blocks.{k}.attn2.processor" for k in (1, 2, 3)
)
"""The cross-attention layers the official code reads on SDXL (32x32 at 1024 px)."""

REFERENCE_NUM_STEPS = 50
"""The official thresholds and the end-token step are indices of a 50-step schedule."""
REFERENCE_GRID_PIXELS = 32 * 32
"""The official thresholds are for 32x32 maps."""
LOG_EPS = 1e-5
"""Added inside the entropy's log, as the official code."""
NUM_TRAIN_TIMESTEPS = 1000
"""UNet schedulers' training timesteps: the official cap switch reads ``t / 1000``."""
DETERMINERS = frozenset({
    "a", "an", "the", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "some", "several", "many", "this", "that", "these", "those", "another", "each", "every",
    "my", "your", "his", "her", "its", "our", "their",
})
"""Words taken along as a subject's determiner when they come right before its first word."""


class ToMeParams(LossParams):
    noun_weight: float = pydantic.Field(1.1, description="weight of the noun pieces in the composite token")
    modifier_weight: float = pydantic.Field(1.2, description="weight of the merged modifier tokens")
    token_merge: bool = pydantic.Field(True, description="merge each subject's tokens into its noun's position")
    merge_between: bool = pydantic.Field(
        False,
        description="also merge the words between a subject's first and last word "
        "('wearing' in 'a cat wearing sunglasses', as the official object-binding demo)",
    )
    eot_replace_step: int | None = pydantic.Field(
        None,
        ge=0,
        description="step (of a 50-step schedule) at which the end-of-text and padding states "
        "become the merged prompt's (None: never, as the official attribute-binding demo; 0: "
        "from the start, as its object-binding demo)",
    )
    binding_window: tuple[float, float] = pydantic.Field(
        (0.0, 0.1), description="steps (fractions) with semantic-binding updates of the composite tokens"
    )
    binding_iterations: int = pydantic.Field(3, ge=0, description="semantic-binding updates per subject and step")
    binding_scale: float = pydantic.Field(1e4, gt=0, description="the semantic-binding MSE is multiplied by this")
    update_embeddings: bool = pydantic.Field(
        True, description="descend the entropy on the embeddings too (inside the window)"
    )
    scale_factor: float = pydantic.Field(3.0, gt=0, description="alpha_i = scale_factor * linspace(scale_range)[i]")
    scale_range: tuple[float, float] = pydantic.Field((1.0, 0.0), description="start and end of the linear schedule")
    thresholds: dict[int, float] = pydantic.Field(
        default_factory=lambda: {0: 26.0, 1: 25.0, 2: 24.0, 3: 23.0, 4: 22.5, 5: 22.0, 6: 21.5, 7: 21.0,
                                 8: 21.0, 9: 21.0},
        description="step (of a 50-step schedule) -> entropy target per two subjects at 32x32; "
        "a step takes the entry of the largest key not after it",
    )
    refinement_steps: tuple[int, int] = pydantic.Field(
        (4, 4), description="most entropy updates per step while t/1000 > 0.9, and after"
    )
    temperature: float = pydantic.Field(0.5, gt=0, description="softmax(A / temperature) over the prompt's tokens")
    layers: tuple[str, ...] = pydantic.Field(
        (),
        description="cross-attention processors whose maps the latent update reads (empty: the "
        "run's default maps); SDXL: up_blocks.0.attentions.1.transformer_blocks.{1,2,3}",
    )

    @pydantic.field_validator("thresholds")
    @classmethod
    def _check_thresholds(cls, value: dict[int, float]) -> dict[int, float]:
        if not value:
            raise ValueError("needs at least one step")
        if any(step < 0 for step in value):
            raise ValueError(f"step keys must be >= 0, got {sorted(value)}")
        return value

    @pydantic.field_validator("refinement_steps")
    @classmethod
    def _check_caps(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 1:
            raise ValueError(f"each cap must be >= 1, got {list(value)}")
        return value

    @pydantic.field_validator("binding_window")
    @classmethod
    def _check_window(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 <= value[0] <= value[1] <= 1.0:
            raise ValueError(f"must satisfy 0 <= start <= end <= 1, got {list(value)}")
        return value


# --- prompts and positions -------------------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """One merged binding.

    Attributes:
        word: the entity's text.
        composite: the position that carries the composite token (the entity's first piece).
        nouns: the entity's positions, ``composite`` first.
        merged: the positions merged into it (the modifiers; with ``merge_between`` also the
            words between), zeroed after the merge.
        anchor: the anchor prompt.
    """

    word: str
    composite: int
    nouns: tuple[int, ...]
    merged: tuple[int, ...]
    anchor: str


def _in_order(analysis: PromptAnalysis) -> list[AlignedBinding]:
    """The bindings whose entity has token positions, in prompt order."""
    bound = [b for b in analysis.bindings if b.entity.tokens]
    return sorted(bound, key=lambda b: (b.entity.start, b.entity.tokens))


def _determiner(prompt: str, start: int) -> str:
    """The determiner right before character ``start`` of ``prompt`` ('a', 'two' ...), or ''."""
    if start <= 0:
        return ""
    found = re.search(r"(\S+)\s+$", prompt[:start])
    if found and found.group(1).lower() in DETERMINERS:
        return found.group(1)
    return ""


def _words(binding: AlignedBinding) -> list[AlignedWord]:
    return sorted((binding.entity, *binding.modifiers), key=lambda w: w.start)


def anchor_prompt(analysis: PromptAnalysis, binding: AlignedBinding) -> str:
    """The binding's own phrase: the prompt's text from its first to its last word, with the
    determiner right before it ("a cat wearing sunglasses", "a white cat"); when that span holds
    a word of another binding (or the words have no character spans), its words in prompt order
    ("white cat")."""
    words = _words(binding)
    prompt = analysis.prompt
    start, end = min(w.start for w in words), max(w.end for w in words)
    others = [w for b in analysis.bindings if b is not binding for w in (b.entity, *b.modifiers)]
    if start < 0 or any(w.start >= 0 and start <= w.start < end for w in others):
        return " ".join(w.text for w in words)
    determiner = _determiner(prompt, start)
    return f"{determiner} {prompt[start:end]}" if determiner else prompt[start:end]


def merged_prompt(analysis: PromptAnalysis) -> str:
    """Every entity of the prompt with its determiner, joined by 'and': "a cat and a dog"."""
    parts = []
    for binding in _in_order(analysis):
        start = min(w.start for w in _words(binding))
        determiner = _determiner(analysis.prompt, start)
        parts.append(f"{determiner} {binding.entity.text}" if determiner else binding.entity.text)
    return " and ".join(parts)


def tome_subjects(analysis: PromptAnalysis, merge_between: bool = False) -> list[Subject]:
    """The prompt's attribute bindings as subjects, in prompt order; a binding whose entity's
    first piece is not among the prompt's positions (truncated) is left out, as is one whose
    modifiers have no positions."""
    prompt_positions = set(analysis.tokens.prompt_positions)
    bindings = _in_order(analysis)
    out = []
    for binding in bindings:
        nouns = tuple(binding.entity.tokens)
        modifiers = [p for m in binding.modifiers for p in m.tokens]
        if not modifiers or nouns[0] not in prompt_positions:
            continue
        merged = list(dict.fromkeys(modifiers))
        if merge_between:
            taken = {p for b in bindings if b is not binding for p in b.positions} | set(nouns)
            span = range(min(*nouns, *modifiers), max(*nouns, *modifiers) + 1)
            merged = [p for p in span if p in prompt_positions and p not in taken]
        out.append(Subject(binding.entity.text, nouns[0], nouns, tuple(merged), anchor_prompt(analysis, binding)))
    return out


# --- the edits and the losses --------------------------------------------------------------------


def token_merge(embeds: torch.Tensor, subjects: Sequence[Subject], noun_weight: float = 1.1,
                modifier_weight: float = 1.2) -> torch.Tensor:
    """``embeds: [L, D]`` with each subject merged into its composite position:
    ``E[c] = noun_weight * sum E[nouns] + modifier_weight * sum E[merged]``, then the other noun
    pieces and the merged positions set to 0 (subjects in order, each reading the previous
    ones' result). A new tensor."""
    out = embeds.clone()
    for s in subjects:
        composite = noun_weight * out[list(s.nouns)].sum(0) + modifier_weight * out[list(s.merged)].sum(0)
        out[s.composite] = composite
        out[list(s.nouns[1:]) + list(s.merged)] = 0
    return out


def substitute_end(embeds: torch.Tensor, merged: torch.Tensor, eot_position: int) -> torch.Tensor:
    """``embeds: [L, D]`` with positions ``eot_position ..`` taken from ``merged: [L, D]``."""
    out = embeds.clone()
    out[eot_position:] = merged[eot_position:].to(out)
    return out


def tome_entropy(maps: torch.Tensor, prompt_positions: Sequence[int], composites: Sequence[int],
                 temperature: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """ToMe's entropy loss.

    Args:
        maps: ``[tokens, H, W]`` attention probabilities.
        prompt_positions: the prompt's own positions; the softmax runs over them only.
        composites: the composite positions (each among ``prompt_positions``).

    Returns:
        ``(L, H_s)``: the scalar ``L = sum_s H_s`` and the per-subject ``H_s = -2 sum_pixels
        p_s log(p_s + 1e-5)`` (``[subjects]``), ``p_s`` the min-max normalised, then
        sum-normalised ``softmax_P(A / temperature)`` map of ``c_s``.
    """
    positions = list(prompt_positions)
    probs = torch.softmax(maps[positions] / temperature, dim=0)
    rows = probs[[positions.index(c) for c in composites]]  # [s, H, W]
    low = rows.amin(dim=(-2, -1), keepdim=True)
    high = rows.amax(dim=(-2, -1), keepdim=True)
    scaled = (rows - low) / (high - low)
    p = scaled / scaled.sum(dim=(-2, -1), keepdim=True)
    per_subject = -2.0 * (p * torch.log(p + LOG_EPS)).sum(dim=(-2, -1))
    return per_subject.sum(), per_subject


def schedule_step(key: int, num_steps: int) -> int:
    """A step index of a 50-step schedule on a ``num_steps`` schedule: ``floor(k T / 50 + 0.5)``."""
    return math.floor(key * num_steps / REFERENCE_NUM_STEPS + 0.5)


def entropy_threshold(table: dict[int, float], step: int, num_steps: int, subjects: int, pixels: int) -> float:
    """The stop target at step ``step`` of ``num_steps``: the table's entry of the largest key
    (a step of a 50-step schedule) at or before ``step * 50 / num_steps`` (the first entry
    before the first key), as the official ``thresholds[i] / 2 * n - 2``, scaled by
    ``log(pixels) / log(1024)`` (the entropy's bound on an ``H x W = pixels`` grid relative to
    32x32)."""
    position = step * REFERENCE_NUM_STEPS / num_steps
    earlier = [k for k in table if k <= position]
    value = table[max(earlier)] if earlier else table[min(table)]
    return (value / 2 * subjects - 2) * math.log(pixels) / math.log(REFERENCE_GRID_PIXELS)


def refinement_cap(caps: tuple[int, int], time: float) -> int:
    """The most entropy updates at a step of scheduler time ``time`` (``t / 1000``)."""
    return caps[0] if time > 0.9 else caps[1]


def tome_step_size(step: int, num_steps: int, scale_factor: float, scale_range: tuple[float, float]) -> float:
    """``scale_factor * linspace(scale_range[0], scale_range[1], num_steps)[step]`` (float64); a
    step past the schedule (PNDM's extra timestep) takes its last value."""
    schedule = np.linspace(scale_range[0], scale_range[1], num_steps)
    return float(scale_factor * schedule[min(step, num_steps - 1)])


def binding_update(token: torch.Tensor, target: torch.Tensor, predict: Callable[[torch.Tensor], torch.Tensor],
                   iterations: int, scale: float) -> tuple[torch.Tensor, list[float]]:
    """The semantic-binding updates of one composite token.

    Args:
        token: ``[D]`` the composite token.
        target: the prediction under the anchor prompt (no gradient).
        predict: ``token [D] -> prediction`` (the forward with the token alone as context).
        iterations: number of updates; ``scale`` multiplies the MSE before its gradient.

    Returns:
        ``(token after the updates [D], the MSE before each update)``: each update is
        ``x <- x - grad_x(scale * mean((predict(x) - target)^2))``.
    """
    losses = []
    x = token.detach()
    for _ in range(iterations):
        x = x.requires_grad_(True)
        prediction = predict(x)
        wide = torch.promote_types(prediction.dtype, torch.float32)  # the MSE in float32 at least
        mse = F.mse_loss(prediction.to(wide), target.detach().to(wide))
        (grad,) = torch.autograd.grad(mse * scale, [x])
        losses.append(as_float(mse))
        x = (x - grad).detach()
    return x, losses


def entropy_descent(x: torch.Tensor, evaluate: Callable[[torch.Tensor], tuple[torch.Tensor, float]],
                    alpha: float, cap: int) -> tuple[torch.Tensor, list[float]]:
    """The official refinement loop on ``x``: evaluate ``(loss, threshold)``, step ``x - alpha
    grad`` (not on an exactly zero loss), stop once that loss was below the threshold or after
    ``cap`` updates; a non-finite loss stops without updating.

    Returns:
        ``(x, the loss of every evaluation)``.
    """
    losses = []
    x = x.detach()
    for _ in range(cap):
        x = x.requires_grad_(True)
        loss, threshold = evaluate(x)
        value = as_float(loss)
        losses.append(value)
        if not math.isfinite(value):
            break
        if value != 0.0:
            (grad,) = torch.autograd.grad(loss, [x])
            x = x - alpha * grad
        x = x.detach()
        if value < threshold:
            break
    return x.detach(), losses


# --- the plugin ----------------------------------------------------------------------------------


class ToMeLoss(LossPlugin[ToMeParams]):
    """ToMe: merged composite tokens, refined by semantic binding and an entropy loss."""

    name = "tome"
    Params = ToMeParams
    # The official attribute-binding demo refines while i < 5 of 50 steps (object binding: 7).
    default_window = (0.0, 0.1)
    # Text edits need CLIP states with an end token and padding; ctx.forward and the layer
    # choice need a UNet.
    requires = frozenset({"unet", "clip_text"})
    family_defaults = {"sdxl": {"layers": list(TOME_SDXL_LAYERS)}}

    def _request(self) -> MapRequest | None:
        return MapRequest("cross", layers=tuple(self.params.layers)) if self.params.layers else None

    def map_requests(self) -> tuple[MapRequest, ...]:
        request = self._request()
        return () if request is None else (request,)

    # -- embeddings -----------------------------------------------------------------------------

    @hookimpl
    def attnguide_edit_embeddings(self, ctx: EmbeddingContext, embeds: torch.Tensor) -> torch.Tensor | None:
        params = self.params
        subjects = tome_subjects(ctx.analysis, params.merge_between)
        if not subjects:
            return None
        state = ctx.state
        base = embeds.detach().to(torch.promote_types(embeds.dtype, torch.float32))  # edits in float32 at least
        # the edits so far, kept as a difference to the incoming embeddings
        delta = state.get("delta")
        if delta is None:
            merged = base
            if params.token_merge:
                merged = token_merge(base, subjects, params.noun_weight, params.modifier_weight)
            delta = merged - base
        current = base + delta
        logs: dict[str, float] = {}
        if params.eot_replace_step is not None and ctx.step == schedule_step(params.eot_replace_step, ctx.num_steps):
            current = substitute_end(current, ctx.encode(merged_prompt(ctx.analysis)), ctx.analysis.tokens.eot_position)
            logs["end_substituted"] = 1.0
        if ctx.forward is not None:
            if params.binding_iterations and window_contains(params.binding_window, ctx.step, ctx.num_steps):
                current = self._bind(ctx, ctx.forward, current, subjects, embeds.dtype, logs)
            time = float(ctx.timestep) / NUM_TRAIN_TIMESTEPS
            if params.update_embeddings and self.active_at(ctx.step, ctx.num_steps, time):
                current = self._refine_embeddings(ctx, ctx.forward, current, subjects, embeds.dtype, time, logs)
        state["delta"] = current - base
        state.setdefault("embedding_logs", {})[ctx.step] = logs
        return current.to(embeds.dtype)

    def _bind(self, ctx: EmbeddingContext, forward: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
              current: torch.Tensor, subjects: list[Subject], dtype: torch.dtype,
              logs: dict[str, float]) -> torch.Tensor:
        params = self.params
        for k, s in enumerate(subjects):
            with torch.no_grad():
                target, _ = forward(ctx.encode(s.anchor).to(dtype))

            def predict(x: torch.Tensor) -> torch.Tensor:
                prediction, _ = forward(x[None].to(dtype))
                return prediction

            token, losses = binding_update(current[s.composite], target.detach(), predict,
                                           params.binding_iterations, params.binding_scale)
            current = current.clone()
            current[s.composite] = token.to(current)
            logs[f"binding_mse.{k}.{s.word}"] = losses[0]
        return current

    def _refine_embeddings(self, ctx: EmbeddingContext,
                           forward: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                           current: torch.Tensor, subjects: list[Subject], dtype: torch.dtype, time: float,
                           logs: dict[str, float]) -> torch.Tensor:
        params = self.params
        positions = ctx.analysis.tokens.prompt_positions
        composites = [s.composite for s in subjects]

        def evaluate(e: torch.Tensor) -> tuple[torch.Tensor, float]:
            _, maps = forward(e.to(dtype))
            value, _ = tome_entropy(maps, positions, composites, params.temperature)
            pixels = int(maps.shape[-2] * maps.shape[-1])
            return value, entropy_threshold(params.thresholds, ctx.step, ctx.num_steps, len(subjects), pixels)

        alpha = tome_step_size(ctx.step, ctx.num_steps, params.scale_factor, params.scale_range)
        cap = refinement_cap(params.refinement_steps, time)
        refined, losses = entropy_descent(current, evaluate, alpha, cap)
        if losses:
            logs["embedding_entropy"] = losses[0]
            logs["embedding_updates"] = float(sum(math.isfinite(v) and v != 0.0 for v in losses))
        return refined.to(current)

    # -- latents --------------------------------------------------------------------------------

    def _maps(self, ctx: GuidanceContext, maps: torch.Tensor) -> torch.Tensor:
        request = self._request()
        if request is None:
            return maps
        if request not in ctx.extra_maps:
            raise ValueError(f"no {request.describe()} among the forward's maps (has: {len(ctx.extra_maps)} requests)")
        return ctx.extra_maps[request]

    def compute(self, ctx: GuidanceContext, maps: torch.Tensor) -> LossTerm | None:
        params = self.params
        subjects = tome_subjects(ctx.analysis, params.merge_between)
        if not subjects:
            return None
        source = self._maps(ctx, maps)
        value, per_subject = tome_entropy(source, ctx.analysis.tokens.prompt_positions,
                                          [s.composite for s in subjects], params.temperature)
        pixels = int(source.shape[-2] * source.shape[-1])
        threshold = entropy_threshold(params.thresholds, ctx.step, ctx.num_steps, len(subjects), pixels)
        time = ctx.time if ctx.time is not None else float(ctx.timestep) / NUM_TRAIN_TIMESTEPS
        cap = refinement_cap(params.refinement_steps, time)
        step_size = 0.5 * tome_step_size(ctx.step, ctx.num_steps, params.scale_factor, params.scale_range)
        logs = {"entropy": as_float(value), "threshold": threshold}
        for k, (s, h) in enumerate(zip(subjects, per_subject.detach().tolist())):
            logs[f"entropy.{k}.{s.word}"] = h
        state = ctx.state
        if ctx.refinement == 0:
            logs.update(state.get("embedding_logs", {}).get(ctx.step, {}))
            applied = True
        else:
            # The official loop stops after the update of an evaluation below the target, and
            # after `cap` updates: the evaluation the engine makes after that one updates nothing.
            previous = state.get("latent_entropy")
            applied = previous is not None and previous >= threshold and ctx.refinement < cap
        state["latent_entropy"] = as_float(value)
        logs["applied"] = float(applied)
        if not applied:
            return LossTerm(value=value * 0.0, step_size=step_size, logs=logs)
        term = LossTerm(value=value, step_size=step_size, logs=logs)
        if cap > 1:
            # refine while the loss is at or above the target (the official test is `loss < target`)
            term.refine_below = math.nextafter(threshold, -math.inf)
            term.max_refinement = cap - 1
        return term
