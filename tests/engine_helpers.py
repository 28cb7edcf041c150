"""Hand-built prompt analyses, so engine tests do not depend on a parser model."""

from __future__ import annotations

from attnguide.types import AlignedBinding, AlignedWord, PromptAnalysis, PromptTokens


def analysis_for(tokenizer, prompt: str, bindings: list[tuple[str, list[str]]]) -> PromptAnalysis:
    """Bind words by exact piece match (test prompts use single-piece words only)."""
    ids = tokenizer(prompt).input_ids
    pieces = tuple(p.replace("</w>", "") for p in tokenizer.convert_ids_to_tokens(ids))
    positions = tuple(range(1, len(ids) - 1))

    def word(text: str) -> AlignedWord:
        return AlignedWord(text, (pieces.index(text),))

    aligned = [AlignedBinding(word(e), tuple(word(m) for m in mods)) for e, mods in bindings]
    return PromptAnalysis(prompt, PromptTokens(prompt, pieces, positions, len(ids) - 1), aligned)
