"""Words -> text-encoder token positions, from the tokenizer's character offsets.

A word's tokens are the BPE pieces whose character span overlaps the word's span in the prompt,
so multi-piece words, repeated words, casing, accents, emoji and odd whitespace need no string
matching. The sequence is cut as the diffusion pipelines cut it: the start token if the
tokenizer has one, then as many prompt tokens as fit (75 for CLIP, ``max_length - 1`` for T5),
then the end token. Words that do not fit whole are dropped, once, with one
``TruncationWarning`` naming them. Prompt positions start at 1 after a start token (CLIP) and
at 0 without one (T5's SentencePiece/Unigram tokenizers: metaspace ``▁``, no start token,
``</s>`` at the end).

Works with any tokenizer that gives ``offset_mapping`` (every tokenizers-backed one, including
SD 1.x's CLIP tokenizer, SD 2.x's OpenCLIP variant with ``pad_token="!"``, both SDXL
tokenizers and T5's).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..types import AlignedBinding, AlignedWord, Binding, PromptTokens, WordRef

CLIP_MAX_LENGTH = 77
Span = tuple[int, int]


class TruncationWarning(UserWarning):
    """The prompt is longer than the text encoder's window; words of bindings were lost."""


@dataclass(frozen=True)
class TokenizedPrompt:
    """A prompt cut to the encoder window, with the character span of every kept piece.

    Attributes:
        tokens: pieces, prompt positions and end position (``PromptTokens``).
        spans: ``spans[p - first]`` is the ``(start, end)`` character span of position ``p``.
        all_spans: the spans of every prompt token before truncation (``spans`` is a prefix).
        first: the position of the first prompt token: 1 after a start token, 0 without one.
    """

    tokens: PromptTokens
    spans: tuple[Span, ...]
    all_spans: tuple[Span, ...]
    first: int = 1

    @property
    def truncated(self) -> bool:
        return len(self.all_spans) > len(self.spans)

    def text_of(self, position: int, prompt: str) -> str:
        """The prompt text under token ``position``."""
        start, end = self.spans[position - self.first]
        return prompt[start:end]


@dataclass
class Alignment:
    """Result of ``align_bindings``: the token view, the aligned bindings and what was lost."""

    tokens: PromptTokens
    bindings: list[AlignedBinding]
    warnings: list[str] = field(default_factory=list)


def encoder_window(tokenizer: Any) -> int:
    """The text encoder's sequence length: ``tokenizer.model_max_length``, 77 if unset."""
    length = getattr(tokenizer, "model_max_length", CLIP_MAX_LENGTH)
    if not isinstance(length, int) or length < 3 or length > 100_000:  # HF's "unset" is 1e30
        return CLIP_MAX_LENGTH
    return length


def tokenize_prompt(prompt: str, tokenizer: Any, max_length: int | None = None) -> TokenizedPrompt:
    """Tokenize ``prompt`` as the pipeline does and keep each piece's character span.

    Args:
        prompt: the text.
        tokenizer: a tokenizers-backed Hugging Face tokenizer (``return_offsets_mapping``).
        max_length: the encoder window; ``encoder_window(tokenizer)`` by default.
    """
    first = 1 if getattr(tokenizer, "bos_token", None) is not None else 0
    window = (max_length or encoder_window(tokenizer)) - 1 - first
    try:
        encoded = tokenizer(
            prompt, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
    except (NotImplementedError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"tokenizer {type(tokenizer).__name__} gives no character offsets ({exc}); use a "
            "tokenizers-backed (fast) tokenizer"
        ) from None
    ids = list(encoded["input_ids"])
    offsets = tuple(_without_leading_space(prompt, int(s), int(e)) for s, e in encoded["offset_mapping"])
    kept = ids[:window]
    pieces = (
        *([tokenizer.bos_token] if first else []),
        *tokenizer.convert_ids_to_tokens(kept),
        tokenizer.eos_token,
    )
    tokens = PromptTokens(
        prompt=prompt,
        pieces=tuple(str(p) for p in pieces),
        prompt_positions=tuple(range(first, first + len(kept))),
        eot_position=first + len(kept),
    )
    return TokenizedPrompt(tokens=tokens, spans=offsets[:window], all_spans=offsets, first=first)


def _without_leading_space(prompt: str, start: int, end: int) -> Span:
    """A metaspace piece (``▁cat``) spans the space before its word; keep the word part. A
    piece that is only space (a lone ``▁``) keeps its span, which overlaps no word."""
    trimmed = start
    while trimmed < end and prompt[trimmed].isspace():
        trimmed += 1
    return (trimmed, end) if trimmed < end else (start, end)


def align_bindings(
    prompt: str,
    bindings: Sequence[Binding],
    tokenizer: Any,
    max_length: int | None = None,
) -> Alignment:
    """Map every word of ``bindings`` to its token positions in the (truncated) encoder input.

    A word whose pieces do not all fit in the window is dropped: a binding loses such a
    modifier, and is dropped whole if its entity goes. A modifier whose only pieces are the
    entity's (or an earlier modifier's) is dropped too, so positions are unique per binding.
    One ``TruncationWarning`` names everything truncation dropped.

    Args:
        prompt: the text the bindings' character spans refer to.
        bindings: entities and modifiers with character spans (``WordRef.start/end``).
        tokenizer: see ``tokenize_prompt``.
        max_length: the encoder window (77 for CLIP).
    """
    tokenized = tokenize_prompt(prompt, tokenizer, max_length)
    window = len(tokenized.spans)
    dropped: list[str] = []  # lost to truncation
    notes: list[str] = []  # lost for want of tokens of their own
    aligned = []
    for binding in bindings:
        result = _align_binding(binding, tokenized.all_spans, tokenized.first, window, dropped, notes)
        if result is not None:
            aligned.append(result)
    messages = list(notes)
    if tokenized.truncated:
        messages.insert(0, _truncation_message(prompt, tokenized, dropped))
        warnings.warn(messages[0], TruncationWarning, stacklevel=2)
    return Alignment(tokens=tokenized.tokens, bindings=aligned, warnings=messages)


def _align_binding(
    binding: Binding,
    spans: Sequence[Span],
    first: int,
    window: int,
    dropped: list[str],
    notes: list[str],
) -> AlignedBinding | None:
    """One binding's positions; records what truncation (``dropped``) or overlap (``notes``)
    cost. ``spans`` covers every prompt token (the first at position ``first``), ``window``
    how many of them the encoder keeps."""
    name = binding.entity.text
    last = first + window - 1
    entity = _align_word(binding.entity, spans, first)
    if entity is None:
        notes.append(f"entity {name!r} has no tokens; binding dropped")
        return None
    if max(entity.tokens) > last:
        dropped.append(f"{name!r} (entity)")
        dropped.extend(f"{m.text!r} (modifier of {name!r})" for m in binding.modifiers)
        return None
    used = set(entity.tokens)
    modifiers = []
    for ref in binding.modifiers:
        word = _align_word(ref, spans, first)
        if word is not None and max(word.tokens) > last:
            dropped.append(f"{ref.text!r} (modifier of {name!r})")
            continue
        fresh = tuple(p for p in word.tokens if p not in used) if word else ()
        if not fresh:
            notes.append(f"modifier {ref.text!r} of {name!r} has no tokens of its own; dropped")
            continue
        used.update(fresh)
        modifiers.append(AlignedWord(ref.text, fresh, ref.start, ref.end))
    return AlignedBinding(entity, tuple(modifiers))


def positions_of_span(start: int, end: int, spans: Sequence[Span], first: int = 1) -> tuple[int, ...]:
    """Positions (the first piece at ``first``) of the pieces whose character span overlaps
    ``[start, end)``.

    A piece with an empty span (possible after Unicode normalisation) counts when its start
    lies inside the word.
    """
    out = []
    for position, (s, e) in enumerate(spans, start=first):
        if (s < end and e > start) or (s == e and start <= s < end):
            out.append(position)
    return tuple(out)


def _align_word(ref: WordRef, spans: Sequence[Span], first: int) -> AlignedWord | None:
    positions = positions_of_span(ref.start, ref.end, spans, first)
    if not positions:
        return None
    return AlignedWord(text=ref.text, tokens=positions, start=ref.start, end=ref.end)


def _truncation_message(prompt: str, tokenized: TokenizedPrompt, dropped: list[str]) -> str:
    window, total = len(tokenized.spans), len(tokenized.all_spans)
    cut_at = tokenized.spans[-1][1] if tokenized.spans else 0
    lost = ", ".join(dropped) if dropped else "none"
    return (
        f"prompt {_short(prompt)} has {total} tokens, the text encoder takes {window}:"
        f" {_short(prompt[cut_at:].strip())} is cut off; words of bindings dropped: {lost}"
    )


def _short(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
