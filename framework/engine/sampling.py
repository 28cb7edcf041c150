"""Sampling settings, the expansion of prompts x seeds into images, and ``Engine.generate``'s
keywords.

``Engine.generate`` takes attnguide's names and also the ones a diffusers pipeline call uses, so a
``pipe(...)`` call moves over with its keywords unchanged:

=========================  ==================================================
diffusers                  attnguide
=========================  ==================================================
``num_inference_steps``    ``steps``
``num_images_per_prompt``  ``images_per_prompt``
``negative_prompt``        ``negative_prompt`` (the same name)
``generator``              in place of ``seeds``: the initial latents are drawn
                           from the given generator(s), as diffusers draws them
=========================  ==================================================

Giving a diffusers name and its attnguide name together is an error naming both; an unknown
keyword is an error naming it with the closest known name.
"""

from __future__ import annotations

import difflib
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic

from ..errors import ConfigError
from ..lazy import torch

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
    a list of one seed counts as that int. Every seed must lie in ``[0, MAX_SEED]``
    (``check_seed``).
    """
    prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompt_list:
        raise ConfigError("no prompt given")
    for p in prompt_list:
        if not isinstance(p, str) or not p.strip():
            raise ConfigError(f"empty prompt {p!r}: give a non-empty text")
    images = [p for p in prompt_list for _ in range(images_per_prompt)]
    if not isinstance(seeds, int) and len(seeds) == 1:
        seeds = check_seed(seeds[0])
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


ALIASES: dict[str, str] = {"num_inference_steps": "steps", "num_images_per_prompt": "images_per_prompt"}
"""diffusers keyword -> ``SamplingConfig`` field."""

GENERATE_KEYWORDS = ("prompts", "seeds", "generator", "losses", "callbacks", "sampling", "analyses",
                     "output_type", "progress")
"""``Engine.generate``'s own parameters (offered as suggestions for a misspelt keyword)."""


def _unknown(key: str, where: str, extra: Sequence[str]) -> ConfigError:
    fields = list(SamplingConfig.model_fields)
    close = difflib.get_close_matches(key, [*fields, *ALIASES, *extra], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(
        f"{where}: unknown keyword {key!r}{hint} (sampling settings: {', '.join(fields)}; diffusers names: "
        f"{', '.join([*ALIASES, 'negative_prompt', 'generator'])})"
    )


def sampling_fields(given: Mapping[str, Any], where: str, extra: Sequence[str] = ()) -> dict[str, Any]:
    """``given`` with diffusers' names replaced by ``SamplingConfig`` field names.

    Args:
        given: keyword -> value, attnguide or diffusers names.
        where: what the keywords were given to (``"Engine.generate()"``, ``"sampling"``), for errors.
        extra: other valid names, offered as suggestions for an unknown key.

    Raises:
        ConfigError: an unknown key (named, with the closest known name), or a diffusers name
            given together with its attnguide name (both named).
    """
    out: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for key, value in given.items():
        name = ALIASES.get(key, key)
        if name not in SamplingConfig.model_fields:
            raise _unknown(str(key), where, extra)
        if name in out:
            raise ConfigError(f"{where}: got both {origin[name]!r} and {key!r}, which mean the same setting "
                              f"({name!r}); give one")
        out[name], origin[name] = value, key
    return out


def sampling_config(base: SamplingConfig | Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> SamplingConfig:
    """The run's sampling settings: ``base`` (a ``SamplingConfig``, a dict of its settings, or
    None for the defaults) with the keyword ``overrides`` on top; both may use diffusers' names.

    Raises:
        ConfigError: ``base`` of another type, a bad key (see ``sampling_fields``) or value.
    """
    if base is None:
        fields = SamplingConfig().model_dump()
    elif isinstance(base, SamplingConfig):
        fields = base.model_dump()
    elif isinstance(base, Mapping):
        fields = sampling_fields(base, "sampling")
    else:
        raise ConfigError(f"sampling must be a SamplingConfig or a dict of its settings, got {type(base).__name__}")
    fields.update(sampling_fields(overrides, "Engine.generate()", GENERATE_KEYWORDS))
    try:
        return SamplingConfig(**fields)
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid sampling settings: {problems}") from None


def user_generators(generator: Any, images: int, device: torch.device) -> torch.Generator | list[torch.Generator]:
    """The ``generator=`` argument checked against the run: one ``torch.Generator`` (it draws
    every image's initial latents in one draw, as diffusers does), or one per image (a list of
    one counts as a single generator, as in diffusers).

    Args:
        generator: what the caller gave.
        images: the number of images of the call.
        device: the engine's device; a generator must be on it or on the CPU.

    Raises:
        ConfigError: not a generator, a wrong count, or a generator on another device.
    """
    items: list[torch.Generator] = list(generator) if isinstance(generator, (list, tuple)) else [generator]
    for k, item in enumerate(items):
        what = "generator" if not isinstance(generator, (list, tuple)) else f"generator[{k}]"
        if not isinstance(item, torch.Generator):
            raise ConfigError(f"{what}: expected a torch.Generator, got {type(item).__name__}")
        if item.device.type not in ("cpu", device.type):
            raise ConfigError(f"{what}: a {item.device.type} generator cannot draw latents for an engine on "
                              f"{device}; use a cpu generator or one on {device.type}")
    if len(items) == 1:
        return items[0]
    if len(items) != images:
        raise ConfigError(f"generator: {len(items)} generators for {images} images: give one per image or a single one")
    return items


def image_draws(
    prompts: str | Sequence[str], seeds: int | Sequence[int] | None, generator: Any, images_per_prompt: int,
    device: torch.device,
) -> tuple[list[str], list[int], torch.Generator | list[torch.Generator]]:
    """Each image's prompt and seed, and what draws the initial latents.

    With ``generator`` None: ``expand_prompts`` (``seeds`` default 0) and one CPU generator
    seeded with each image's seed. With a generator (or a list, see ``user_generators``): those
    generators, and as seeds their ``initial_seed()``.

    Raises:
        ConfigError: both ``seeds`` and ``generator``, or a problem ``expand_prompts`` or
            ``user_generators`` names.
    """
    if generator is not None and seeds is not None:
        raise ConfigError("Engine.generate(): give seeds or generator, not both")
    prompt_list, seed_list = expand_prompts(prompts, 0 if seeds is None else seeds, images_per_prompt)
    if generator is None:
        return prompt_list, seed_list, [torch.Generator("cpu").manual_seed(int(s)) for s in seed_list]
    draws = user_generators(generator, len(prompt_list), device)
    per_image = draws if isinstance(draws, list) else [draws] * len(prompt_list)
    return prompt_list, [int(g.initial_seed()) for g in per_image], draws
