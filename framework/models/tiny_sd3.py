"""``tiny-sd3``: Stable Diffusion 3's architecture at small width, random weights, no download.

An MMDiT (``SD3Transformer2DModel``: joint attention over ``[image, text]`` tokens in every
block, the last block context-pre-only) of two blocks at width 32, patch size 2; CLIP-L- and
CLIP-G-like text encoders with projections (77 tokens each, their states concatenated on the
channel axis and padded to the T5 width, as SD3 does) over the shipped CLIP vocabulary; a T5
encoder over the shipped T5-convention tokenizer (``attnguide.models.t5_tokenizer``); a 16-channel
VAE with SD3's scaling and shift; flow-matching Euler with SD3's shift of 3. At its native 256 px
the joint attention sees 16x16 image tokens.

Query and key projections of the image and text streams are scaled (``attention_contrast``) so
that guidance visibly moves the maps; images are noise.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

from .t5_tokenizer import VOCAB_SIZE as T5_VOCAB_SIZE
from .t5_tokenizer import t5_tokenizer
from .tiny import DEFAULT_CONTRAST
from .tokenizer import VOCAB_SIZE, clip_tokenizer

CLIP_WIDTH = 32  # each CLIP encoder: 64 channels together
T5_WIDTH = 64  # = the joint attention width the CLIP states are padded to


def tiny_sd3_transformer() -> SD3Transformer2DModel:
    """Two joint-attention blocks, width 32, patch 2: 16x16 image tokens at 256 px."""
    return SD3Transformer2DModel(
        sample_size=32, patch_size=2, in_channels=16, out_channels=16, num_layers=2,
        attention_head_dim=8, num_attention_heads=4, joint_attention_dim=T5_WIDTH,
        caption_projection_dim=32, pooled_projection_dim=2 * CLIP_WIDTH, pos_embed_max_size=32,
    )


def tiny_vae16(scaling_factor: float, shift_factor: float) -> AutoencoderKL:
    """The 16-channel VAE layout of SD3 and Flux (no quant convs) at narrow width."""
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, norm_num_groups=8, sample_size=256, scaling_factor=scaling_factor,
        shift_factor=shift_factor, use_quant_conv=False, use_post_quant_conv=False,
    )


def tiny_sd3_vae() -> AutoencoderKL:
    """SD3's VAE scaling (1.5305) and shift (0.0609)."""
    return tiny_vae16(1.5305, 0.0609)


def _clip(pad_token_id: int) -> CLIPTextModelWithProjection:
    return CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=VOCAB_SIZE, hidden_size=CLIP_WIDTH, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=pad_token_id, projection_dim=CLIP_WIDTH, hidden_act="gelu",
    ))


def tiny_t5_encoder() -> T5EncoderModel:
    """A two-layer T5 encoder over the shipped T5-convention vocabulary."""
    return T5EncoderModel(T5Config(
        vocab_size=T5_VOCAB_SIZE, d_model=T5_WIDTH, d_kv=16, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    ))


@torch.no_grad()
def sharpen_joint_attention(transformer: SD3Transformer2DModel, contrast: float) -> None:
    """Scale the image queries and the text keys of every joint-attention block by ``contrast``."""
    for block in transformer.transformer_blocks:
        block.attn.to_q.weight.mul_(contrast)
        block.attn.add_k_proj.weight.mul_(contrast)


def tiny_sd3_pipeline(seed: int = 0, attention_contrast: float = DEFAULT_CONTRAST) -> StableDiffusion3Pipeline:
    """Build the tiny random-weight SD3 pipeline; same ``seed``, same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = tiny_sd3_transformer()
        vae = tiny_sd3_vae()
        text_encoder, text_encoder_2 = _clip(49407), _clip(0)
        text_encoder_3 = tiny_t5_encoder()
    sharpen_joint_attention(transformer, attention_contrast)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(),
        text_encoder_2=text_encoder_2,
        tokenizer_2=clip_tokenizer(pad_token="!"),
        text_encoder_3=text_encoder_3,
        tokenizer_3=t5_tokenizer(256),
    )
    pipe.set_progress_bar_config(disable=True)
    for module in (transformer, vae, text_encoder, text_encoder_2, text_encoder_3):
        module.eval().requires_grad_(False)
    return pipe
