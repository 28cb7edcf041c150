"""Token grounding: a training loss that puts each colour and shape token's cross-attention on its
own object, so that the toy model's maps localise as Stable Diffusion's do.

Why: trained on the denoising loss alone (2 h of CPU), the toy UNet read its caption as a bag of
words - every token's 16x16 map was near uniform (docs/toyworld.md, "Attention before and after
token grounding") - and attention guidance had nothing to push. SD's maps localise after billions of pairs; the toy world
can instead say where every object is. This follows TokenCompose (Wang et al., CVPR 2024), which
fine-tunes SD with a per-token loss on cross-attention maps inside segmentation masks: here
``1 - (attention inside the object) / (all attention)``, squared, for the colour word and the shape
word of every object in the caption, on the head- and layer-average of the 16x16 cross-attention
layers (the maps the guidance losses read). The maps of the colour and shape tokens are each pulled
onto the object they name, but nothing in the loss ties "red" to "circle": which blob a colour
lands on at sampling time is still the UNet's choice, so misbinding stays possible.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..prompts.alignment import positions_of_span, tokenize_prompt
from .render import object_mask
from .scene import Scene

MAX_OBJECTS = 3
GROUNDING_RESOLUTION = 16


def word_positions(prompt: str, words: Sequence[str], tokenizer: Any) -> list[int]:
    """Token position (1-based, as in the attention maps) of the first piece of each of ``words``,
    found in ``prompt`` in order, by the same alignment the guidance losses use."""
    spans = tokenize_prompt(prompt, tokenizer).spans
    positions, start = [], 0
    for word in words:
        start = prompt.index(word, start)
        positions.append(positions_of_span(start, start + len(word), spans)[0])
        start += len(word)
    return positions


def coverage(scene: Scene, resolution: int = GROUNDING_RESOLUTION) -> np.ndarray:
    """``[n_objects, resolution, resolution]`` float32: fraction of each cell covered by each object."""
    out = []
    for obj in scene.objects:
        mask = object_mask(obj)
        cell = mask.shape[0] // resolution
        out.append(mask.reshape(resolution, cell, resolution, cell).mean(axis=(1, 3)))
    return np.stack(out).astype(np.float32)


def grounding_targets(caption: str, scene: Scene, tokenizer: Any,
                      resolution: int = GROUNDING_RESOLUTION) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed-size targets for one captioned scene, padded to ``MAX_OBJECTS``:

    ``masks [3, R, R]`` float32 coverage of each object (zeros for absent ones) and
    ``positions [3, 2]`` int64 token positions of each object's colour and shape word (-1 when absent).
    The caption names the objects in scene order (``render.caption``).
    """
    masks = torch.zeros(MAX_OBJECTS, resolution, resolution)
    positions = torch.full((MAX_OBJECTS, 2), -1, dtype=torch.int64)
    words = [w for o in scene.objects for w in (o.colour, o.shape)]
    found = word_positions(caption, words, tokenizer)
    masks[: len(scene.objects)] = torch.from_numpy(coverage(scene, resolution))
    positions[: len(scene.objects)] = torch.tensor(found, dtype=torch.int64).view(-1, 2)
    return masks, positions


def grounding_loss(maps: torch.Tensor, masks: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Mean over named tokens of ``(1 - inside / total) ** 2``.

    Args:
        maps: ``[B, T, H, W]`` non-negative cross-attention of every token (``AttentionStore.maps``).
        masks: ``[B, K, H, W]`` coverage in [0, 1] of object ``k``.
        positions: ``[B, K, J]`` int64 token rows of the words naming object ``k`` (-1: none).

    Returns a scalar; zero (with a graph) when no token is named in the batch.
    ``inside = sum(map * mask)``, ``total = sum(map)`` over the grid of the named token's map.
    """
    batch, objects, words = positions.shape
    height, width = maps.shape[-2:]
    rows = positions.clamp_min(0).reshape(batch, objects * words, 1, 1).expand(-1, -1, height, width)
    token_maps = maps.gather(1, rows).reshape(batch, objects, words, height, width)
    inside = (token_maps * masks[:, :, None]).sum(dim=(-2, -1))
    total = token_maps.sum(dim=(-2, -1)).clamp_min(1e-12)
    per_token = (1.0 - inside / total) ** 2  # [B, K, J]
    named = positions >= 0
    if not bool(named.any()):
        return maps.sum() * 0.0
    return per_token[named].mean()
