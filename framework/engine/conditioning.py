"""Text conditioning of a run, per model family, in the rows the UNet forward takes.

SD 1.x/2.x: the text encoder's states. SDXL: the two encoders' states concatenated (the
pipeline's ``encode_prompt``), plus ``added_cond_kwargs``: the pooled embedding of the second
encoder and the size/crop "time ids", exactly as ``StableDiffusionXLPipeline.__call__`` builds
them (original and target size = the image size, no crop).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..models.families import Family
from .sampling import SamplingConfig


@dataclass
class Conditioning:
    """Text conditioning for ``B`` images.

    Attributes:
        embeds: ``[2B, L, D]`` (unconditional rows first) with classifier-free guidance,
            ``[B, L, D]`` without: what the ordinary step's forward takes.
        cond: ``[B, L, D]`` the conditional rows: what each image's guidance forward takes.
        added: extra UNet inputs for ``embeds``' rows (SDXL's ``added_cond_kwargs``), or empty.
        added_cond: the same for ``cond``'s rows.
    """

    embeds: torch.Tensor
    cond: torch.Tensor
    added: dict[str, torch.Tensor] = field(default_factory=dict)
    added_cond: dict[str, torch.Tensor] = field(default_factory=dict)

    def forward_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the UNet for the ordinary (CFG) forward."""
        return {"added_cond_kwargs": self.added} if self.added else {}

    def image_kwargs(self, index: int) -> dict[str, Any]:
        """Keyword arguments of the UNet for image ``index``'s guidance forward (batch 1)."""
        if not self.added_cond:
            return {}
        return {"added_cond_kwargs": {k: v[index : index + 1] for k, v in self.added_cond.items()}}


def encode(pipe: Any, family: Family, cfg: SamplingConfig, prompts: list[str], device: torch.device,
           size: tuple[int, int]) -> Conditioning:
    """Encode ``prompts`` (one per image) with ``pipe``'s text encoder(s) for ``family``."""
    negative = [cfg.negative_prompt] * len(prompts) if cfg.negative_prompt is not None else None
    if family == "sd":
        cond, uncond = pipe.encode_prompt(prompts, device, 1, cfg.do_cfg, negative)
        embeds = torch.cat([uncond, cond]) if cfg.do_cfg and uncond is not None else cond
        return Conditioning(embeds, cond)
    cond, uncond, pooled, uncond_pooled = pipe.encode_prompt(
        prompt=prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=cfg.do_cfg,
        negative_prompt=negative,
    )
    projection = (int(pooled.shape[-1]) if pipe.text_encoder_2 is None
                  else pipe.text_encoder_2.config.projection_dim)
    time_ids = pipe._get_add_time_ids(size, (0, 0), size, dtype=cond.dtype, text_encoder_projection_dim=projection)
    time_ids = time_ids.to(device)
    added_cond = {"text_embeds": pooled.to(device), "time_ids": time_ids.repeat(len(prompts), 1)}
    if not cfg.do_cfg:
        return Conditioning(cond, cond, added_cond, added_cond)
    added = {"text_embeds": torch.cat([uncond_pooled, pooled]).to(device),
             "time_ids": time_ids.repeat(2 * len(prompts), 1)}
    return Conditioning(torch.cat([uncond, cond]), cond, added, added_cond)
