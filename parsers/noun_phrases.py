"""Noun phrases of a prompt as character spans: Stanza constituency trees, spaCy noun chunks,
or phrases given by hand.

Structured Diffusion Guidance (``plugins/structure_diffusion.py``) encodes every noun phrase of
the prompt on its own. Its official code (``weixi-feng/Structured-Diffusion-Guidance``,
``scripts/txt2img_demo.py::get_all_nps``) takes every ``NP`` node of Stanza's constituency tree
that has more than one leaf, nested ones included, in pre-order. Here the phrases are character
spans of the prompt, so the plugin maps them to token positions with the tokenizer's offsets.

* ``stanza``: that rule on each sentence's ``constituency`` tree (the models of
  ``tokenize,pos,constituency``; never downloaded implicitly: a missing model is a
  ``ParserError`` giving the ``stanza.download`` call).
* ``spacy``: the ``noun_chunks`` of more than one token. spaCy has no constituency parser:
  its chunks are base noun phrases, so the nested and coordinated NPs of a tree
  ("a bear in a hat", "a cat and a dog") are not among them.
* ``auto``: Stanza when its constituency models load, spaCy otherwise (logged once).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from attnguide.errors import ConfigError, ParserError
from attnguide.prompts.parsing import get_parser

from .stanza_parser import document_to_parsed

logger = logging.getLogger(__name__)

PhraseParser = Literal["auto", "stanza", "spacy"]
STANZA_PROCESSORS = "tokenize,pos,constituency"  # what the official script loads
Span = tuple[int, int]


@dataclass(frozen=True)
class NounPhrase:
    """A noun phrase: ``prompt[start:end] == text``."""

    text: str
    start: int
    end: int


def tree_noun_phrases(tree: Any, word_spans: Sequence[Span], prompt: str) -> list[NounPhrase]:
    """Every ``NP`` node of a constituency tree with more than one leaf, in pre-order.

    Args:
        tree: a Stanza ``Tree`` (``label``, ``children``; leaves have no children).
        word_spans: the character span of each leaf, in order.
        prompt: the text the spans refer to.

    Raises:
        ParserError: the tree has a different number of leaves than ``word_spans``.
    """
    out: list[NounPhrase] = []

    def leaves(node: Any) -> int:
        return 1 if not node.children else sum(leaves(child) for child in node.children)

    def walk(node: Any, left: int) -> None:
        count = leaves(node)
        if count == 1:  # a single word is no phrase, and holds none
            return
        if node.label == "NP":
            start, end = word_spans[left][0], word_spans[left + count - 1][1]
            out.append(NounPhrase(prompt[start:end], start, end))
        for child in node.children:
            walk(child, left)
            left += leaves(child)

    total = leaves(tree)
    if total != len(word_spans):
        raise ParserError(f"constituency tree has {total} leaves but the sentence has {len(word_spans)} words")
    walk(tree, 0)
    return out


def stanza_noun_phrases(doc: Any, prompt: str) -> list[NounPhrase]:
    """``tree_noun_phrases`` of every sentence of a ``stanza.Document`` with constituency trees
    (a pipeline's output, or CoNLL-U with ``# constituency =`` comments)."""
    words = document_to_parsed(doc, prompt).words
    out: list[NounPhrase] = []
    offset = 0
    for sentence in doc.sentences:
        count = len(sentence.words)
        if sentence.constituency is None:
            raise ParserError("the Stanza document has no constituency tree; add 'constituency' to its processors")
        spans = [(w.start, w.end) for w in words[offset : offset + count]]
        out.extend(tree_noun_phrases(sentence.constituency, spans, prompt))
        offset += count
    return out


def spacy_noun_phrases(doc: Any) -> list[NounPhrase]:
    """The noun chunks of more than one token of a spaCy ``Doc``, in order."""
    return [NounPhrase(c.text, c.start_char, c.end_char) for c in doc.noun_chunks if len(c) > 1]


def find_phrases(prompt: str, phrases: Sequence[str]) -> list[NounPhrase]:
    """``phrases`` located in ``prompt`` (case-insensitive; a phrase given twice takes its next
    occurrence).

    Raises:
        ConfigError: a phrase is not in the prompt.
    """
    lowered = prompt.lower()
    out: list[NounPhrase] = []
    for phrase in phrases:
        needle = phrase.strip().lower()
        after = max((p.end for p in out if p.text.lower() == needle), default=0)
        start = lowered.find(needle, after) if needle else -1
        if start < 0:
            raise ConfigError(f"noun phrase {phrase!r} is not in prompt {prompt!r}")
        out.append(NounPhrase(prompt[start : start + len(needle)], start, start + len(needle)))
    return out


class NounPhraseParser:
    """Noun phrases of prompts with the chosen parser, models loaded on first use.

    Args:
        parser: ``"stanza"``, ``"spacy"`` or ``"auto"`` (Stanza if its constituency models
            load, else spaCy, with one logged note).
        stanza_model_dir: Stanza's model directory (its default when ``None``).
        spacy_model: the spaCy package.
    """

    def __init__(self, parser: PhraseParser = "auto", stanza_model_dir: str | None = None,
                 spacy_model: str = "en_core_web_sm") -> None:
        self.parser, self.stanza_model_dir, self.spacy_model = parser, stanza_model_dir, spacy_model
        self._chosen: str | None = None if parser == "auto" else parser
        self._lock = threading.Lock()

    @property
    def chosen(self) -> str:
        """The parser that runs: ``"stanza"`` or ``"spacy"`` (decided on first use for ``auto``)."""
        with self._lock:
            if self._chosen is None:
                try:
                    self._stanza()
                    self._chosen = "stanza"
                except ParserError as exc:
                    logger.warning("structure_diffusion: noun phrases from spaCy noun chunks, not Stanza's "
                                   "constituency parse (the official parser): %s", exc)
                    self._chosen = "spacy"
            return self._chosen

    def noun_phrases(self, prompt: str) -> list[NounPhrase]:
        """The prompt's noun phrases of more than one word, in the parser's order."""
        if self.chosen == "stanza":
            return stanza_noun_phrases(self._stanza()(prompt), prompt)
        nlp = getattr(get_parser("spacy", {"model": self.spacy_model}), "nlp")
        return spacy_noun_phrases(nlp(prompt))

    def _stanza(self) -> Any:
        params = {"processors": STANZA_PROCESSORS, "model_dir": self.stanza_model_dir}
        return getattr(get_parser("stanza", params), "pipeline")
