"""The guidance phase of one denoising step for one image.

forward (conditional branch, with gradients, maps captured) -> loss terms from every loss
plugin -> optional iterative refinement -> one latent update through the update hook.
Refinement reuses the maps of the last forward: each forward serves both the stop test and
the next update, so no forward is run twice on the same latents.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import pluggy
import torch

from ..errors import PluginError
from ..plugin.dispatch import invoke, invoke_first
from ..types import GuidanceContext, LossRecord, LossTerm, Terms
from .state import ImageRecord

log = logging.getLogger(__name__)

MapsFn = Callable[[torch.Tensor], torch.Tensor]


def evaluate_terms(pm: pluggy.PluginManager, ctx: GuidanceContext, maps: torch.Tensor,
                   weights: dict[str, float]) -> Terms:
    """Call ``attnguide_loss`` on every run plugin, in run order: ``(name, weight, term)``.

    Each plugin sees its own ``ctx.state`` (``ctx.state`` holds one dict per plugin name)."""
    contexts: dict[str, GuidanceContext] = {}

    def own_context(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        contexts[name] = dataclasses.replace(ctx, state=ctx.state.setdefault(name, {}))
        return {**kwargs, "ctx": contexts[name]}

    results = invoke(pm.hook.attnguide_loss, arguments_for=own_context, where=f"at step {ctx.step}",
                     ctx=ctx, maps=maps)
    returned = {name for name, _ in results}
    for name, own in contexts.items():
        if name not in returned:
            _note_nothing_to_guide(pm.get_plugin(name), name, own)
    terms: Terms = []
    for name, term in results:
        if not isinstance(term, LossTerm):
            raise PluginError(f"plugin {name!r} returned {type(term).__name__} from attnguide_loss, expected LossTerm")
        terms.append((name, weights.get(name, 1.0), term))
    return terms


def _note_nothing_to_guide(plugin: Any, name: str, ctx: GuidanceContext) -> None:
    """Warn once per plugin and image when a plugin inside its window has nothing to guide."""
    in_window = getattr(plugin, "in_window", None)
    if in_window is None or not in_window(ctx) or ctx.state.get("_nothing_to_guide"):
        return
    ctx.state["_nothing_to_guide"] = True
    log.warning(
        "loss plugin %r found nothing to guide in prompt %r at step %d (no usable bindings); "
        "this image runs unguided by it", name, ctx.analysis.prompt, ctx.step,
    )


def _record(record: ImageRecord, ctx: GuidanceContext, terms: Terms) -> None:
    for name, weight, term in terms:
        record.losses.append(LossRecord(
            step=ctx.step, refinement=ctx.refinement, plugin=name, value=float(term.value.detach()),
            weight=weight, step_size=term.step_size, logs={k: float(v) for k, v in term.logs.items()},
        ))


def _finite(terms: Terms, ctx: GuidanceContext, record: ImageRecord) -> bool:
    bad = [name for name, _, term in terms if not bool(torch.isfinite(term.value.detach()).all())]
    if bad:
        message = f"loss plugin(s) {', '.join(bad)} returned a non-finite loss at step {ctx.step}; update skipped"
        log.warning(message)
        record.skipped.append({"step": ctx.step, "refinement": ctx.refinement, "plugins": bad})
    return not bad


def _update(pm: pluggy.PluginManager, ctx: GuidanceContext, z: torch.Tensor, terms: Terms, record: ImageRecord) -> torch.Tensor:
    if not terms or not _finite(terms, ctx, record):
        return z.detach()
    if all(float(term.value.detach()) == 0.0 for _, _, term in terms):
        return z.detach()  # as the references: no update when the loss is exactly zero
    new = invoke_first(pm.hook.attnguide_update_latents, where=f"at step {ctx.step}", ctx=ctx, latents=z, terms=terms)
    if new is not None and not isinstance(new, torch.Tensor):
        raise PluginError(f"attnguide_update_latents returned {type(new).__name__}, expected a tensor")
    return (z if new is None else new).detach()


def _needs_refinement(terms: Terms) -> bool:
    return any(t.refine_below is not None and float(t.value.detach()) > t.refine_below for _, _, t in terms)


def guide_image(
    pm: pluggy.PluginManager,
    ctx: GuidanceContext,
    latent: torch.Tensor,
    maps_fn: MapsFn,
    weights: dict[str, float],
    record: ImageRecord,
    repeat_refinement_forward: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the guidance phase for one image.

    Args:
        latent: ``[1, C, h, w]`` latents before guidance.
        maps_fn: runs the conditional forward on a grad-requiring ``[1, C, h, w]`` and returns
            its maps ``[tokens, H, W]`` float32.

    Returns:
        ``(latent after guidance [1, C, h, w] detached, maps [tokens, H, W] of the last
        evaluation, detached - or None when no plugin was active)``.
    """
    with torch.enable_grad():
        z = latent.detach().requires_grad_(True)
        maps = maps_fn(z)
        terms = evaluate_terms(pm, ctx, maps, weights)
        if not terms:
            return latent, None
        _record(record, ctx, terms)
        if _needs_refinement(terms):
            if repeat_refinement_forward:
                z = z.detach().requires_grad_(True)
                maps = maps_fn(z)
                terms = evaluate_terms(pm, ctx, maps, weights)
            z, maps, terms = _refine(pm, ctx, z, maps_fn, weights, record, terms)
        z = _update(pm, ctx, z, terms, record)
    return z, maps.detach()


def _refine(
    pm: pluggy.PluginManager, ctx: GuidanceContext, z: torch.Tensor, maps_fn: MapsFn, weights: dict[str, float],
    record: ImageRecord, terms: Terms,
) -> tuple[torch.Tensor, torch.Tensor, Terms]:
    """Attend-and-Excite's iterative refinement, without its repeated forward.

    The reference loops: forward, update, and stops once the loss *before* that update was
    below target (or after the cap), then runs one more forward for the final update. Here
    each forward's maps serve the next update directly.
    """
    cap = min((t.max_refinement for _, _, t in terms if t.refine_below is not None), default=0)
    iteration = 0
    while True:
        iteration += 1
        stop = not _needs_refinement(terms) or iteration >= cap
        z = _update(pm, ctx, z, terms, record).requires_grad_(True)
        ctx.refinement = iteration
        maps = maps_fn(z)
        terms = evaluate_terms(pm, ctx, maps, weights)
        _record(record, ctx, terms)
        if stop or not terms:
            break
    record.refinement_iterations[ctx.step] = iteration
    return z, maps, terms

