"""Per-run state: what one ``Engine.generate`` call knows, handed to the run hooks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..lazy import torch
from ..types import LossRecord, PromptAnalysis


@dataclass
class ImageRecord:
    """What happened to one image: its prompt, seed, bindings and per-step loss terms.

    ``losses`` holds one ``LossRecord`` per evaluated term, in evaluation order (steps, then
    the run's order of plugins); ``skipped`` lists updates skipped for a non-finite loss.
    ``generator`` is True when the initial latents were drawn from a caller's
    ``torch.Generator`` (``Engine.generate(generator=...)``); ``seed`` is then that generator's
    ``initial_seed()``, which reproduces the image only if the generator was a fresh CPU
    generator of this image alone.
    """

    index: int
    prompt: str
    seed: int
    analysis: PromptAnalysis | None = None
    losses: list[LossRecord] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    refinement_iterations: dict[int, int] = field(default_factory=dict)
    generator: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.index,
            "prompt": self.prompt,
            "seed": self.seed,
            "analysis": self.analysis.to_dict() if self.analysis else None,
            "losses": [r.to_dict() for r in self.losses],
            "skipped_updates": self.skipped,
            "refinement_iterations": {str(k): v for k, v in self.refinement_iterations.items()},
        }
        if self.generator:
            out["generator"] = True
        return out


@dataclass
class RunState:
    """State of one run, passed to ``on_run_start`` / ``on_step_*`` / ``on_run_end``.

    Attributes:
        config: the resolved sampling settings (steps, guidance scale, size, scheduler ...).
        records: one ``ImageRecord`` per image, in output order.
        latents: current latents ``[B, C, h, w]`` (updated by the engine).
        timesteps: the scheduler's timesteps, one per step.
        capture_steps: steps at which callbacks want the conditional branch's maps; the engine
            then captures them in the ordinary forward and puts them in ``step_maps``.
        step_maps: ``{step: [B, tokens, H, W] float32}`` (detached, on CPU) for those steps.
        guidance_maps: ``{step: {image index: [tokens, H, W]}}`` maps the losses saw at the
            last evaluation of each guided step (detached, on CPU).
        plugins: the run's loss and callback instances.
        plugin_state: ``{image index: {plugin name: state dict}}`` - what loss plugins see as
            ``ctx.state``.
        artifacts: ``{image index: {suffix: value}}`` files callbacks want written next to
            the image: a PIL image for ``*.png``, ``(tensors, metadata)`` for ``*.safetensors``.
    """

    config: dict[str, Any]
    records: list[ImageRecord]
    latents: torch.Tensor | None = None
    timesteps: list[int | float] = field(default_factory=list)
    capture_steps: set[int] = field(default_factory=set)
    step_maps: dict[int, torch.Tensor] = field(default_factory=dict)
    guidance_maps: dict[int, dict[int, torch.Tensor]] = field(default_factory=dict)
    plugins: list[Any] = field(default_factory=list)
    plugin_state: dict[int, dict[str, dict[str, Any]]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    artifacts: dict[int, dict[str, Any]] = field(default_factory=dict)
