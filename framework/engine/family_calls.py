"""The family-specific calls of the engine's loop, made as each diffusers pipeline makes them so
that unguided outputs match theirs: the denoiser forward (``predict``: SD 1.x/2.x and SDXL UNets
take scheduler-scaled latents and the raw timestep, SD3's transformer unscaled latents and a
per-row timestep, Flux's its packed latents and the timestep / 1000), how latents become
pictures (``decode``), and how Flux prepares its packed latents and shifted schedule."""

from __future__ import annotations

from typing import Any

import torch

from ..models.families import Family, denoiser
from .attention import AttentionStore
from .conditioning import Conditioning


def prepare_flux(pipe: Any, steps: int, text: Conditioning, batch: int, size: tuple[int, int],
                 generators: torch.Generator | list[torch.Generator], device: torch.device,
                 ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Packed latents ``[B, tokens, 4C]``, timesteps with Flux's resolution-dependent shift
    and its sigma schedule over ``steps``, as ``FluxPipeline.__call__`` prepares them; the image
    positions go to ``text.shared["img_ids"]``."""
    import numpy as np
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

    scheduler = pipe.scheduler
    latents, image_ids = pipe.prepare_latents(batch, denoiser(pipe).config.in_channels // 4, *size,
                                              text.embeds.dtype, device, generators, None)
    text.shared["img_ids"] = image_ids
    mu = calculate_shift(latents.shape[1], scheduler.config.get("base_image_seq_len", 256),
                         scheduler.config.get("max_image_seq_len", 4096),
                         scheduler.config.get("base_shift", 0.5), scheduler.config.get("max_shift", 1.15))
    sigmas = None if scheduler.config.get("use_flow_sigmas") else np.linspace(1.0, 1 / steps, steps)
    timesteps, _ = retrieve_timesteps(scheduler, steps, device, sigmas=sigmas, mu=mu)
    scheduler.set_begin_index(0)
    return latents, timesteps, {}


@torch.no_grad()
def decode(pipe: Any, family: Family, latents: torch.Tensor, size: tuple[int, int], device: torch.device) -> list[Any]:
    """PIL images from final ``latents``, as the family's pipeline decodes them (SD: safety
    checker if any; SDXL: the VAE's latent statistics and fp16 upcast when configured, watermark
    if any; Flux: unpacked from ``[B, tokens, 4C]`` at ``size``)."""
    vae = pipe.vae
    if family == "sdxl":
        return _decode_sdxl(pipe, latents)
    if family == "flux":
        latents = pipe._unpack_latents(latents, *size, pipe.vae_scale_factor)
    if family in ("sd3", "flux"):
        z = latents.to(vae.dtype) / vae.config.scaling_factor + vae.config.shift_factor
        decoded: list[Any] = pipe.image_processor.postprocess(vae.decode(z, return_dict=False)[0], output_type="pil")
        return decoded
    image = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
    image, nsfw = pipe.run_safety_checker(image, device, latents.dtype)
    denormalize = [True] * image.shape[0] if nsfw is None else [not x for x in nsfw]
    images: list[Any] = pipe.image_processor.postprocess(image, output_type="pil", do_denormalize=denormalize)
    return images


def _decode_sdxl(pipe: Any, latents: torch.Tensor) -> list[Any]:
    vae = pipe.vae
    upcast = vae.dtype == torch.float16 and vae.config.force_upcast
    if upcast:
        pipe.upcast_vae()
    z = latents.to(next(iter(vae.post_quant_conv.parameters())).dtype)
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    if mean is not None and std is not None:
        mean_t = torch.tensor(mean).view(1, 4, 1, 1).to(z.device, z.dtype)
        std_t = torch.tensor(std).view(1, 4, 1, 1).to(z.device, z.dtype)
        z = z * std_t / vae.config.scaling_factor + mean_t
    else:
        z = z / vae.config.scaling_factor
    image = vae.decode(z, return_dict=False)[0]
    if upcast:
        vae.to(dtype=torch.float16)
    if getattr(pipe, "watermark", None) is not None:
        image = pipe.watermark.apply_watermark(image)
    images: list[Any] = pipe.image_processor.postprocess(image, output_type="pil")
    return images


def predict(pipe: Any, family: Family, denoiser: Any, store: AttentionStore, latents: torch.Tensor,
            t: torch.Tensor, embeds: torch.Tensor, extra: dict[str, Any]) -> torch.Tensor:
    """The denoiser's prediction for ``latents: [rows, C, h, w]`` (Flux: ``[rows, seq, C]``) at
    timestep ``t`` with text ``embeds: [rows, L, D]`` and the family's ``extra`` keywords;
    ``denoiser`` may be a compiled copy of ``pipe``'s."""
    if family == "sd3":
        out: torch.Tensor = denoiser(hidden_states=latents, timestep=t.expand(latents.shape[0]),
                                     encoder_hidden_states=embeds, **extra, return_dict=False)[0]
        return out
    if family == "flux":
        rows = latents.shape[0]
        store.text_length = embeds.shape[1]
        flux: torch.Tensor = denoiser(
            hidden_states=latents, timestep=t.expand(rows).to(latents.dtype) / 1000,
            encoder_hidden_states=embeds, **extra, return_dict=False,
        )[0]
        return flux
    scaled = pipe.scheduler.scale_model_input(latents, t)
    noise: torch.Tensor = denoiser(scaled, t, encoder_hidden_states=embeds, **extra, return_dict=False)[0]
    return noise
