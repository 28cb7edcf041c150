"""Does a toy model's cross-attention localise its tokens? Guidance needs it to.

SynGen, Attend-and-Excite and A-STAR act on the head-averaged cross-attention maps of the
colour and shape tokens. They can only move a model whose maps put each token on its own object;
on near-uniform maps their losses are tiny and flat. ``token_localisation`` measures this on
rendered two-object scenes noised to a few timesteps: no sampling, no guidance, seconds on a CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from diffusers import DDPMScheduler

from ..engine.attention import AttentionStore, capture_attention
from .data import image_to_tensor
from .evaluate import two_object_prompt
from .grounding import coverage, word_positions
from .render import render
from .scene import sample_scene

DIAGNOSE_SEED_OFFSET = 30_000  # scenes never trained on (training starts at 1,000,000)


def map_statistics(maps: torch.Tensor, own: torch.Tensor,
                   other: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Entropy, own-object preference and own-object share of ``K`` token maps.

    Args:
        maps: ``[K, H, W]`` non-negative attention of each token over the grid.
        own: ``[K, H, W]`` coverage in [0, 1] of the object each token names.
        other: ``[K, H, W]`` coverage of the other object.

    Returns:
        ``(entropy [K], preference [K], share [K])``: the entropy in nats of each map normalised
        to sum 1 (``ln(H * W)`` when uniform); the mean attention per covered cell on the own
        object divided by that on the other object (1 = no preference, above 1 = on its own
        object; it grows without bound as the other object's attention goes to 0); and the
        coverage-weighted fraction of the map on its own object, ``sum(p * own)`` (what the
        training's grounding loss raises; 1 = all of it).
    """
    p = maps / maps.sum(dim=(1, 2), keepdim=True)
    entropy = -(p * p.clamp_min(1e-12).log()).sum(dim=(1, 2))
    share = (p * own).sum(dim=(1, 2))
    own_mean = share / own.sum(dim=(1, 2))
    other_mean = (p * other).sum(dim=(1, 2)) / other.sum(dim=(1, 2))
    return entropy, own_mean / other_mean, share


@torch.no_grad()
def token_localisation(pipe: Any, scenes: int = 8, timesteps: Sequence[int] = (800, 500, 200), seed: int = 0,
                       resolution: int = 16) -> dict[str, Any]:
    """Cross-attention statistics of ``pipe`` (a toy ``StableDiffusionPipeline``) on ``scenes``
    two-object scenes "a {c1} {s1} and a {c2} {s2}" (medium size), encoded by its VAE and noised
    to each of ``timesteps`` by the DDPM forward process of its scheduler's betas.

    Returns ``{"uniform_entropy": ln(resolution^2), "timesteps": {t: {"entropy", "preference", "own_share"}}}``
    with each value the mean over the scenes' four colour and shape tokens (``map_statistics``),
    the maps averaged over every head of every cross-attention layer at ``resolution``, as the
    guidance losses read them.
    """
    store = AttentionStore(resolution=resolution)
    device = pipe.unet.device
    noising = DDPMScheduler.from_config(pipe.scheduler.config)  # the forward process training used
    generator = torch.Generator().manual_seed(seed)
    stats: dict[int, list[tuple[torch.Tensor, ...]]] = {int(t): [] for t in timesteps}
    for k in range(scenes):
        scene = sample_scene(np.random.default_rng(DIAGNOSE_SEED_OFFSET + seed + k), 2, size_words=False)
        first, second = scene.objects
        prompt = two_object_prompt(first.colour, first.shape, second.colour, second.shape)
        token_rows = word_positions(prompt, [first.colour, first.shape, second.colour, second.shape], pipe.tokenizer)
        covers = torch.from_numpy(coverage(scene, resolution))
        own = torch.stack([covers[0], covers[0], covers[1], covers[1]])
        other = torch.stack([covers[1], covers[1], covers[0], covers[0]])
        image = image_to_tensor(render(scene))[None].to(device)
        latents = pipe.vae.encode(image).latent_dist.mean * pipe.vae.config.scaling_factor
        ids = pipe.tokenizer(prompt, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(device)
        text = pipe.text_encoder(ids)[0]
        for t in stats:
            noise = torch.randn(latents.shape, generator=generator).to(device)
            noisy = noising.add_noise(latents, noise, torch.tensor([t], device=device))
            with capture_attention(pipe.unet, store), store.capture():
                pipe.unet(noisy, t, encoder_hidden_states=text)
            maps = store.maps()[0, token_rows].cpu()
            stats[t].append(map_statistics(maps, own, other))
    summary = {
        t: {key: float(torch.cat([row[k] for row in rows]).mean())
            for k, key in enumerate(("entropy", "preference", "own_share"))}
        for t, rows in stats.items()
    }
    return {"uniform_entropy": math.log(resolution * resolution), "scenes": scenes, "timesteps": summary}
