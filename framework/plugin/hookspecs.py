"""The attnguide hook specification (pluggy project name ``"attnguide"``).

Two kinds of plugin implement these hooks:

* **registrars** - modules or objects registered once per plugin manager (the built-ins and
  anything found under the ``attnguide`` entry-point group). They implement the three
  ``attnguide_register_*`` hooks and hand over loss, parser and callback *classes*.
* **run plugins** - the loss and callback *instances* chosen for one run. The engine registers
  them in a fresh per-run plugin manager and calls the ``on_*`` hooks and the guidance hooks on
  them. Everything a run plugin keeps between steps lives on the instance (made per run) or in
  ``ctx.state`` (per image), never on the pipeline or a module global.

Implementations may accept fewer arguments than the specification lists; only the ones they
name are passed. A method or function named exactly like a hook implements it, with or without
``@hookimpl`` (the marker is needed only for options such as ``trylast``). Hooks are called in
the order their plugins are listed (``attnguide.plugin.dispatch``). Unless a hook says "first
result wins", every non-None result is collected. Wrappers (``wrapper=True``,
``hookwrapper=True``) are refused at registration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import torch

    from ..engine.state import RunState
    from ..types import AttentionContext, AttentionEdit, EmbeddingContext, GuidanceContext, LossTerm, NoiseContext

PROJECT = "attnguide"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def attnguide_register_losses() -> list[type[Any]]:
    """Return loss plugin classes (subclasses of ``attnguide.LossPlugin``).

    Called once when a plugin manager is built. Each class has a unique ``name`` (what recipes
    and ``--method`` use) and a ``Params`` pydantic model describing its parameters.
    """
    return []  # a specification: pluggy never runs this body


@hookspec
def attnguide_register_parsers() -> list[type[Any]]:
    """Return prompt parser classes (subclasses of ``attnguide.prompts.parsing.Parser``).

    Called once when a plugin manager is built. Each class has a unique ``name``.
    """
    return []  # a specification: pluggy never runs this body


@hookspec
def attnguide_register_callbacks() -> list[type[Any]]:
    """Return callback classes (subclasses of ``attnguide.Callback``).

    Called once when a plugin manager is built. Each class has a unique ``name``.
    """
    return []  # a specification: pluggy never runs this body


@hookspec
def on_run_start(run: RunState) -> None:
    """Called once per ``Engine.generate`` call, after prompts are analysed and the initial
    latents drawn, before the first denoising step.

    Args:
        run: the per-run state (config, analyses, ``latents: [B, C, h, w]``, records).
    """


@hookspec
def attnguide_initial_latents(ctx: NoiseContext, latents: torch.Tensor) -> torch.Tensor | None:
    """Replace one image's initial latents before the loop (initial-noise optimisation:
    InitNO, CoCoNO).

    Called once per image, after the initial latents are drawn and before ``on_run_start``, on
    every run plugin that implements it, in run order: each gets the latents the previous one
    returned.

    Args:
        ctx: the image's prompt analysis, seed, first timestep, this plugin's state, and
            ``ctx.forward(z)``: the conditional forward at the first timestep on a
            grad-requiring ``z: [1, C, h, w]``, returning ``(maps [tokens, H, W], extra maps by
            MapRequest)``; ``ctx.fresh_noise(k)`` draws restart ``k``'s noise (seeded by the
            image's seed and ``k``).
        latents: ``[1, C, h, w]`` the image's current initial latents (packed ``[1, tokens, C]``
            on Flux).

    Returns:
        New initial latents of the same shape (detached), or ``None`` to keep them.
    """


@hookspec
def attnguide_edit_embeddings(ctx: EmbeddingContext, embeds: torch.Tensor) -> torch.Tensor | None:
    """Edit one image's conditional text embeddings for one step (ToMe, Magnet, Structured
    Diffusion Guidance).

    Called at every denoising step, for every image, on every run plugin that implements it, in
    run order (each gets the previous one's result), before that step's guidance and its
    ordinary forward; both use the edited embeddings. The unconditional branch is untouched.

    Args:
        ctx: the image's prompt analysis (token positions), step, timestep, this plugin's
            state, and ``ctx.encode(text)``: this pipeline's conditional embedding of any text,
            ``[L, D]`` (to encode noun phrases or a merged prompt).
        embeds: ``[L, D]`` the image's conditional embeddings as the denoiser takes them (SD:
            77 CLIP states; SDXL: both encoders' states concatenated; SD3: 77 CLIP positions
            then the T5 states; Flux: the T5 states).

    Returns:
        ``[L, D]`` edited embeddings, or ``None`` to leave them.
    """


@hookspec
def on_step_start(run: RunState, step: int, timestep: int | float) -> None:
    """Called at the start of every denoising step ``step`` (0-based), before guidance."""


@hookspec
def attnguide_modulate_attention(ctx: AttentionContext, probs: torch.Tensor) -> torch.Tensor | AttentionEdit | None:
    """Edit attention inside the forward pass of the layers the plugin's ``modulated_layers()``
    names (Structured Diffusion Guidance, attention regulation). No gradient is required.

    Called in every forward of the run (both CFG branches, guidance and noise forwards) at each
    modulated layer, on every run plugin that implements it, in run order: each gets the
    probabilities the previous returned.

    Args:
        ctx: the layer, its grid, the step, which image and branch each row is, the analyses,
            this plugin's per-image state and the layer's text states ``[rows, L, D]``.
        probs: ``[rows, heads, queries, keys]`` the layer's softmax probabilities.

    Returns:
        New probabilities of the same shape, an ``AttentionEdit`` (probabilities and/or value
        states, whose ``to_v`` projections are averaged), or ``None`` to leave the layer.
    """


@hookspec
def attnguide_loss(ctx: GuidanceContext, maps: torch.Tensor) -> LossTerm | None:
    """Compute one guidance loss term for one image at one step.

    Called for every loss plugin of the run, for every image, at every step while guidance is
    active, and again after each latent update during iterative refinement.

    Args:
        ctx: step, number of steps, the prompt's bindings and token positions, and this
            plugin's per-image state.
        maps: cross-attention maps of the conditional branch, ``[tokens, H, W]`` float32 (77
            tokens for CLIP), averaged over the captured layers and heads; each pixel's
            attention sums to 1 over tokens. Differentiable w.r.t. the latents.

    Returns:
        A ``LossTerm`` (scalar ``value`` with a graph), or ``None`` outside the plugin's step
        window or when the prompt gives it nothing to guide. Every non-None result is used.
    """


@hookspec(firstresult=True)
def attnguide_update_latents(
    ctx: GuidanceContext, latents: torch.Tensor, terms: list[tuple[str, float, LossTerm]]
) -> torch.Tensor | None:
    """Take one guidance step on the latents of one image. First result wins.

    Args:
        ctx: the step's context.
        latents: ``[1, C, h, w]`` float32 leaf with ``requires_grad``; the terms' values have
            a graph back to it.
        terms: ``(plugin name, weight, term)`` for every loss that returned a term.

    Returns:
        The updated latents ``[1, C, h, w]``, detached. The built-in default does
        ``z - grad(sum(weight * step_size * value), z)``.
    """


@hookspec
def on_step_end(run: RunState, step: int, timestep: int | float, latents: torch.Tensor) -> None:
    """Called after the scheduler step of denoising step ``step``.

    Args:
        latents: the new latents ``[B, C, h, w]`` (read-only by convention).
    """


@hookspec
def on_run_end(run: RunState, images: list[Any]) -> None:
    """Called once after decoding, with the final PIL images (one per image of the run),
    also when no image was decoded (``output_type='latent'``: an empty list)."""


REGISTRAR_HOOKS: tuple[str, ...] = (
    "attnguide_register_losses",
    "attnguide_register_parsers",
    "attnguide_register_callbacks",
)
"""Hooks called once per plugin manager, on registrar modules (built-ins and entry points)."""

RUN_HOOKS: tuple[str, ...] = (
    "attnguide_initial_latents",
    "on_run_start",
    "on_step_start",
    "attnguide_edit_embeddings",
    "attnguide_modulate_attention",
    "attnguide_loss",
    "attnguide_update_latents",
    "on_step_end",
    "on_run_end",
)
"""Hooks called during a run, on the run's loss and callback instances only."""

HOOK_NAMES: tuple[str, ...] = REGISTRAR_HOOKS + RUN_HOOKS
