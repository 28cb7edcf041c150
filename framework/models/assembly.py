"""Assemble Stable Diffusion pipelines from components built in code (no download)."""

from __future__ import annotations

from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from .tokenizer import VOCAB_SIZE, clip_tokenizer

# SD 1.x's scheduler configuration (scaled-linear betas, offset 1).
SD_SCHEDULER_CONFIG = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
}


def clip_text_encoder(width: int, layers: int, heads: int, intermediate: int) -> CLIPTextModel:
    """A random CLIP text transformer over the full 49,408-token vocabulary, 77 positions."""
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=width,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        projection_dim=width,
    ))


def assemble_pipeline(
    vae: AutoencoderKL, unet: UNet2DConditionModel, text_encoder: CLIPTextModel
) -> StableDiffusionPipeline:
    """A ``StableDiffusionPipeline`` (PNDM with SD 1.x betas, the shipped CLIP tokenizer, no
    safety checker, progress bar off) over the three models."""
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(),
        unet=unet,
        scheduler=PNDMScheduler.from_config(SD_SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
