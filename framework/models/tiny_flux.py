"""``tiny-flux``: Flux's architecture at small width, random weights, no download.

A ``FluxTransformer2DModel`` with two double-stream blocks (separate image and text projections,
joint attention over ``[text, image]`` tokens) and two single-stream blocks, rotary position
embeddings over (text, row, column) ids, and the guidance embedding of the guidance-distilled
Flux-dev (no classifier-free-guidance branch: one forward per step); a CLIP text encoder used
for its pooled embedding only and a T5 encoder over the shipped T5-convention tokenizer
(``attnguide.models.t5_tokenizer``), whose tokens are the only text tokens; a 16-channel VAE with
Flux's scaling and shift; flow-matching Euler with Flux's resolution-dependent shift. Latents are
packed 2x2 into tokens: at its native 256 px the attention sees 16x16 image tokens.

Image queries and text keys are scaled (``attention_contrast``) so that guidance visibly moves
the maps; images are noise.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from transformers import CLIPTextConfig, CLIPTextModel

from .t5_tokenizer import t5_tokenizer
from .tiny import DEFAULT_CONTRAST
from .tiny_sd3 import tiny_t5_encoder, tiny_vae16
from .tokenizer import VOCAB_SIZE, clip_tokenizer

T5_LENGTH = 512  # Flux-dev's T5 window
FLUX_SCHEDULER_CONFIG = {
    "base_image_seq_len": 256, "base_shift": 0.5, "max_image_seq_len": 4096, "max_shift": 1.15,
    "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True,
}


def tiny_flux_transformer(guidance_embeds: bool = True) -> FluxTransformer2DModel:
    """Two double- and two single-stream blocks, head dim 16 (rotary axes 4 + 6 + 6);
    ``guidance_embeds``: Flux-dev's distilled guidance input (False: Flux-schnell)."""
    return FluxTransformer2DModel(
        patch_size=1, in_channels=64, out_channels=None, num_layers=2, num_single_layers=2,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=64, pooled_projection_dim=32,
        guidance_embeds=guidance_embeds, axes_dims_rope=(4, 6, 6),
    )


def tiny_flux_vae() -> AutoencoderKL:
    """Flux's VAE scaling (0.3611) and shift (0.1159)."""
    return tiny_vae16(0.3611, 0.1159)


@torch.no_grad()
def sharpen_flux_attention(transformer: FluxTransformer2DModel, contrast: float) -> None:
    """Scale image queries and text keys of the double-stream blocks, and queries and keys of
    the single-stream blocks, by ``contrast``."""
    for block in transformer.transformer_blocks:
        block.attn.to_q.weight.mul_(contrast)
        block.attn.add_k_proj.weight.mul_(contrast)
    for block in transformer.single_transformer_blocks:
        block.attn.to_q.weight.mul_(contrast)
        block.attn.to_k.weight.mul_(contrast)


def tiny_flux_pipeline(seed: int = 0, attention_contrast: float = DEFAULT_CONTRAST,
                       schnell: bool = False) -> FluxPipeline:
    """Build the tiny random-weight Flux pipeline (native 256 px); same ``seed``, same weights.
    ``schnell``: without the guidance embedding, as Flux-schnell (sampled in a few steps)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = tiny_flux_transformer(guidance_embeds=not schnell)
        vae = tiny_flux_vae()
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=VOCAB_SIZE, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
            projection_dim=32, hidden_act="gelu",
        ))
        text_encoder_2 = tiny_t5_encoder()
    sharpen_flux_attention(transformer, attention_contrast)
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(FLUX_SCHEDULER_CONFIG),
        vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(), text_encoder_2=text_encoder_2,
        tokenizer_2=t5_tokenizer(T5_LENGTH), transformer=transformer,
    )
    pipe.default_sample_size = 32  # 256 px (Flux's own default is 1024 px)
    pipe.set_progress_bar_config(disable=True)
    for module in (transformer, vae, text_encoder, text_encoder_2):
        module.eval().requires_grad_(False)
    return pipe
