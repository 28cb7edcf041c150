"""Text conditioning of a run, per model family, in the rows the UNet forward takes.

SD 1.x/2.x: the text encoder's states. SDXL: the two encoders' states concatenated (the
pipeline's ``encode_prompt``), plus ``added_cond_kwargs``: the pooled embedding of the second
encoder and the size/crop "time ids", exactly as ``StableDiffusionXLPipeline.__call__`` builds
them (original and target size = the image size, no crop). SD3: CLIP (77 positions) then T5
states, plus ``pooled_projections``, as ``StableDiffusion3Pipeline.__call__`` builds them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ConfigError
from ..models.families import Family
from .sampling import SamplingConfig


@dataclass
class Conditioning:
    """Text conditioning for ``B`` images.

    Attributes:
        embeds: ``[2B, L, D]`` (unconditional rows first) with classifier-free guidance,
            ``[B, L, D]`` without: what the ordinary step's forward takes.
        cond: ``[B, L, D]`` the conditional rows: what each image's guidance forward takes.
        added: extra inputs of the denoiser for ``embeds``' rows, by keyword (SDXL:
            ``added_cond_kwargs``; SD3: ``pooled_projections``), or empty.
        added_cond: the same for ``cond``'s rows.
        shared: inputs that are not per row (Flux's text and image position ids).
        cfg: whether ``embeds`` holds an unconditional half (False for Flux, which is
            guidance-distilled, and for guidance scales up to 1).
    """

    embeds: torch.Tensor
    cond: torch.Tensor
    added: dict[str, Any] = field(default_factory=dict)
    added_cond: dict[str, Any] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)
    cfg: bool = True

    def forward_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the denoiser for the ordinary (CFG) forward."""
        return {**self.added, **self.shared}

    def image_kwargs(self, images: int | list[int]) -> dict[str, Any]:
        """Keyword arguments of the denoiser for the guidance forward of image ``images`` (one
        row) or of several images (one row each, in that order)."""
        rows: dict[str, Any] = _rows(self.added_cond, [images] if isinstance(images, int) else images)
        return {**rows, **self.shared}


def rows_of(value: torch.Tensor, images: list[int]) -> torch.Tensor:
    """Rows ``images`` of ``value`` (a view when they are consecutive and ascending)."""
    if images == list(range(images[0], images[0] + len(images))):
        return value[images[0] : images[0] + len(images)]
    return value[images]


def _rows(value: Any, images: list[int]) -> Any:
    """``value`` with every tensor cut to rows ``images`` (nested mappings followed)."""
    if isinstance(value, torch.Tensor):
        return rows_of(value, images)
    if isinstance(value, dict):
        return {k: _rows(v, images) for k, v in value.items()}
    return value


def encode(pipe: Any, family: Family, cfg: SamplingConfig, prompts: list[str], device: torch.device,
           size: tuple[int, int]) -> Conditioning:
    """Encode ``prompts`` (one per image) with ``pipe``'s text encoder(s) for ``family``."""
    negative = [cfg.negative_prompt] * len(prompts) if cfg.negative_prompt is not None else None
    if family == "sd":
        cond, uncond = pipe.encode_prompt(prompts, device, 1, cfg.do_cfg, negative)
        embeds = torch.cat([uncond, cond]) if cfg.do_cfg and uncond is not None else cond
        return Conditioning(embeds, cond, cfg=cfg.do_cfg)
    if family == "flux":
        if negative is not None:
            raise ConfigError(
                "negative_prompt on a FluxPipeline: Flux is guidance-distilled (no unconditional branch), "
                "so attnguide has no negative prompt to apply there; drop it"
            )
        cond, pooled, text_ids = pipe.encode_prompt(prompt=prompts, prompt_2=None, device=device,
                                                    num_images_per_prompt=1, max_sequence_length=FLUX_T5_LENGTH)
        # the distilled guidance is an input (Flux-dev); Flux-schnell has none
        guidance = (torch.full([len(prompts)], cfg.guidance_scale, device=device, dtype=torch.float32)
                    if pipe.transformer.config.guidance_embeds else None)
        per_row = {"pooled_projections": pooled, "guidance": guidance}
        return Conditioning(cond, cond, per_row, per_row, {"txt_ids": text_ids}, cfg=False)
    if family == "sd3":
        return _encode_sd3(pipe, cfg, prompts, device, negative)
    cond, uncond, pooled, uncond_pooled = pipe.encode_prompt(
        prompt=prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=cfg.do_cfg,
        negative_prompt=negative,
    )
    projection = (int(pooled.shape[-1]) if pipe.text_encoder_2 is None
                  else pipe.text_encoder_2.config.projection_dim)
    time_ids = pipe._get_add_time_ids(size, (0, 0), size, dtype=cond.dtype, text_encoder_projection_dim=projection)
    time_ids = time_ids.to(device)
    added_cond = {"added_cond_kwargs": {"text_embeds": pooled.to(device), "time_ids": time_ids.repeat(len(prompts), 1)}}
    if not cfg.do_cfg:
        return Conditioning(cond, cond, added_cond, added_cond, cfg=False)
    added = {"added_cond_kwargs": {"text_embeds": torch.cat([uncond_pooled, pooled]).to(device),
                                   "time_ids": time_ids.repeat(2 * len(prompts), 1)}}
    return Conditioning(torch.cat([uncond, cond]), cond, added, added_cond)


T5_LENGTH = 256
"""SD3's T5 window (``max_sequence_length``): text = 77 CLIP positions + 256 T5 positions."""
FLUX_T5_LENGTH = 512
"""Flux-dev's T5 window: its 512 T5 positions are the text tokens."""


def cached_encoder(pipe: Any, family: Family, cfg: SamplingConfig, size: tuple[int, int],
                   device: torch.device) -> Callable[[str], torch.Tensor]:
    """``text -> [L, D]``: ``pipe``'s conditional embedding of one text (no negative prompt, no
    classifier-free guidance), each text encoded once."""
    plain = cfg.model_copy(update={"negative_prompt": None, "guidance_scale": 1.0})
    cache: dict[str, torch.Tensor] = {}

    def encode_text(text: str) -> torch.Tensor:
        if text not in cache:
            with torch.no_grad():
                cache[text] = encode(pipe, family, plain, [text], device, size).cond[0]
        return cache[text]

    return encode_text


def _encode_sd3(pipe: Any, cfg: SamplingConfig, prompts: list[str], device: torch.device,
                negative: list[str] | None) -> Conditioning:
    cond, uncond, pooled, uncond_pooled = pipe.encode_prompt(
        prompt=prompts, prompt_2=None, prompt_3=None, negative_prompt=negative, device=device,
        do_classifier_free_guidance=cfg.do_cfg, num_images_per_prompt=1, max_sequence_length=T5_LENGTH,
    )
    added_cond = {"pooled_projections": pooled}
    if not cfg.do_cfg:
        return Conditioning(cond, cond, added_cond, added_cond, cfg=False)
    added = {"pooled_projections": torch.cat([uncond_pooled, pooled])}
    return Conditioning(torch.cat([uncond, cond]), cond, added, added_cond)
