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

import torch

from ..errors import PluginError
from ..plugin.manager import call_first
from .state import ImageRecord
from ..types import GuidanceContext, LossTerm

log = logging.getLogger(__name__)

Terms = list[tuple[str, float, LossTerm]]
MapsFn = Callable[[torch.Tensor], torch.Tensor]


def evaluate_terms(pm: Any, ctx: GuidanceContext, maps: torch.Tensor, weights: dict[str, float]) -> Terms:
    """Call ``attnguide_loss`` on every run plugin: ``(name, weight, term)`` triples.

    Each plugin sees its own ``ctx.state`` (``ctx.state`` holds one dict per plugin name)."""
    terms: Terms = []
    for impl in reversed(pm.hook.attnguide_loss.get_hookimpls()):
        name = impl.plugin_name
        own = dataclasses.replace(ctx, state=ctx.state.setdefault(name, {}))
        kwargs = {"ctx": own, "maps": maps}
        try:
            term = impl.function(*[kwargs[a] for a in impl.argnames])
        except Exception as exc:
            raise PluginError(
                f"plugin {name!r} failed in hook attnguide_loss at step {ctx.step}: {type(exc).__name__}: {exc}"
            ) from exc
        if term is None:
            _note_nothing_to_guide(impl.plugin, name, own)
            continue
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
        entry = {
            "step": ctx.step,
            "refinement": ctx.refinement,
            "plugin": name,
            "value": float(term.value.detach()),
            "weight": weight,
            "step_size": term.step_size,
        }
        entry.update({k: float(v) for k, v in term.logs.items()})
        record.losses.append(entry)


def _finite(terms: Terms, ctx: GuidanceContext, record: ImageRecord) -> bool:
    bad = [name for name, _, term in terms if not bool(torch.isfinite(term.value.detach()).all())]
    if bad:
        message = f"loss plugin(s) {', '.join(bad)} returned a non-finite loss at step {ctx.step}; update skipped"
        log.warning(message)
        record.skipped.append({"step": ctx.step, "refinement": ctx.refinement, "plugins": bad})
    return not bad


def _update(pm: Any, ctx: GuidanceContext, z: torch.Tensor, terms: Terms, record: ImageRecord) -> torch.Tensor:
    if not terms or not _finite(terms, ctx, record):
        return z.detach()
    if all(float(term.value.detach()) == 0.0 for _, _, term in terms):
        return z.detach()  # as the references: no update when the loss is exactly zero
    new = call_first(pm.hook.attnguide_update_latents, ctx=ctx, latents=z, terms=terms)
    return (z if new is None else new).detach()


def _needs_refinement(terms: Terms) -> bool:
    return any(t.refine_below is not None and float(t.value.detach()) > t.refine_below for _, _, t in terms)


def guide_image(
    pm: Any,
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
    pm: Any, ctx: GuidanceContext, z: torch.Tensor, maps_fn: MapsFn, weights: dict[str, float],
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

