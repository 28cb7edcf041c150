"""Words -> text-encoder token positions, from the tokenizer's character offsets.

A word's tokens are the BPE pieces whose character span overlaps the word's span in the prompt,
so multi-piece words, repeated words, casing, accents, emoji and odd whitespace need no string
matching. The sequence is cut as the diffusion pipelines cut it: the start token, the first
``max_length - 2`` prompt tokens (75 for CLIP), the end token. Words that do not fit whole are
dropped, once, with one ``TruncationWarning`` naming them; positions are always in
``[1, max_length - 1]``.

Works with any tokenizer that gives ``offset_mapping`` (every tokenizers-backed one, including
SD 1.x's CLIP tokenizer, SD 2.x's OpenCLIP variant with ``pad_token="!"`` and both SDXL
tokenizers).
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
        spans: ``spans[p - 1]`` is the ``(start, end)`` character span of position ``p``.
        all_spans: the spans of every prompt token before truncation (``spans`` is a prefix).
    """

    tokens: PromptTokens
    spans: tuple[Span, ...]
    all_spans: tuple[Span, ...]

    @property
    def truncated(self) -> bool:
        return len(self.all_spans) > len(self.spans)

    def text_of(self, position: int, prompt: str) -> str:
        """The prompt text under token ``position`` (1-based)."""
        start, end = self.spans[position - 1]
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
    window = (max_length or encoder_window(tokenizer)) - 2
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
    offsets: tuple[Span, ...] = tuple((int(s), int(e)) for s, e in encoded["offset_mapping"])
    kept = ids[:window]
    pieces = (
        tokenizer.bos_token,
        *tokenizer.convert_ids_to_tokens(kept),
        tokenizer.eos_token,
    )
    tokens = PromptTokens(
        prompt=prompt,
        pieces=tuple(str(p) for p in pieces),
        prompt_positions=tuple(range(1, len(kept) + 1)),
        eot_position=len(kept) + 1,
    )
    return TokenizedPrompt(tokens=tokens, spans=offsets[:window], all_spans=offsets)


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
        result = _align_binding(binding, tokenized.all_spans, window, dropped, notes)
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
    window: int,
    dropped: list[str],
    notes: list[str],
) -> AlignedBinding | None:
    """One binding's positions; records what truncation (``dropped``) or overlap (``notes``)
    cost. ``spans`` covers every prompt token, ``window`` how many of them the encoder keeps."""
    name = binding.entity.text
    entity = _align_word(binding.entity, spans)
    if entity is None:
        notes.append(f"entity {name!r} has no tokens; binding dropped")
        return None
    if max(entity.tokens) > window:
        dropped.append(f"{name!r} (entity)")
        dropped.extend(f"{m.text!r} (modifier of {name!r})" for m in binding.modifiers)
        return None
    used = set(entity.tokens)
    modifiers = []
    for ref in binding.modifiers:
        word = _align_word(ref, spans)
        if word is not None and max(word.tokens) > window:
            dropped.append(f"{ref.text!r} (modifier of {name!r})")
            continue
        fresh = tuple(p for p in word.tokens if p not in used) if word else ()
        if not fresh:
            notes.append(f"modifier {ref.text!r} of {name!r} has no tokens of its own; dropped")
            continue
        used.update(fresh)
        modifiers.append(AlignedWord(ref.text, fresh, ref.start, ref.end))
    return AlignedBinding(entity, tuple(modifiers))


def positions_of_span(start: int, end: int, spans: Sequence[Span]) -> tuple[int, ...]:
    """1-based positions of the pieces whose character span overlaps ``[start, end)``.

    A piece with an empty span (possible after Unicode normalisation) counts when its start
    lies inside the word.
    """
    out = []
    for position, (s, e) in enumerate(spans, start=1):
        if (s < end and e > start) or (s == e and start <= s < end):
            out.append(position)
    return tuple(out)


def _align_word(ref: WordRef, spans: Sequence[Span]) -> AlignedWord | None:
    positions = positions_of_span(ref.start, ref.end, spans)
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
