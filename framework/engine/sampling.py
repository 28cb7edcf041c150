"""Sampling settings and the expansion of prompts x seeds into images."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import pydantic

from ..errors import ConfigError

MAX_SEED = 2**64 - 1
"""The largest seed ``torch.Generator.manual_seed`` takes; seeds run from 0 to this."""


def seed_problem(seed: Any, what: str = "seed") -> str | None:
    """Why ``seed`` cannot seed a generator (``"seed -1 is out of range [0, 2**64-1]"``, with
    ``what`` in place of ``seed``), or ``None`` when it can. Negative seeds are refused although
    torch would wrap them: ``-1`` and ``2**64-1`` would otherwise be the same image."""
    if isinstance(seed, bool):
        return f"{what} {seed!r} is not a whole number"
    try:
        value = operator.index(seed)
    except TypeError:
        return f"{what} {seed!r} is not a whole number"
    if not 0 <= value <= MAX_SEED:
        return f"{what} {value} is out of range [0, 2**64-1]"
    return None


def check_seed(seed: Any, what: str = "seed") -> int:
    """``seed`` as an int; a ``ConfigError`` from ``seed_problem`` when it cannot seed a generator."""
    problem = seed_problem(seed, what)
    if problem is not None:
        raise ConfigError(problem)
    return operator.index(seed)


class SamplingConfig(pydantic.BaseModel):
    """How to sample. ``height``/``width`` default to the model's native size."""

    model_config = pydantic.ConfigDict(extra="forbid")

    steps: int = pydantic.Field(50, ge=1, description="denoising steps")
    guidance_scale: float = pydantic.Field(7.5, ge=0.0, description="classifier-free guidance scale")
    height: int | None = pydantic.Field(None, gt=0, multiple_of=8)
    width: int | None = pydantic.Field(None, gt=0, multiple_of=8)
    negative_prompt: str | None = None
    images_per_prompt: int = pydantic.Field(1, ge=1)
    eta: float = pydantic.Field(0.0, ge=0.0, description="DDIM eta")

    @property
    def do_cfg(self) -> bool:
        """Classifier-free guidance runs when the scale is above 1 (as diffusers)."""
        return self.guidance_scale > 1.0

    def resolve_size(self, pipe: Any) -> tuple[int, int]:
        from ..models.families import native_size

        native = native_size(pipe)
        return self.height or native, self.width or native


def scheduler_time(scheduler: Any, timestep: float) -> float:
    """``timestep / num_train_timesteps``: the scheduler's own time, 1 = pure noise (the flow
    time sigma for flow-matching schedulers, whose timesteps are ``1000 * sigma``)."""
    return float(timestep) / float(scheduler.config.num_train_timesteps)


def expand_prompts(
    prompts: str | Sequence[str], seeds: int | Sequence[int], images_per_prompt: int
) -> tuple[list[str], list[int]]:
    """One ``(prompt, seed)`` per image, prompt-major.

    ``seeds`` is one int (image ``k`` of every prompt gets ``seed + k``) or one seed per image;
    every seed must lie in ``[0, MAX_SEED]`` (``check_seed``).
    """
    prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompt_list:
        raise ConfigError("no prompt given")
    for p in prompt_list:
        if not isinstance(p, str) or not p.strip():
            raise ConfigError(f"empty prompt {p!r}: give a non-empty text")
    images = [p for p in prompt_list for _ in range(images_per_prompt)]
    if isinstance(seeds, int):
        seed_list = [check_seed(seeds + k) for _ in prompt_list for k in range(images_per_prompt)]
    else:
        seed_list = [check_seed(s) for s in seeds]
        if len(seed_list) != len(images):
            raise ConfigError(
                f"{len(seed_list)} seeds for {len(images)} images ({len(prompt_list)} prompts x "
                f"{images_per_prompt} per prompt): give one seed per image or a single int"
            )
    return images, seed_list
