"""Random-weight SD-architecture pipelines for timing. Timings do not depend on weight values,
so random weights are honest here; images are noise."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel

from attnguide.models.assembly import assemble_pipeline, clip_text_encoder
from attnguide.models.tiny import tiny_pipeline, tiny_vae

SD15_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
SD15_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")


def sd15_unet(width: int = 320) -> UNet2DConditionModel:
    """SD 1.5's UNet block layout; ``width=320`` is the real model, smaller is narrower."""
    return UNet2DConditionModel(
        sample_size=64,
        block_out_channels=(width, 2 * width, 4 * width, 4 * width),
        layers_per_block=2,
        down_block_types=SD15_DOWN,
        up_block_types=SD15_UP,
        cross_attention_dim=768,
        attention_head_dim=8,
        norm_num_groups=32 if width % 32 == 0 else 16,
    )


def sd_text_encoder(layers: int) -> CLIPTextModel:
    """SD 1.x's text-encoder width (768, 12 heads) with ``layers`` layers."""
    return clip_text_encoder(width=768, layers=layers, heads=12, intermediate=3072)


def sd15_layout_pipeline(width: int, text_layers: int, seed: int = 0, full_vae: bool = False) -> StableDiffusionPipeline:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = sd15_unet(width)
        text_encoder = sd_text_encoder(text_layers)
        if full_vae:
            from diffusers import AutoencoderKL

            vae = AutoencoderKL(
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4, sample_size=512,
            )
        else:
            vae = tiny_vae()
    return assemble_pipeline(vae, unet, text_encoder)


FAMILY_MODELS = ("tiny-sdxl", "tiny-sd3", "tiny-flux")
"""The embedded tiny models of the other families: SDXL at 512 px, SD3 and Flux at 256 px."""


def build(name: str) -> Any:
    """``tiny`` (256 px), ``mid`` (SD 1.5 layout, 1/5 width, 512 px), ``sd15`` (full size, 512 px),
    ``tiny-sdxl`` / ``tiny-sd3`` / ``tiny-flux`` (the embedded tiny models of those families)."""
    if name in FAMILY_MODELS:
        from attnguide.models.loading import load_pipeline

        return load_pipeline(name)
    if name == "tiny":
        return tiny_pipeline()
    if name == "mid":
        return sd15_layout_pipeline(width=64, text_layers=2)
    if name == "sd15":
        return sd15_layout_pipeline(width=320, text_layers=12, full_vae=True)
    raise ValueError(f"unknown benchmark model {name!r}: tiny, mid, sd15, {', '.join(FAMILY_MODELS)}")
