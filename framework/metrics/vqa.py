"""BLIP-VQA attribute-binding score, in the style of T2I-CompBench.

For every noun phrase of the prompt BLIP is asked ``template.format(phrase=...)`` ("is there a
red car?") about the image; the answer's first decoded token is read as a choice between
"yes" and "no", ``P(yes) = p_yes / (p_yes + p_no)``; the image's score is the product over its
phrases. T2I-CompBench asks "{noun chunk}?" and ranks BLIP's full answers; set
``template="{phrase}?"`` for its wording.

transformers' ``BlipForQuestionAnswering.forward`` returns only a loss, so the scorer runs its
three parts itself: vision encoder -> question encoder over the image -> one decoder step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

DEFAULT_TEMPLATE = "is there {phrase}?"


class BlipVqaScorer:
    """Yes-probabilities of questions about an image.

    Args:
        model: a ``BlipForQuestionAnswering`` (eval mode).
        processor: a ``BlipProcessor`` (image processor + BERT tokenizer).
        template: the question, ``{phrase}`` standing for the noun phrase.
        device: where to run.
    """

    def __init__(self, model: Any, processor: Any, *, template: str = DEFAULT_TEMPLATE,
                 device: str | torch.device = "cpu") -> None:
        self.model, self.processor, self.template = model, processor, template
        self.device = torch.device(device)
        tokenizer = processor.tokenizer
        self.answer_ids = tuple(tokenizer(word, add_special_tokens=False)["input_ids"][0] for word in ("yes", "no"))

    def question(self, phrase: str) -> str:
        return self.template.format(phrase=phrase)

    @torch.no_grad()
    def p_yes(self, image: Any, phrases: Sequence[str]) -> list[float]:
        """``P(yes)`` for the question about each phrase, in order.

        Questions are asked one at a time: transformers 5's BLIP text decoder ignores
        ``encoder_attention_mask``, so in a padded batch a short question would attend to the
        padding of a longer one.
        """
        model = self.model
        pixels = self.processor(images=[image.convert("RGB")], return_tensors="pt")["pixel_values"].to(self.device)
        image_embeds = model.vision_model(pixel_values=pixels).last_hidden_state
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
        start = torch.full((1, 1), model.decoder_start_token_id, device=self.device)
        probs = []
        for phrase in phrases:
            tokens = self.processor.tokenizer([self.question(phrase)], return_tensors="pt")
            ids, mask = tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)
            question = model.text_encoder(input_ids=ids, attention_mask=mask, encoder_hidden_states=image_embeds,
                                          encoder_attention_mask=image_mask).last_hidden_state
            logits = model.text_decoder(input_ids=start, encoder_hidden_states=question,
                                        encoder_attention_mask=mask).logits[0, -1].float()
            probs.append(float(logits[list(self.answer_ids)].softmax(-1)[0]))
        return probs

    def score(self, image: Any, phrases: Sequence[str]) -> tuple[float, list[float]]:
        """``(product of P(yes), the P(yes) per phrase)``."""
        probs = self.p_yes(image, phrases)
        return math.prod(probs), probs
