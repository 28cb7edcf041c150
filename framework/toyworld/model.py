"""The toy text-to-image model: Stable Diffusion's architecture, sized for 64x64 toy scenes.

Choices (docs/toyworld.md, "Model and training"):

* VAE with downsampling factor 4 (three encoder levels, not SD's four): 64x64x3 images become
  16x16x4 latents. Factor 8 would leave 8x8 latents, on which a small object covers 1-2 cells and
  cross-attention maps are too coarse to tell two objects apart.
* UNet with cross-attention at 16x16 and 8x8 latent resolution. 16x16 is the level attention
  guidance (SynGen, Attend-and-Excite) reads in SD 1.x at 512 px; here it is the full latent grid.
* CLIP text transformer over the real 49,408-token vocabulary with ONE layer. In SD every
  token's state has absorbed its left context through 12 causal layers, which is part of why
  "a red circle and a blue square" can bind wrongly; one causal layer keeps each token's state
  mostly its own embedding, so binding must be learnt in the UNet's cross-attention and can fail.
  By default the text encoder is also frozen at its random initialisation (``train``).
* Sizes (channels 16/32/32 in the VAE, 32/64 in the UNet) were picked by measured CPU step time:
  the whole training run must fit in about an hour on a 2-core CPU (docs/toyworld.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel

from ..errors import ModelLoadError
from ..models.assembly import assemble_pipeline, clip_text_encoder
from .scene import IMAGE_SIZE

LATENT_CHANNELS = 4
VAE_DOWNSAMPLING = 4
LATENT_SIZE = IMAGE_SIZE // VAE_DOWNSAMPLING  # 16
TEXT_WIDTH = 64
MAX_WEIGHT_BYTES = 25 * 1024 * 1024  # all three models as fp32 safetensors
WEIGHTS_DIR = Path(__file__).parent / "weights"
"""The shipped trained pipeline (package data): diffusers layout without the tokenizer folder,
which is built from the shipped CLIP vocabulary instead. ``TRAINED_WITH.json`` says how. This is
toy world v1, loadable as ``toyworld`` and ``toyworld-v1`` (``toy_weights_dir``)."""


def toy_weights_dir(name: str = "toyworld") -> Path:
    """The shipped weights folder of a toy model name (``toyworld``, ``toyworld-v1``:
    ``attnguide.models.toy_names``)."""
    from ..models.toy_names import TOY_MODELS

    if name not in TOY_MODELS:
        raise ModelLoadError(f"unknown toy model {name!r}; choose from {', '.join(TOY_MODELS)}")
    return Path(__file__).parent / TOY_MODELS[name]


def toy_vae() -> AutoencoderKL:
    """AutoencoderKL: ``[B, 3, 64, 64]`` in [-1, 1] <-> latents ``[B, 4, 16, 16]`` (factor 4)."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=LATENT_CHANNELS,
        block_out_channels=(16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=IMAGE_SIZE,
    )


def toy_unet() -> UNet2DConditionModel:
    """UNet2DConditionModel on ``[B, 4, 16, 16]`` latents, cross-attention at 16x16 and 8x8."""
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=4,  # diffusers' legacy name: 4 heads per attention layer
        norm_num_groups=16,
    )


def toy_text_encoder(layers: int = 1) -> CLIPTextModel:
    """CLIP text transformer of ``layers`` causal layers (v1: one; the v2 attempt: three, trained,
    so that token states mix as CLIP's do), width 64, over the full CLIP vocabulary (77 positions)."""
    return clip_text_encoder(width=TEXT_WIDTH, layers=layers, heads=4, intermediate=4 * TEXT_WIDTH)


def build_pipeline(vae: AutoencoderKL, unet: UNet2DConditionModel, text_encoder: CLIPTextModel) -> StableDiffusionPipeline:
    """A ``StableDiffusionPipeline`` (PNDM, SD 1.x betas, no safety checker) over the three models."""
    return assemble_pipeline(vae, unet, text_encoder)


def parameter_counts(*models: Any) -> dict[str, int]:
    """``{class name: parameter count}`` for each model (buffers excluded)."""
    return {type(m).__name__: sum(p.numel() for p in m.parameters()) for m in models}


def load_toy_pipeline(folder: str | Path = WEIGHTS_DIR) -> StableDiffusionPipeline:
    """The trained toy model from ``folder`` (default: the shipped weights), offline, fp32.

    Raises ``ModelLoadError`` naming the folder and the command that recreates it when the
    weights are missing.
    """
    import torch

    from ..models.tokenizer import clip_tokenizer

    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise ModelLoadError(
            f"no toy-world weights in {folder} (model_index.json missing): reinstall attnguide, or train "
            "them with `attnguide toyworld train --out DIR` and pass --model DIR/pipeline"
        )
    pipe = StableDiffusionPipeline.from_pretrained(
        folder, tokenizer=clip_tokenizer(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False, local_files_only=True, dtype=torch.float32,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
