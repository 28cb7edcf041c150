"""Structured Diffusion Guidance (Feng et al., ICLR 2023): one key, many values.

Per the official code (``weixi-feng/Structured-Diffusion-Guidance`` at commit 773b2ba, MIT;
re-implemented, not copied): ``scripts/txt2img_demo.py`` builds the conditioning,
``structured_stable_diffusion/modules/attention.py::CrossAttention.multi_qkv`` uses it. The
prompt's noun phrases (every NP of more than one word of the constituency parse,
``parsers/noun_phrases.py``) are encoded one by one. Phrase ``i``'s value sequence ``V_i`` is the
full prompt's encoding ``W`` with the phrase's token span overwritten by the phrase
encoding's own tokens (its start token dropped)::

    V_0 = W,   V_i = W  with  V_i[s_i : e_i] = E(phrase_i)[1 : 1 + e_i - s_i]

and in every cross-attention layer, at every step, the conditional rows become::

    out = (1 / (k + 1)) sum_{i=0..k} softmax(Q K(W)^T / sqrt(d)) to_v(V_i)

(keys from the full prompt only). The unconditional rows are untouched. No gradient; the cost
is one text-encoder pass per phrase and run (``ctx.encode`` caches) plus ``k`` extra value
projections per layer. See docs/methods.md for every difference from the official code.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, TypeAlias

import pydantic

from attnguide import Callback, CallbackParams, ConfigError, hookimpl
from attnguide.engine.requests import MapRequest
from attnguide.lazy import torch
from attnguide.models.tokenizer import clip_tokenizer
from attnguide.parsers.noun_phrases import (
    NounPhrase,
    NounPhraseParser,
    PhraseParser,
    find_phrases,
)
from attnguide.prompts.alignment import TokenizedPrompt, tokenize_prompt
from attnguide.types import (
    AttentionContext,
    AttentionEdit,
    EmbeddingContext,
    PromptAnalysis,
)

Placement: TypeAlias = "tuple[int, torch.Tensor]"
"""``(first position, rows [n, D])``: a phrase encoding's tokens and where they go."""


class StructureDiffusionParams(CallbackParams):
    parser: PhraseParser = pydantic.Field(
        "auto", description="noun phrases from 'stanza' (constituency, as the official code), 'spacy' "
                            "(noun chunks) or 'auto' (Stanza if its models are installed, else spaCy)")
    stanza_model_dir: str | None = pydantic.Field(None, description="Stanza's model directory (its default if unset)")
    spacy_model: str = pydantic.Field("en_core_web_sm", description="spaCy package for the spaCy noun chunks")
    phrases: dict[str, list[str]] = pydantic.Field(
        default_factory=dict, description="{prompt: [noun phrases]} to use as given instead of parsing that prompt")


class StructureDiffusion(Callback[StructureDiffusionParams]):
    """Structured Diffusion Guidance: per-noun-phrase value states in every cross-attention."""

    name = "structure_diffusion"
    Params = StructureDiffusionParams
    needs_analysis = True  # the prompt's token view (positions of the phrases)
    requires = frozenset({"cross_attention", "clip_text"})

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self._parser = NounPhraseParser(self.params.parser, self.params.stanza_model_dir, self.params.spacy_model)
        self._parsed: dict[str, list[NounPhrase]] = {}  # prompt -> phrases (parse once per prompt)

    def modulated_layers(self) -> tuple[MapRequest, ...]:
        return (MapRequest("cross", every=True),)

    @hookimpl
    def attnguide_edit_embeddings(self, ctx: EmbeddingContext, embeds: torch.Tensor) -> None:
        """Encode the image's noun phrases once (first step) into its state; the embeddings stay."""
        if "placements" in ctx.state:
            return
        phrases = self.noun_phrases(ctx.analysis.prompt)
        spans = phrase_positions(ctx.analysis, phrases, keep_whole=ctx.analysis.prompt in self.params.phrases)
        ctx.state["phrases"] = [phrase.text for phrase, _, _ in spans]
        ctx.state["positions"] = [(start, end) for _, start, end in spans]
        ctx.state["placements"] = [(start, phrase_rows(ctx.encode(phrase.text), end - start))
                                   for phrase, start, end in spans]

    @hookimpl
    def attnguide_modulate_attention(self, ctx: AttentionContext, probs: torch.Tensor) -> AttentionEdit | None:
        """Value states ``[rows, L, D]``: per conditional row its ``V_0 .. V_k``; every other row
        (and an image whose phrases are not encoded yet) its own context."""
        per_row = []
        for row, (image, branch) in enumerate(ctx.rows):
            placements = ctx.state[image].get("placements") if branch == "cond" else None
            per_row.append(aligned_values(ctx.context[row], placements or []))
        if all(len(values) == 1 for values in per_row):
            return None
        return AttentionEdit(values=stacked_values(per_row))

    def noun_phrases(self, prompt: str) -> list[NounPhrase]:
        """The phrases of ``prompt``: given in ``phrases``, else parsed (once per prompt)."""
        if prompt in self.params.phrases:
            return find_phrases(prompt, self.params.phrases[prompt])
        if prompt not in self._parsed:
            self._parsed[prompt] = self._parser.noun_phrases(prompt)
        return self._parsed[prompt]


@functools.lru_cache(maxsize=1)
def _clip_tokenizer() -> Any:
    return clip_tokenizer()


def prompt_offsets(analysis: PromptAnalysis) -> TokenizedPrompt:
    """The prompt's pieces with their character spans, from the CLIP BPE tokenizer, checked to
    give the pieces of the run's own tokenizer (``analysis.tokens``).

    Raises:
        ConfigError: the model's tokenizer cuts the prompt otherwise.
    """
    tokenized = tokenize_prompt(analysis.prompt, _clip_tokenizer())
    if tokenized.tokens.pieces != analysis.tokens.pieces:
        raise ConfigError(f"structure_diffusion places noun phrases with CLIP's BPE tokenizer, but this model's "
                          f"tokenizer cuts {analysis.prompt!r} into other pieces")
    return tokenized


def phrase_positions(analysis: PromptAnalysis, phrases: Sequence[NounPhrase],
                     keep_whole: bool = False) -> list[tuple[NounPhrase, int, int]]:
    """``(phrase, start, end)``: the encoder positions ``start .. end - 1`` of each phrase's
    tokens (the pieces its characters overlap, cut to the encoder window), in order.

    A phrase covering the whole prompt (all but spaces and periods) is the full prompt's own
    value and is dropped, and a phrase whose positions an earlier one has is dropped, unless
    ``keep_whole`` (phrases given by hand are used as given). A phrase with no position left
    after truncation is dropped.
    """
    tokenized = prompt_offsets(analysis)
    out: list[tuple[NounPhrase, int, int]] = []
    prompt = analysis.prompt
    for phrase in phrases:
        inside = [tokenized.first + i for i, (s, e) in enumerate(tokenized.spans)
                  if s < phrase.end and e > phrase.start]
        if not inside:
            continue
        span = (inside[0], inside[-1] + 1)
        whole = not (prompt[: phrase.start] + prompt[phrase.end :]).strip(" .\t\n")  # the official strips periods
        if not keep_whole and (whole or span in [(s, e) for _, s, e in out]):
            continue
        out.append((phrase, *span))
    return out


def phrase_rows(encoding: torch.Tensor, length: int) -> torch.Tensor:
    """``encoding[1 : 1 + length]``: a phrase encoding ``[L, D]``'s first ``length`` tokens after
    its start token (the official ``seq[1:1+seg_length]``)."""
    return encoding[1 : 1 + length]


def aligned_values(context: torch.Tensor, placements: Sequence[Placement]) -> list[torch.Tensor]:
    """``[V_0, .., V_k]`` for one row: ``V_0 = context [L, D]``, ``V_i`` = ``context`` with the
    rows from position ``start_i`` replaced by phrase ``i``'s rows."""
    values = [context]
    for start, rows in placements:
        value = context.clone()
        value[start : start + rows.shape[0]] = rows.to(device=value.device, dtype=value.dtype)
        values.append(value)
    return values


def stacked_values(per_row: Sequence[Sequence[torch.Tensor]]) -> list[torch.Tensor]:
    """One ``[rows, L, D]`` tensor per value index. A row with fewer values than the most is
    padded with the mean of its own: the layer averages ``probs @ to_v(v_i)``, which is affine
    in ``v_i``, so each row still gets the mean over its own values."""
    count = max(len(values) for values in per_row)
    padded = [[*values, *[torch.stack(list(values)).mean(0)] * (count - len(values))] for values in per_row]
    return [torch.stack([values[i] for values in padded]) for i in range(count)]
