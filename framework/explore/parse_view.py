"""A prompt's analysis as the page shows it: words with their dependency arcs, bindings, and
every token position with the binding word on it (the positions the losses read)."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..types import PromptAnalysis


def analysis_json(analysis: PromptAnalysis, parser: str) -> dict[str, Any]:
    """``{"prompt", "parser", "words", "bindings", "tokens", "positions", "warnings"}``.

    ``words``: ``{index, text, start, end, upos, head, deprel, lemma}`` (``head`` -1 is the
    root); ``bindings``: ``{entity: {text, tokens}, modifiers: [...]}``; ``tokens``: ``{position,
    piece, word, role}`` for every encoder position of the prompt (``role`` entity, modifier or
    empty); ``positions``: ``{"entities": [...], "bound": [...]}`` - entity positions (what
    Attend-and-Excite-style losses read) and every bound word's positions (SynGen-style).
    """
    words = analysis.parsed.words if analysis.parsed else ()
    owner: dict[int, tuple[str, str]] = {}
    for binding in analysis.bindings:
        owner.update({p: (binding.entity.text, "entity") for p in binding.entity.tokens})
        for mod in binding.modifiers:
            owner.update({p: (f"{mod.text} (of {binding.entity.text})", "modifier") for p in mod.tokens})
    prompt_positions = set(analysis.tokens.prompt_positions)
    tokens = [
        {"position": pos, "piece": piece, "word": owner.get(pos, ("", ""))[0], "role": owner.get(pos, ("", ""))[1],
         "in_prompt": pos in prompt_positions}
        for pos, piece in enumerate(analysis.tokens.pieces)
        if pos in prompt_positions or pos in owner
    ]
    return {
        "prompt": analysis.prompt,
        "parser": parser,
        "words": [dataclasses.asdict(w) for w in words],
        "bindings": [b.to_dict() for b in analysis.bindings],
        "tokens": tokens,
        "positions": {
            "entities": sorted(p for b in analysis.bindings for p in b.entity.tokens),
            "bound": sorted(p for b in analysis.bindings for p in b.positions),
        },
        "warnings": list(analysis.warnings),
    }
