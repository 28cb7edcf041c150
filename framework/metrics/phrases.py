"""A prompt's noun phrases - the "objects" of the per-phrase CLIP and VQA scores.

``spacy``: the prompt goes through the ``spacy`` parser and the shared binding rules
(``attnguide.prompts.binding``), so a phrase is exactly what the guidance methods bind: each entity with
its modifiers, written as determiner + modifiers + noun ("a car that is red" -> "a red car").

``split``: the prompt is cut at " and " and " with " - what Attend-and-Excite's evaluation does
for its two-object prompts ("a cat and a red car" -> "a cat", "a red car").

``auto`` (the default) uses ``spacy`` when its English model is installed, else ``split``.
"""

from __future__ import annotations

import functools
import logging
import re

from ..errors import AttnguideError, ConfigError

logger = logging.getLogger(__name__)

METHODS = ("auto", "spacy", "split")
_SPLIT = re.compile(r"\s+(?:and|with)\s+", re.IGNORECASE)


def split_phrases(prompt: str) -> list[str]:
    """Cut at " and "/" with "; a prompt with neither is one phrase."""
    parts = [p.strip(" .,;") for p in _SPLIT.split(prompt.strip())]
    return [p for p in parts if p] or [prompt.strip()]


@functools.lru_cache(maxsize=4096)
def spacy_phrases(prompt: str) -> tuple[str, ...]:
    """One phrase per entity of the binding rules, in prompt order (may be empty)."""
    from ..prompts.parsing import get_parser

    parser = get_parser("spacy")
    parsed = parser.parse(prompt)
    phrases = []
    for binding in parser.bindings(prompt, parsed):
        entity = binding.entity
        dets = [w.text for w in parsed.children(entity.index) if w.deprel == "det" and w.start < entity.start]
        phrases.append(" ".join([*dets[:1], *(m.text for m in binding.modifiers), entity.text]))
    return tuple(phrases)


def noun_phrases(prompt: str, method: str = "auto") -> tuple[list[str], str]:
    """``(phrases, method used)``; never empty (a prompt without nouns is its own phrase)."""
    if method not in METHODS:
        raise ConfigError(f"unknown phrase method {method!r}; use one of {', '.join(METHODS)}")
    if method in ("auto", "spacy"):
        try:
            found = list(spacy_phrases(prompt))
        except (AttnguideError, ImportError, OSError) as exc:
            if method == "spacy":
                raise
            _warn_once(str(exc))
        else:
            return (found, "spacy") if found else ([prompt.strip()], "spacy")
    return split_phrases(prompt), "split"


@functools.lru_cache(maxsize=1)
def _warn_once(reason: str) -> None:
    logger.warning("noun phrases: the spaCy parser is not available (%s); splitting prompts at "
                   "' and '/' with ' instead", reason)
