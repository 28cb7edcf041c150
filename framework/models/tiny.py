"""The embedded tiny pipeline: Stable Diffusion's architecture, random weights, no download.

Its images are noise. It exists so that every station of attnguide (tokenizer, text encoder,
cross-attention capture, losses, latent updates, scheduler, VAE) runs for real on a CPU in
seconds. For real images use ``CompVis/stable-diffusion-v1-4`` or a local checkpoint.

Random weights give near-uniform cross-attention (entropy close to ln(pixels)), on which
guidance has nothing to act. ``attention_contrast`` multiplies the query and key projections of
every cross-attention layer, sharpening the softmax by ``attention_contrast**2`` so tests can see
guidance move the maps. It changes only the weights of this test model.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel

from .assembly import SD_SCHEDULER_CONFIG, assemble_pipeline, clip_text_encoder

__all__ = ["SD_SCHEDULER_CONFIG", "tiny_pipeline", "tiny_unet", "tiny_vae", "tiny_text_encoder"]

DEFAULT_CONTRAST = 8.0
def tiny_unet() -> UNet2DConditionModel:
    """UNet with cross-attention at 32x32 and 16x16 latent resolution (256 px images)."""
    return UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def tiny_vae() -> AutoencoderKL:
    """VAE with SD's downsampling factor of 8 and narrow channels."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=256,
    )


def tiny_text_encoder() -> CLIPTextModel:
    """Two-layer CLIP text transformer over the full 49,408-token vocabulary."""
    return clip_text_encoder(width=32, layers=2, heads=4, intermediate=37)


@torch.no_grad()
def sharpen_cross_attention(unet: UNet2DConditionModel, contrast: float) -> None:
    """Scale ``to_q`` and ``to_k`` of every cross-attention layer by ``contrast``."""
    for name, module in unet.named_modules():
        if name.endswith("attn2"):
            module.to_q.weight.mul_(contrast)
            module.to_k.weight.mul_(contrast)


def tiny_pipeline(seed: int = 0, attention_contrast: float = DEFAULT_CONTRAST) -> StableDiffusionPipeline:
    """Build the tiny random-weight Stable Diffusion pipeline; same ``seed``, same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = tiny_unet()
        vae = tiny_vae()
        text_encoder = tiny_text_encoder()
    sharpen_cross_attention(unet, attention_contrast)
    pipe = assemble_pipeline(vae, unet, text_encoder)
    for module in (unet, vae, text_encoder):
        module.eval().requires_grad_(False)
    return pipe
