"""Scheduler selection by short name, built from the pipeline's own scheduler config."""

from __future__ import annotations

from typing import Any

import diffusers

from ..errors import ConfigError

SCHEDULERS: dict[str, str] = {
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "ddpm": "DDPMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
    "dpm": "DPMSolverMultistepScheduler",
    "dpm_single": "DPMSolverSinglestepScheduler",
    "kdpm2": "KDPM2DiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
    "deis": "DEISMultistepScheduler",
    "lms": "LMSDiscreteScheduler",
}


def make_scheduler(name: str, config: Any) -> Any:
    """A diffusers scheduler called ``name`` (short name or class name) for ``config``."""
    class_name = SCHEDULERS.get(name.lower(), name)
    cls = getattr(diffusers, class_name, None)
    if cls is None or not hasattr(cls, "from_config"):
        known = ", ".join(SCHEDULERS)
        raise ConfigError(f"unknown scheduler {name!r}; use one of: {known} (or a diffusers class name)")
    return cls.from_config(config)
