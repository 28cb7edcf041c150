"""The ``manual`` parser: bindings given explicitly, checked against each prompt.

Three forms of ``bindings``:

* token positions, ``[2, 5]`` - each an entity at that encoder position (Attend-and-Excite's
  ``token_indices``; 1 is the first prompt token);
* words, ``["cat", "frog"]`` - each an entity;
* pairs, ``{"crown": ["red"], "strawberry": ["golden"]}`` - entities with their modifiers.

Words match whole words, case-insensitively, and may be several words ("teddy bear"). A word
named twice takes the next occurrence; a modifier takes the free occurrence nearest its entity,
preferring one before it ("a red crown and a red strawberry" gives each "red" its own noun).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import field_validator

from attnguide.errors import ConfigError
from attnguide.prompts.alignment import tokenize_prompt
from attnguide.prompts.parsing import Parser, ParserParams
from attnguide.types import (
    AlignedBinding,
    AlignedWord,
    Binding,
    ParsedPrompt,
    PromptAnalysis,
    Word,
    WordRef,
)

Span = tuple[int, int]


class ManualParams(ParserParams):
    bindings: list[int] | list[str] | dict[str, list[str]] = []
    """Token positions, entity words, or ``{entity: [modifiers]}``."""

    @field_validator("bindings", mode="before")
    @classmethod
    def _single_modifier(cls, value: Any) -> Any:
        if isinstance(value, dict):  # {"crown": "red"} means {"crown": ["red"]}
            return {k: [v] if isinstance(v, str) else v for k, v in value.items()}
        return value


class ManualParser(Parser):
    """Bindings from the configuration instead of a dependency parse."""

    name: ClassVar[str] = "manual"
    Params: ClassVar[type[ManualParams]] = ManualParams
    params: ManualParams

    @property
    def positional(self) -> bool:
        spec = self.params.bindings
        return isinstance(spec, list) and bool(spec) and isinstance(spec[0], int)

    def parse(self, prompt: str) -> ParsedPrompt:
        """The named words, in prompt order (no syntax: ``upos`` X, ``deprel`` dep)."""
        words, _ = self._locate(prompt)
        return ParsedPrompt(prompt=prompt, words=words, parser=self.name)

    def bindings(self, prompt: str, parsed: ParsedPrompt | None = None) -> list[Binding]:
        _, bindings = self._locate(prompt)
        return bindings

    def analyse(self, prompt: str, tokenizer: Any) -> PromptAnalysis:
        if not self.positional:
            return super().analyse(prompt, tokenizer)
        tokenized = tokenize_prompt(prompt, tokenizer)
        n = len(tokenized.spans)
        bindings: list[AlignedBinding] = []
        for position in self.params.bindings:
            if any(position in b.entity.tokens for b in bindings):
                raise ConfigError(f"manual binding position {position} is given twice")
            first = tokenized.first
            if not isinstance(position, int) or not first <= position < first + n:
                raise ConfigError(
                    f"manual binding position {position!r} is outside prompt {prompt!r}, whose"
                    f" tokens are at positions {first}..{first + n - 1}"
                )
            start, end = tokenized.spans[position - first]
            word = AlignedWord(tokenized.text_of(position, prompt), (position,), start, end)
            bindings.append(AlignedBinding(word))
        parsed = ParsedPrompt(prompt=prompt, words=(), parser=self.name)
        return PromptAnalysis(prompt, tokenized.tokens, bindings, parsed, [])

    def _locate(self, prompt: str) -> tuple[tuple[Word, ...], list[Binding]]:
        """Find every named word in ``prompt``; ``ConfigError`` for one that is not there."""
        spec = self.params.bindings
        if self.positional:
            raise ConfigError(
                "manual bindings given as token positions need the tokenizer; use "
                "analyse_prompt, not parse/bindings"
            )
        pairs: list[tuple[int | str, list[str]]] = (
            list(spec.items()) if isinstance(spec, dict) else [(w, []) for w in spec]
        )
        used: list[Span] = []
        entities = [_claim(prompt, str(entity), used, near=None) for entity, _ in pairs]
        modifier_spans = [
            [_claim(prompt, m, used, near=entity) for m in modifiers]
            for entity, (_, modifiers) in zip(entities, pairs)
        ]
        order = sorted(used)
        words = tuple(
            Word(i, prompt[s:e], s, e, upos="X", head=-1, deprel="dep", lemma=prompt[s:e].lower())
            for i, (s, e) in enumerate(order)
        )

        def ref(span: Span) -> WordRef:
            word = words[order.index(span)]
            return WordRef(word.index, word.text, word.start, word.end)

        bindings = [
            Binding(ref(entity), tuple(ref(m) for m in sorted(mods)))
            for entity, mods in zip(entities, modifier_spans)
        ]
        bindings.sort(key=lambda b: b.entity.start)
        return words, bindings


def _claim(prompt: str, word: str, used: list[Span], near: Span | None) -> Span:
    """Take a free occurrence of ``word`` (whole words, any case); the one nearest ``near``."""
    parts = word.split()
    if not parts:
        raise ConfigError(f"manual binding word {word!r} for prompt {prompt!r} is empty")
    pattern = r"(?<!\w)" + r"\s+".join(map(re.escape, parts)) + r"(?!\w)"
    found = [m.span() for m in re.finditer(pattern, prompt, flags=re.IGNORECASE)]
    if not found:
        raise ConfigError(f"manual binding word {word!r} is not in prompt {prompt!r}")
    free = [s for s in found if not any(s[0] < e and s[1] > b for b, e in used)]
    if not free:
        raise ConfigError(
            f"manual binding word {word!r} is named more often than it occurs in prompt {prompt!r}"
        )
    if near is None:
        chosen = free[0]
    else:
        chosen = min(free, key=lambda s: (s[0] >= near[1], abs(s[0] - near[0])))
    used.append(chosen)
    return chosen
