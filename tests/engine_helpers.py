"""Prompt analyses for engine tests, without a parser model (``attnguide.testing``)."""

from __future__ import annotations

from attnguide.testing import analysis_for as _analysis_for
from attnguide.types import PromptAnalysis


def analysis_for(tokenizer, prompt: str, bindings: list[tuple[str, list[str]]]) -> PromptAnalysis:
    """``attnguide.testing.analysis_for`` with the bindings as ``(noun, [modifiers])`` pairs."""
    return _analysis_for(prompt, dict(bindings), tokenizer)
