"""Random-weight pipelines for timing. Timings do not depend on weight values, so random weights
are honest here; images are noise.

Models (``build(name)``):

* ``tiny`` (256 px), ``mid`` (SD 1.5's layout at 1/5 width), ``sd15`` (SD 1.5's full architecture);
* ``tiny-sdxl``, ``tiny-sd3``, ``tiny-flux``: the embedded tiny models of those families;
* ``sdxl``, ``sd3``, ``flux``: the full published architectures - SDXL base 1.0, SD3-medium,
  Flux-dev - from their diffusers/transformers configs written out below (nothing is
  downloaded), built with random weights in bfloat16 directly on a CUDA GPU (CUDA only).

The full-size builders are split in two: the ``*_unet``/``*_transformer``/``clip_*``/``t5_xxl``/
``*_vae`` constructors only configure and construct, on whatever device and default dtype are in
effect, and ``placed(device, dtype)`` sets those. So ``with torch.device("meta"): sdxl_unet()``
builds the layout without memory (``tests/test_benchmark_models.py`` counts its parameters),
and ``full_size_pipeline(name)`` builds the same modules inside ``placed("cuda", torch.bfloat16)``.
The tokenizers are the shipped ones (CLIP BPE, the T5-convention Unigram tokenizer): their ids
fit the real vocabularies (49,408 and 32,128), which is all the timing needs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

from attnguide.errors import ModelLoadError
from attnguide.models.assembly import assemble_pipeline, clip_text_encoder
from attnguide.models.t5_tokenizer import t5_tokenizer
from attnguide.models.tiny import tiny_pipeline, tiny_vae
from attnguide.models.tiny_flux import FLUX_SCHEDULER_CONFIG
from attnguide.models.tiny_sdxl import SDXL_SCHEDULER_CONFIG
from attnguide.models.tokenizer import VOCAB_SIZE as CLIP_VOCAB_SIZE
from attnguide.models.tokenizer import clip_tokenizer

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
            vae = AutoencoderKL(
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4, sample_size=512,
            )
        else:
            vae = tiny_vae()
    return assemble_pipeline(vae, unet, text_encoder)


# -- full-size architectures: configuration and construction only (no placement) -----------------

T5_XXL_VOCAB_SIZE = 32128


def sdxl_unet() -> UNet2DConditionModel:
    """SDXL base 1.0's UNet (``unet/config.json``; ``attention_head_dim`` is diffusers' legacy name
    for the number of heads: 5, 10, 20 heads of 64 channels). 2.567 B parameters."""
    return UNet2DConditionModel(
        sample_size=128,
        in_channels=4,
        out_channels=4,
        block_out_channels=(320, 640, 1280),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        use_linear_projection=True,
        cross_attention_dim=2048,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,  # 1280 (pooled bigG) + 6 time ids x 256
        norm_num_groups=32,
    )


def _clip_config(width: int, layers: int, heads: int, intermediate: int, act: str, pad_token_id: int) -> CLIPTextConfig:
    # bos/eos as the shipped tokenizer's ids (the pooled token is the first eos), as the tiny models
    return CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE, hidden_size=width, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, max_position_embeddings=77, hidden_act=act, layer_norm_eps=1e-5,
        projection_dim=width, bos_token_id=49406, eos_token_id=49407, pad_token_id=pad_token_id,
    )


def clip_l(projection: bool = False) -> CLIPTextModel | CLIPTextModelWithProjection:
    """OpenAI CLIP ViT-L/14's text encoder (768 wide, 12 layers, 12 heads, quick-GELU): SDXL's and
    Flux's ``text_encoder`` (123.06 M); ``projection``: SD3's, with its 768x768 projection."""
    config = _clip_config(768, 12, 12, 3072, "quick_gelu", pad_token_id=49407)
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def clip_bigg() -> CLIPTextModelWithProjection:
    """OpenCLIP ViT-bigG/14's text encoder with its projection (1280 wide, 32 layers, 20 heads,
    5120 intermediate, GELU, projection 1280): SDXL's and SD3's ``text_encoder_2`` (694.7 M)."""
    return CLIPTextModelWithProjection(_clip_config(1280, 32, 20, 5120, "gelu", pad_token_id=0))


def t5_xxl() -> T5EncoderModel:
    """T5 v1.1 XXL's encoder (d_model 4096, 24 layers, 64 heads of 64, d_ff 10240, gated GELU,
    untied embeddings, 32,128-token vocabulary): SD3's ``text_encoder_3`` and Flux's
    ``text_encoder_2`` (4.762 B)."""
    return T5EncoderModel(T5Config(
        vocab_size=T5_XXL_VOCAB_SIZE, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
        relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
        layer_norm_epsilon=1e-6, dropout_rate=0.1, tie_word_embeddings=False, is_encoder_decoder=True,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    ))


def sdxl_vae() -> AutoencoderKL:
    """SDXL's VAE: 4 latent channels, (128, 256, 512, 512), scaling 0.13025, fp16 upcast (83.7 M)."""
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2, norm_num_groups=32, sample_size=1024, scaling_factor=0.13025, force_upcast=True,
    )


def vae16(scaling_factor: float, shift_factor: float) -> AutoencoderKL:
    """SD3's and Flux's 16-channel VAE (no quant convs), (128, 256, 512, 512) (83.8 M)."""
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2, norm_num_groups=32, sample_size=1024, scaling_factor=scaling_factor,
        shift_factor=shift_factor, use_quant_conv=False, use_post_quant_conv=False, force_upcast=True,
    )


def sd3_transformer() -> SD3Transformer2DModel:
    """SD3-medium's MMDiT (``transformer/config.json``): 24 joint blocks of 24 heads x 64, patch 2,
    caption projection 1536, pooled 2048, position-embedding grid 192 (2.028 B)."""
    return SD3Transformer2DModel(
        sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24, attention_head_dim=64,
        num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
        pooled_projection_dim=2048, pos_embed_max_size=192,
    )


def flux_transformer() -> FluxTransformer2DModel:
    """Flux-dev's transformer (``transformer/config.json``): 19 double- and 38 single-stream
    blocks of 24 heads x 128, rotary axes (16, 56, 56), guidance embedding (11.90 B)."""
    return FluxTransformer2DModel(
        patch_size=1, in_channels=64, out_channels=None, num_layers=19, num_single_layers=38,
        attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
        guidance_embeds=True, axes_dims_rope=(16, 56, 56),
    )


def full_size_modules(name: str) -> dict[str, Any]:
    """The models of the full-size ``sdxl``, ``sd3`` or ``flux`` pipeline, keyed by pipeline
    argument, built on the ambient device and default dtype."""
    if name == "sdxl":
        return {"unet": sdxl_unet(), "vae": sdxl_vae(), "text_encoder": clip_l(), "text_encoder_2": clip_bigg()}
    if name == "sd3":
        return {"transformer": sd3_transformer(), "vae": vae16(1.5305, 0.0609), "text_encoder": clip_l(projection=True),
                "text_encoder_2": clip_bigg(), "text_encoder_3": t5_xxl()}
    if name == "flux":
        return {"transformer": flux_transformer(), "vae": vae16(0.3611, 0.1159), "text_encoder": clip_l(),
                "text_encoder_2": t5_xxl()}
    raise ValueError(f"unknown full-size model {name!r}: {', '.join(FULL_SIZE_MODELS)}")


def assemble_full_size(name: str, modules: dict[str, Any]) -> Any:
    """The family's diffusers pipeline over ``modules`` with the shipped tokenizers and the
    published schedulers (SDXL: Euler; SD3: flow-matching Euler, shift 3; Flux: dynamic shift)."""
    if name == "sdxl":
        pipe = StableDiffusionXLPipeline(
            **modules, tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer(pad_token="!"),
            scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER_CONFIG),
            force_zeros_for_empty_prompt=True, add_watermarker=False,
        )
    elif name == "sd3":
        pipe = StableDiffusion3Pipeline(
            **modules, tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer(pad_token="!"),
            tokenizer_3=t5_tokenizer(256), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        )
    elif name == "flux":
        pipe = FluxPipeline(
            **modules, tokenizer=clip_tokenizer(), tokenizer_2=t5_tokenizer(512),
            scheduler=FlowMatchEulerDiscreteScheduler.from_config(FLUX_SCHEDULER_CONFIG),
        )
    else:
        raise ValueError(f"unknown full-size model {name!r}: {', '.join(FULL_SIZE_MODELS)}")
    pipe.set_progress_bar_config(disable=True)
    for module in modules.values():
        module.eval().requires_grad_(False)
    return pipe


# -- placement ----------------------------------------------------------------------------------

@contextlib.contextmanager
def placed(device: str | torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Construct modules directly on ``device`` with floating-point ``dtype`` parameters (the
    default device and dtype, restored on exit): no CPU copy, no float32 detour."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def full_size_pipeline(name: str, device: str | torch.device = "cuda", dtype: torch.dtype = torch.bfloat16,
                       seed: int = 0) -> Any:
    """The full-size ``sdxl``/``sd3``/``flux`` pipeline with random weights, built on ``device``
    in ``dtype`` (``"meta"``: the layout without memory, for tests)."""
    device = torch.device(device)
    rng_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(seed)
        with placed(device, dtype):
            modules = full_size_modules(name)
    return assemble_full_size(name, modules)


def require_cuda(name: str) -> None:
    """A ``ModelLoadError`` naming the tiny alternative when ``name`` needs CUDA and there is none."""
    if name in CUDA_ONLY and not torch.cuda.is_available():
        tiny = f"tiny-{name}" if name in FULL_SIZE_MODELS else "mid"
        raise ModelLoadError(f"{name} needs a CUDA GPU: {CUDA_NOTES[name]}; use {tiny} on CPU")


FAMILY_MODELS = ("tiny-sdxl", "tiny-sd3", "tiny-flux")
"""The embedded tiny models of the other families: SDXL at 512 px, SD3 and Flux at 256 px."""
FULL_SIZE_MODELS = ("sdxl", "sd3", "flux")
"""The full published architectures, random weights, bf16 on CUDA, 1024 px."""
CUDA_ONLY = ("sd15", *FULL_SIZE_MODELS)
MODELS = ("tiny", "mid", "sd15", *FAMILY_MODELS, *FULL_SIZE_MODELS)
CUDA_NOTES = {
    "sd15": "SD 1.5's full architecture at 512 px and 50 steps is too slow for a CPU",
    "sdxl": "SDXL base 1.0 at full size (2.6 B UNet, 0.8 B text encoders) is built in bf16 on the GPU",
    "sd3": "SD3-medium at full size (2.0 B transformer, 5.6 B text encoders with T5-XXL) is built in bf16 on the GPU",
    "flux": "Flux-dev at full size (11.9 B transformer, 4.9 B text encoders with T5-XXL) is built in bf16 on the GPU",
}


def build(name: str) -> Any:
    """``tiny`` (256 px), ``mid`` (SD 1.5 layout, 1/5 width, 512 px), ``sd15`` (full size, 512 px),
    ``tiny-sdxl`` / ``tiny-sd3`` / ``tiny-flux`` (the embedded tiny models of those families),
    ``sdxl`` / ``sd3`` / ``flux`` (full size, bf16 on CUDA; a ``ModelLoadError`` without CUDA)."""
    if name in FULL_SIZE_MODELS:
        require_cuda(name)
        return full_size_pipeline(name)
    if name in FAMILY_MODELS:
        from attnguide.models.loading import load_pipeline

        return load_pipeline(name)
    if name == "tiny":
        return tiny_pipeline()
    if name == "mid":
        return sd15_layout_pipeline(width=64, text_layers=2)
    if name == "sd15":
        return sd15_layout_pipeline(width=320, text_layers=12, full_vae=True)
    raise ValueError(f"unknown benchmark model {name!r}: {', '.join(MODELS)}")
