"""SD3's text tokens are 77 CLIP positions followed by T5 positions; the losses read maps in
the CLIP positions of the prompt's analysis. ``token_matrix`` maps one onto the other.

A word has pieces in both tokenisations. For every CLIP position ``p`` of the prompt, ``T(p)``
is the set of T5 positions whose character span overlaps ``p``'s. With the captured maps ``A``
(``[77 + T, H, W]``, each pixel renormalised over all text keys) split into ``A_clip`` and
``A_t5``, each renormalised per pixel over its own keys, the map the losses see is

* ``average`` (default, as gsn-factory's ``average_t5_clip``): ``(A_clip[p] + mean_{q in T(p)}
  A_t5[q]) / 2``, or ``A_clip[p]`` where ``T(p)`` is empty (start, end and padding positions);
* ``clip``: ``A_clip[p]``;
* ``t5``: ``mean_{q in T(p)} A_t5[q]`` (0 where ``T(p)`` is empty);

then renormalised per pixel over the 77 positions, so that each pixel's attention sums to 1
over the prompt's text tokens as the losses expect.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from ..prompts.alignment import tokenize_prompt

TextMaps = Literal["average", "clip", "t5"]
CLIP_LENGTH = 77


def token_matrix(prompt: str, clip_tokenizer: Any, t5_tokenizer: Any, t5_length: int) -> torch.Tensor:
    """``M: [77, t5_length]`` with ``M[p, q] = 1 / |T(p)|`` for ``q`` in ``T(p)``, else 0."""
    clip = tokenize_prompt(prompt, clip_tokenizer, CLIP_LENGTH)
    t5 = tokenize_prompt(prompt, t5_tokenizer, t5_length)
    matrix = torch.zeros(CLIP_LENGTH, t5_length)
    for p, (start, end) in enumerate(clip.spans, start=clip.first):
        overlapping = [q for q, (s, e) in enumerate(t5.spans, start=t5.first) if s < end and e > start]
        for q in overlapping:
            matrix[p, q] = 1.0 / len(overlapping)
    return matrix


def combine(maps: torch.Tensor, matrix: torch.Tensor, mode: TextMaps = "average") -> torch.Tensor:
    """``maps: [C + T, H, W]`` -> ``[C, H, W]`` in CLIP positions (module docstring), for a
    ``matrix: [C, T]`` from ``token_matrix`` (``C`` = 77)."""
    eps = torch.finfo(maps.dtype).tiny
    clip_length = matrix.shape[0]
    clip, t5 = maps[:clip_length], maps[clip_length:]
    clip = clip / clip.sum(0, keepdim=True).clamp_min(eps)
    t5 = t5 / t5.sum(0, keepdim=True).clamp_min(eps)
    from_t5 = torch.einsum("pq,qhw->phw", matrix.to(maps), t5)
    if mode == "clip":
        out = clip
    elif mode == "t5":
        out = from_t5
    else:
        has_t5 = (matrix.sum(1) > 0).to(maps)[:, None, None]
        out = has_t5 * (clip + from_t5) / 2 + (1 - has_t5) * clip
    return out / out.sum(0, keepdim=True).clamp_min(eps)


class PromptMaps:
    """One image's captured maps as the losses read them, ``[tokens, H, W]`` in the positions
    of its prompt's analysis: unchanged for every family but SD3, whose CLIP and T5 maps are
    combined (``combine``) with the prompt's ``token_matrix``, cached per prompt (at most
    ``cache_size`` prompts, so a sweep's many prompts stay bounded)."""

    def __init__(self, pipe: Any, family: str, mode: TextMaps, t5_length: int, cache_size: int = 256) -> None:
        self.pipe, self.family, self.mode, self.t5_length = pipe, family, mode, t5_length
        self.cache_size = cache_size
        self.matrices: dict[str, torch.Tensor] = {}

    def __call__(self, maps: torch.Tensor, prompt: str) -> torch.Tensor:
        if self.family != "sd3":
            return maps
        if prompt not in self.matrices:
            if len(self.matrices) >= self.cache_size:
                self.matrices.clear()
            self.matrices[prompt] = token_matrix(prompt, self.pipe.tokenizer, self.pipe.tokenizer_3, self.t5_length)
        return combine(maps, self.matrices[prompt], self.mode)
