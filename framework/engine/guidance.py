"""The guidance phase of one denoising step, for a batch of images at once.

forward (conditional branch, with gradients, maps captured) -> loss terms from every loss
plugin, per image -> optional iterative refinement -> one latent update per image.
Refinement reuses the maps of the last forward: each forward serves both the stop test and
the next update, so no forward is run twice on the same latents.

All images of a batch share each forward and each backward: an image's loss depends on its
own latents only, so the gradient of the batch's summed objective w.r.t. its row is its own
gradient. Images leave the batch as they finish (no refinement, or refinement stopped), so
per-image stopping and per-image logs are as when each image runs alone. A plugin that
replaces ``attnguide_update_latents`` is called per image, so the engine then guides one image
at a time.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pluggy
import torch

from ..errors import PluginError
from ..plugin.dispatch import implementers, invoke, invoke_first
from ..types import GuidanceContext, LossRecord, LossTerm, Terms
from .state import ImageRecord
from .update import DEFAULT_UPDATE, Descent, descend

log = logging.getLogger(__name__)

MapsFn = Callable[[torch.Tensor], torch.Tensor]
BatchMapsFn = Callable[[torch.Tensor, list[int]], list[torch.Tensor]]
"""``(z [k, C, h, w] requiring grad, image indices (k)) -> k maps [tokens, H, W]``."""


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


def custom_update(pm: pluggy.PluginManager) -> bool:
    """Whether a run plugin replaces the default latent update (then guidance is per image)."""
    return any(name != DEFAULT_UPDATE for name in implementers(pm.hook.attnguide_update_latents))


@dataclass
class _Image:
    """One image's progress through the guidance phase."""

    index: int
    ctx: GuidanceContext
    record: ImageRecord
    leaf: torch.Tensor  # grad-requiring latents of its last forward
    row: int  # its row there
    maps: torch.Tensor
    terms: Terms = field(default_factory=list)
    refining: bool = False
    stop: bool = False
    iteration: int = 0
    cap: int = 0
    result: torch.Tensor | None = None


def _usable(image: _Image) -> bool:
    """Whether ``image``'s terms call for an update (else: skipped, logged when non-finite)."""
    terms = image.terms
    if not terms or not _finite(terms, image.ctx, image.record):
        return False
    return not all(float(term.value.detach()) == 0.0 for _, _, term in terms)  # as the references


def _update_all(pm: pluggy.PluginManager, images: list[_Image], per_image_hook: bool) -> list[torch.Tensor]:
    """Each image's latents after one update from its current terms: ``[1, C, h, w]`` detached."""
    usable = [_usable(image) for image in images]
    out = [image.leaf[image.row : image.row + 1].detach() for image in images]
    if per_image_hook:
        for k, image in enumerate(images):
            if usable[k]:
                out[k] = _hook_update(pm, image)
        return out
    chosen = [k for k in range(len(images)) if usable[k]]
    stepped = descend([Descent(images[k].leaf, images[k].row, images[k].terms) for k in chosen])
    for k, z in zip(chosen, stepped):
        out[k] = z
    return out


def _hook_update(pm: pluggy.PluginManager, image: _Image) -> torch.Tensor:
    ctx, z = image.ctx, image.leaf
    new = invoke_first(pm.hook.attnguide_update_latents, where=f"at step {ctx.step}", ctx=ctx, latents=z,
                       terms=image.terms)
    if new is not None and not isinstance(new, torch.Tensor):
        raise PluginError(f"attnguide_update_latents returned {type(new).__name__}, expected a tensor")
    return (z if new is None else new).detach()


def _needs_refinement(terms: Terms) -> bool:
    return any(t.refine_below is not None and float(t.value.detach()) > t.refine_below for _, _, t in terms)


def guide_batch(
    pm: pluggy.PluginManager,
    contexts: Sequence[GuidanceContext],
    latents: torch.Tensor,
    forward: BatchMapsFn,
    weights: dict[str, float],
    records: Sequence[ImageRecord],
    repeat_refinement_forward: bool = False,
) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """Run the guidance phase for ``B`` images together.

    Args:
        contexts: one context per image (its ``index`` names the image for ``forward``).
        latents: ``[B, C, h, w]`` latents before guidance.
        forward: the conditional forward of several images on grad-requiring latents.
        repeat_refinement_forward: run the reference's extra forward before refinement.

    Returns:
        ``(latents after guidance [B, C, h, w] detached, per image the maps [tokens, H, W] of
        its last evaluation, detached - or None when no plugin was active for it)``.
    """
    per_image_hook = custom_update(pm)
    if per_image_hook and len(contexts) > 1:
        raise ValueError("a plugin replaces attnguide_update_latents: guide one image at a time")
    with torch.enable_grad():
        z = latents.detach().requires_grad_(True)
        maps = forward(z, [ctx.image_index for ctx in contexts])
        images = [_Image(ctx.image_index, ctx, rec, z, k, maps[k]) for k, (ctx, rec) in enumerate(zip(contexts, records))]
        for image in images:
            image.terms = evaluate_terms(pm, image.ctx, image.maps, weights)
            _record(image.record, image.ctx, image.terms)
        active = [image for image in images if image.terms]
        for image in active:
            image.refining = _needs_refinement(image.terms)
        if repeat_refinement_forward:
            _forward(pm, [image for image in active if image.refining], forward, weights, record=False)
        for image in active:
            if image.refining:
                image.cap = min((t.max_refinement for _, _, t in image.terms if t.refine_below is not None), default=0)
        while active:
            active = _round(pm, active, forward, weights, per_image_hook)
    out = [latents[k : k + 1] if image.result is None else image.result for k, image in enumerate(images)]
    return torch.cat(out), [None if image.result is None else image.maps.detach() for image in images]


def _round(pm: pluggy.PluginManager, active: list[_Image], forward: BatchMapsFn, weights: dict[str, float],
           per_image_hook: bool) -> list[_Image]:
    """One update of every active image; refining ones then run their next forward together.

    Attend-and-Excite's refinement, without its repeated forward: the reference loops forward,
    update, and stops once the loss *before* that update was below target (or after the cap),
    then runs one more forward for the final update. Here each forward's maps serve the next
    update directly. Returns the images that still have an update to make."""
    for image in active:
        if image.refining:
            image.iteration += 1
            image.stop = not _needs_refinement(image.terms) or image.iteration >= image.cap
    updated = _update_all(pm, active, per_image_hook)
    refining = []
    for image, z in zip(active, updated):
        if image.refining:
            image.leaf, image.row = z, 0
            refining.append(image)
        else:
            image.result = z
    if refining:
        for image in refining:
            image.ctx.refinement = image.iteration
        _forward(pm, refining, forward, weights, record=True)
    for image in refining:
        if image.stop or not image.terms:
            image.refining = False
            image.record.refinement_iterations[image.ctx.step] = image.iteration
    return refining


def _forward(pm: pluggy.PluginManager, images: list[_Image], forward: BatchMapsFn, weights: dict[str, float],
             *, record: bool) -> None:
    """Run ``images``' next forward in one batch (new grad-requiring leaf) and evaluate their terms."""
    if not images:
        return
    z = torch.cat([image.leaf[image.row : image.row + 1].detach() for image in images]).requires_grad_(True)
    maps = forward(z, [image.index for image in images])
    for k, image in enumerate(images):
        image.leaf, image.row, image.maps = z, k, maps[k]
        image.terms = evaluate_terms(pm, image.ctx, image.maps, weights)
        if record:
            _record(image.record, image.ctx, image.terms)


def guide_image(
    pm: pluggy.PluginManager,
    ctx: GuidanceContext,
    latent: torch.Tensor,
    maps_fn: MapsFn,
    weights: dict[str, float],
    record: ImageRecord,
    repeat_refinement_forward: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the guidance phase for one image (``guide_batch`` with a batch of one).

    Args:
        latent: ``[1, C, h, w]`` latents before guidance.
        maps_fn: runs the conditional forward on a grad-requiring ``[1, C, h, w]`` and returns
            its maps ``[tokens, H, W]`` float32.

    Returns:
        ``(latent after guidance [1, C, h, w] detached, maps [tokens, H, W] of the last
        evaluation, detached - or None when no plugin was active)``.
    """
    z, maps = guide_batch(pm, [ctx], latent, lambda z, _: [maps_fn(z)], weights, [record], repeat_refinement_forward)
    return z, maps[0]
