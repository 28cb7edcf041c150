"""Model families the engine drives, recognised from the pipeline object.

* ``sd`` - Stable Diffusion 1.x/2.x (``StableDiffusionPipeline``): one CLIP text encoder, UNet
  cross-attention; default capture: the 16x16 layers (SD 1.x at 512 px).
* ``sd3`` - Stable Diffusion 3/3.5 (``StableDiffusion3Pipeline``): an MMDiT whose joint attention
  runs over ``[image, text]`` tokens; text = 77 CLIP positions (CLIP-L and -G concatenated on the
  channel axis) followed by the T5 tokens; default capture: every joint block, the image->text
  block of the attention computed explicitly and renormalised over the text keys.
* ``sdxl`` - Stable Diffusion XL (``StableDiffusionXLPipeline``): two CLIP text encoders whose
  states are concatenated on the channel axis (so token positions are those of the first
  tokenizer), pooled text embeddings and size/crop "time ids" as added conditioning; default
  capture: the lowest-resolution cross-attention layers (``down_blocks.2``, ``mid_block``,
  ``up_blocks.0``), 32x32 at 1024 px, i.e. a quarter of the native latent size.
"""

from __future__ import annotations

from typing import Any, Literal

from ..errors import ConfigError

Family = Literal["sd", "sdxl", "sd3"]
FAMILIES: dict[str, Family] = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusion3Pipeline": "sd3",
}


def family_of(pipe: Any) -> Family:
    """The family of ``pipe``; a ``ConfigError`` naming the pipeline class otherwise."""
    for cls in type(pipe).__mro__:
        if cls.__name__ in FAMILIES:
            return FAMILIES[cls.__name__]
    supported = ", ".join(FAMILIES)
    raise ConfigError(f"attnguide cannot drive a {type(pipe).__name__}: supported pipelines are {supported}")


def default_attention_resolution(pipe: Any) -> int | None:
    """The capture grid used when none is chosen: 16 for SD 1.x/2.x; for SDXL a quarter of the
    UNet's native latent size (32 at 1024 px, 16 for ``tiny-sdxl`` at 512 px); for SD3 every
    joint-attention block (``None``: they all see the same image-token grid)."""
    family = family_of(pipe)
    if family == "sdxl":
        return int(pipe.unet.config.sample_size) // 4
    return None if family == "sd3" else 16


def denoiser(pipe: Any) -> Any:
    """The network the loop calls: the UNet (SD 1.x/2.x, SDXL) or the transformer (SD3)."""
    return pipe.transformer if family_of(pipe) == "sd3" else pipe.unet


def native_size(pipe: Any) -> int:
    """The pipeline's default image side in pixels."""
    sample = pipe.transformer.config.sample_size if family_of(pipe) == "sd3" else pipe.unet.config.sample_size
    return int(sample) * int(pipe.vae_scale_factor)
