"""Model families the engine drives, recognised from the pipeline object.

* ``sd`` - Stable Diffusion 1.x/2.x (``StableDiffusionPipeline``): one CLIP text encoder, UNet
  cross-attention; default capture: the 16x16 layers (SD 1.x at 512 px).
* ``sd3`` - Stable Diffusion 3/3.5 (``StableDiffusion3Pipeline``): an MMDiT whose joint attention
  runs over ``[image, text]`` tokens; text = 77 CLIP positions (CLIP-L and -G concatenated on the
  channel axis) followed by the T5 tokens; default capture: every joint block, the image->text
  block of the attention computed explicitly and renormalised over the text keys.
* ``flux`` - Flux (``FluxPipeline``): double-stream blocks (joint attention over ``[text,
  image]`` tokens with separate projections) then single-stream blocks; T5 tokens are the only
  text tokens (CLIP gives a pooled embedding); guidance-distilled (no CFG branch, one forward per
  step); latents packed 2x2 into tokens; default capture: the double-stream blocks.
* ``sdxl`` - Stable Diffusion XL (``StableDiffusionXLPipeline``): two CLIP text encoders whose
  states are concatenated on the channel axis (so token positions are those of the first
  tokenizer), pooled text embeddings and size/crop "time ids" as added conditioning; default
  capture: the lowest-resolution cross-attention layers (``down_blocks.2``, ``mid_block``,
  ``up_blocks.0``), 32x32 at 1024 px, i.e. a quarter of the native latent size.
"""

from __future__ import annotations

from typing import Any, Literal

from ..errors import ConfigError

Family = Literal["sd", "sdxl", "sd3", "flux"]
FAMILIES: dict[str, Family] = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusion3Pipeline": "sd3",
    "FluxPipeline": "flux",
}


CAPABILITIES: dict[str, str] = {
    "cfg": "a classifier-free-guidance (unconditional) branch",
    "start_token": "a start-of-text token at position 0 of the text the maps cover",
    "unet": "a UNet denoiser (down/mid/up blocks)",
    "cross_attention": "cross-attention layers (text keys only)",
    "joint_attention": "joint text-image attention (MMDiT)",
    "clip_text": "CLIP text embeddings the denoiser attends to",
}
"""What a plugin may declare in ``requires``, with the words an error uses for it."""
FAMILY_CAPABILITIES: dict[str, frozenset[str]] = {
    "sd": frozenset({"cfg", "start_token", "unet", "cross_attention", "clip_text"}),
    "sdxl": frozenset({"cfg", "start_token", "unet", "cross_attention", "clip_text"}),
    "sd3": frozenset({"cfg", "start_token", "joint_attention", "clip_text"}),
    "flux": frozenset({"joint_attention"}),  # distilled guidance; T5 tokens only (CLIP is pooled)
}
PIPELINE_CLASS: dict[str, str] = {family: name for name, family in FAMILIES.items()}


def missing_capabilities(family: str, requires: frozenset[str] | set[str]) -> list[str]:
    """The capabilities of ``requires`` that models of ``family`` lack, sorted."""
    have = FAMILY_CAPABILITIES.get(family, frozenset())
    return sorted(set(requires) - have)


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
    return None if family in ("sd3", "flux") else 16


def default_attention_layers(pipe: Any) -> list[str] | None:
    """Layers captured when none are named: Flux's double-stream blocks (its single-stream
    blocks mix text and image in one projection; which blocks give the most useful maps is
    open - gsn-factory calls its Flux support preliminary); ``None`` (by resolution) otherwise."""
    if family_of(pipe) != "flux":
        return None
    return sorted(n for n in pipe.transformer.attn_processors if n.startswith("transformer_blocks."))


def denoiser(pipe: Any) -> Any:
    """The network the loop calls: the UNet (SD 1.x/2.x, SDXL) or the transformer (SD3, Flux)."""
    return pipe.transformer if family_of(pipe) in ("sd3", "flux") else pipe.unet


def text_tokenizer(pipe: Any) -> Any:
    """The tokenizer whose positions the maps and the prompt analysis use: T5's for Flux,
    the (first) CLIP tokenizer otherwise."""
    return pipe.tokenizer_2 if family_of(pipe) == "flux" else pipe.tokenizer


def native_size(pipe: Any) -> int:
    """The pipeline's default image side in pixels."""
    sample = getattr(pipe, "default_sample_size", None) if family_of(pipe) != "sd" else None
    return int(sample or pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
