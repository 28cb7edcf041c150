"""Model families the engine drives, recognised from the pipeline object.

* ``sd`` - Stable Diffusion 1.x/2.x (``StableDiffusionPipeline``): one CLIP text encoder, UNet
  cross-attention; default capture: the 16x16 layers (SD 1.x at 512 px).
* ``sdxl`` - Stable Diffusion XL (``StableDiffusionXLPipeline``): two CLIP text encoders whose
  states are concatenated on the channel axis (so token positions are those of the first
  tokenizer), pooled text embeddings and size/crop "time ids" as added conditioning; default
  capture: the lowest-resolution cross-attention layers (``down_blocks.2``, ``mid_block``,
  ``up_blocks.0``), 32x32 at 1024 px, i.e. a quarter of the native latent size.
"""

from __future__ import annotations

from typing import Any, Literal

from ..errors import ConfigError

Family = Literal["sd", "sdxl"]
FAMILIES: dict[str, str] = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl",
}


def family_of(pipe: Any) -> Family:
    """The family of ``pipe``; a ``ConfigError`` naming the pipeline class otherwise."""
    for cls in type(pipe).__mro__:
        if cls.__name__ in FAMILIES:
            return "sdxl" if FAMILIES[cls.__name__] == "sdxl" else "sd"
    supported = ", ".join(FAMILIES)
    raise ConfigError(f"attnguide cannot drive a {type(pipe).__name__}: supported pipelines are {supported}")


def default_attention_resolution(pipe: Any) -> int:
    """The capture grid used when none is chosen: 16 for SD 1.x/2.x; for SDXL a quarter of the
    UNet's native latent size (32 at 1024 px, 16 for ``tiny-sdxl`` at 512 px)."""
    if family_of(pipe) == "sdxl":
        return int(pipe.unet.config.sample_size) // 4
    return 16
