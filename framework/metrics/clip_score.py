"""CLIP image-text similarity: the full prompt, each noun phrase, and their minimum.

As in Attend-and-Excite's evaluation, a score is the cosine similarity of the L2-normalised
image and text embeddings (not multiplied by 100 or clipped at 0, as "CLIPScore" is). A&E
averages each text's embedding over CLIP's 80 ImageNet prompt templates; ``templates`` does the
same for any list of ``"... {} ..."`` strings, and defaults to the bare text (``"{}"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class ClipScores:
    """Scores of one image: ``full`` (whole prompt), ``phrases`` (one per noun phrase),
    ``min_object`` (their minimum), ``phrase_logits`` (logit-scaled phrase similarities,
    what SynGen's comparison softmaxes)."""

    full: float
    phrases: list[float]
    min_object: float
    phrase_logits: list[float]


def _pooled(output: Any) -> torch.Tensor:
    """transformers 5 returns a model output whose ``pooler_output`` is the projected embedding;
    4.x returned the tensor itself."""
    pooled: torch.Tensor = output.pooler_output if hasattr(output, "pooler_output") else output
    return pooled


class ClipScorer:
    """Embeds images and texts with a CLIP model.

    Args:
        model: a ``CLIPModel`` (eval mode).
        processor: a ``CLIPProcessor`` (or anything taking ``text=``/``images=`` like it).
        templates: prompt templates, ``{}`` standing for the text; embeddings are averaged.
        device: where to run.
        batch_size: images per forward.
    """

    def __init__(self, model: Any, processor: Any, *, templates: Sequence[str] = ("{}",),
                 device: str | torch.device = "cpu", batch_size: int = 16) -> None:
        self.model, self.processor = model, processor
        self.templates = tuple(templates) or ("{}",)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self._text_cache: dict[str, torch.Tensor] = {}

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())

    @torch.no_grad()
    def image_embeddings(self, images: Sequence[Any]) -> torch.Tensor:
        """``[N, D]`` float32, L2-normalised, on CPU."""
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = [im.convert("RGB") for im in images[start : start + self.batch_size]]
            pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)
            feats = _pooled(self.model.get_image_features(pixel_values=pixels)).float()
            out.append(torch.nn.functional.normalize(feats, dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, 0)

    @torch.no_grad()
    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """``[N, D]`` float32, L2-normalised (template-averaged), on CPU; cached per text."""
        todo = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        for text in todo:
            filled = [tpl.format(text) for tpl in self.templates]
            tokens = self.processor(text=filled, return_tensors="pt", padding=True, truncation=True)
            feats = _pooled(self.model.get_text_features(
                input_ids=tokens["input_ids"].to(self.device),
                attention_mask=tokens["attention_mask"].to(self.device),
            )).float()
            mean = torch.nn.functional.normalize(feats, dim=-1).mean(0)
            self._text_cache[text] = torch.nn.functional.normalize(mean, dim=-1).cpu()
        return torch.stack([self._text_cache[t] for t in texts])

    def score(self, image_embedding: torch.Tensor, prompt: str, phrases: Sequence[str]) -> ClipScores:
        """Scores of one image (``image_embedding: [D]`` from ``image_embeddings``)."""
        texts = self.text_embeddings([prompt, *phrases])
        sims = (texts @ image_embedding).tolist()
        full, per_phrase = sims[0], sims[1:]
        return ClipScores(
            full=full,
            phrases=per_phrase,
            min_object=min(per_phrase) if per_phrase else full,
            phrase_logits=[self.logit_scale * s for s in per_phrase],
        )
