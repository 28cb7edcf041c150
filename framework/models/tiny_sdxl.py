"""``tiny-sdxl``: Stable Diffusion XL's architecture at small width, random weights, no download.

The UNet keeps SDXL's block layout - ``DownBlock2D`` then two ``CrossAttnDownBlock2D`` (the
last with two transformer layers), a cross-attention mid block, the mirrored up blocks, linear
projections, and the "text_time" added conditioning (pooled text embedding + size/crop ids) -
with channels (16, 32, 64). Two CLIP text encoders (the second with a projection, as SDXL's
OpenCLIP-G) share the shipped CLIP vocabulary; the second tokenizer pads with "!" as SDXL's does.
At its native 512 px (64x64 latents) the lowest-resolution cross-attention layers are 16x16,
the tiny counterpart of SDXL's 32x32 layers at 1024 px.

As for ``tiny``, cross-attention queries and keys are scaled (``attention_contrast``) so that
guidance visibly moves the maps; images are noise.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from .tiny import DEFAULT_CONTRAST, sharpen_cross_attention, tiny_vae
from .tokenizer import VOCAB_SIZE, clip_tokenizer

TEXT_WIDTH = 32  # each encoder; the UNet sees both concatenated: 64 channels
TIME_EMBED_DIM = 8
SDXL_SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "interpolation_type": "linear",
    "prediction_type": "epsilon",
}


def tiny_sdxl_unet() -> UNet2DConditionModel:
    """SDXL's UNet layout at channels (16, 32, 64), native 64x64 latents (512 px)."""
    return UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32, 64),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 2),
        attention_head_dim=(2, 4, 8),
        use_linear_projection=True,
        cross_attention_dim=2 * TEXT_WIDTH,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=6 * TIME_EMBED_DIM + TEXT_WIDTH,
        norm_num_groups=8,
    )


def _text_config(projection: bool) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=VOCAB_SIZE, hidden_size=TEXT_WIDTH, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=49407 if not projection else 0, projection_dim=TEXT_WIDTH, hidden_act="gelu",
    )


def tiny_sdxl_pipeline(seed: int = 0, attention_contrast: float = DEFAULT_CONTRAST) -> StableDiffusionXLPipeline:
    """Build the tiny random-weight SDXL pipeline; same ``seed``, same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = tiny_sdxl_unet()
        vae = tiny_vae()
        text_encoder = CLIPTextModel(_text_config(projection=False))
        text_encoder_2 = CLIPTextModelWithProjection(_text_config(projection=True))
    sharpen_cross_attention(unet, attention_contrast)
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=clip_tokenizer(),
        tokenizer_2=clip_tokenizer(pad_token="!"),
        unet=unet,
        scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER_CONFIG),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    for module in (unet, vae, text_encoder, text_encoder_2):
        module.eval().requires_grad_(False)
    return pipe
