"""Interventions other than the latent step: initial-noise optimisation and embedding edits.

Both hooks chain: the run's plugins that implement one are called in run order, each on what
the previous returned (``attnguide.plugin.dispatch.invoke_chain``). A run whose plugins
implement neither pays nothing: the engine asks ``implements`` first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from ..errors import ConfigError, PluginError
from ..plugin.dispatch import has_implementations, invoke_chain
from ..types import EmbeddingContext, NoiseContext, PromptAnalysis
from .conditioning import Conditioning
from .state import ImageRecord, RunState

ForwardFn = Callable[[torch.Tensor, int], tuple[torch.Tensor, dict[Any, torch.Tensor]]]
"""``(z [1, ...], image index) -> (maps [tokens, H, W], extra maps)`` at the first timestep."""


def implements(run_pm: Any, hook: str) -> bool:
    """Whether any plugin of the run implements ``hook``."""
    return has_implementations(getattr(run_pm.hook, hook))


def initial_latents(run: RunState, run_pm: Any, latents: torch.Tensor, timestep: torch.Tensor,
                    forward: ForwardFn, init_noise_sigma: float) -> torch.Tensor:
    """Each image's initial latents after the run's ``attnguide_initial_latents`` plugins.

    Args:
        latents: ``[B, ...]`` the drawn initial latents.
        forward: the conditional forward at ``timestep`` for one image.
        init_noise_sigma: the scheduler's initial noise scale (restart noise is drawn with it).
    """
    out = []
    for b, record in enumerate(run.records):
        analysis = _analysis(record, "initial-noise plugins")
        state = run.plugin_state.setdefault(b, {})
        like = latents[b : b + 1]

        def fresh_noise(k: int, seed: int = record.seed, like: torch.Tensor = like) -> torch.Tensor:
            generator = torch.Generator("cpu").manual_seed(restart_seed(seed, k))
            noise = torch.randn(tuple(like.shape), generator=generator, dtype=torch.float32)
            return (noise * init_noise_sigma).to(device=like.device, dtype=like.dtype)

        def image_forward(z: torch.Tensor, b: int = b) -> tuple[torch.Tensor, dict[Any, torch.Tensor]]:
            return forward(z, b)

        def own_context(name: str, kwargs: dict[str, Any], b: int = b, seed: int = record.seed,
                        analysis: PromptAnalysis = analysis, state: dict[str, Any] = state,
                        image_forward: Any = image_forward, fresh_noise: Any = fresh_noise) -> dict[str, Any]:
            ctx = NoiseContext(b, seed, analysis, timestep.item(), state.setdefault(name, {}), image_forward,
                               fresh_noise)
            return {**kwargs, "ctx": ctx}

        new = invoke_chain(run_pm.hook.attnguide_initial_latents, "latents", like.detach(), arguments_for=own_context,
                           where=f"for image {b}", check=_checker(like))
        out.append(new.detach())
    return torch.cat(out)


def restart_seed(seed: int, k: int) -> int:
    """The seed of restart ``k`` of an image seeded ``seed`` (restart 0 is not the seed itself)."""
    return (int(seed) * 1_000_003 + 7919 * (k + 1)) % (2**63 - 1)


EmbedsForwardFn = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]
"""``(embeds [L, D], image index) -> (prediction [1, ...], maps [tokens, H, W])`` at this step."""


def edited_conditioning(run: RunState, run_pm: Any, text: Conditioning, step: int, timestep: torch.Tensor,
                        num_steps: int, encode: Callable[[str], torch.Tensor],
                        forward: EmbedsForwardFn | None = None) -> Conditioning:
    """``text`` with each image's conditional rows replaced by the run's
    ``attnguide_edit_embeddings`` plugins' result for this step."""
    rows = []
    for b, record in enumerate(run.records):
        analysis = _analysis(record, "embedding edits")
        state = run.plugin_state.setdefault(b, {})

        def own_context(name: str, kwargs: dict[str, Any], b: int = b, analysis: PromptAnalysis = analysis,
                        state: dict[str, Any] = state) -> dict[str, Any]:
            image_forward = None if forward is None else _bound(forward, b)
            ctx = EmbeddingContext(b, step, num_steps, timestep.item(), analysis, state.setdefault(name, {}), encode,
                                   image_forward)
            return {**kwargs, "ctx": ctx}

        like = text.cond[b]
        rows.append(invoke_chain(run_pm.hook.attnguide_edit_embeddings, "embeds", like, arguments_for=own_context,
                                 where=f"at step {step} for image {b}", check=_checker(like)))
    cond = torch.stack(rows)
    if text.cfg:
        embeds = torch.cat([text.embeds[: len(rows)], cond])
    else:
        embeds = cond
    return dataclasses.replace(text, embeds=embeds, cond=cond)


def _bound(forward: EmbedsForwardFn, b: int) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    def image_forward(embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return forward(embeds, b)

    return image_forward


def _analysis(record: ImageRecord, what: str) -> PromptAnalysis:
    if record.analysis is None:
        raise ConfigError(f"prompt {record.prompt!r} has no analysis; {what} need bindings")
    return record.analysis


def _checker(like: torch.Tensor) -> Callable[[str, Any], torch.Tensor]:
    def check(plugin: str, value: Any) -> torch.Tensor:
        return _checked(value, like, plugin)

    return check


def _checked(value: Any, like: torch.Tensor, plugin: str) -> torch.Tensor:
    """``value`` as a tensor shaped, typed and placed like ``like``; a ``PluginError`` naming the
    plugin otherwise."""
    if not isinstance(value, torch.Tensor) or value.shape != like.shape:
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise PluginError(f"plugin {plugin!r} returned {got}, expected a tensor of shape {tuple(like.shape)}")
    return value.to(dtype=like.dtype, device=like.device)
