"""The ``stanza`` parser: Stanford Stanza, which speaks Universal Dependencies natively.

Models are never downloaded behind the user's back: a missing model is a ``ParserError`` with
the ``stanza.download`` call to run. ``document_to_parsed`` converts any ``stanza.Document``
(also one read from CoNLL-U) to a ``ParsedPrompt``.
"""

from __future__ import annotations

import json
import threading
from typing import Any, ClassVar

from attnguide.errors import ParserError
from attnguide.prompts.parsing import Parser, ParserParams
from attnguide.types import ParsedPrompt, Word


class StanzaParams(ParserParams):
    lang: str = "en"
    """Language code of the models."""
    processors: str = "tokenize,pos,lemma,depparse"
    """Stanza processors; binding needs ``pos`` and ``depparse``."""
    model_dir: str | None = None
    """Where the models are (Stanza's default, ``$STANZA_RESOURCES_DIR`` or
    ``~/stanza_resources``, if ``None``)."""


class StanzaParser(Parser):
    """Dependency parse with a Stanza pipeline (run on the CPU)."""

    name: ClassVar[str] = "stanza"
    Params: ClassVar[type[StanzaParams]] = StanzaParams
    model_param: ClassVar[str | None] = "model_dir"
    params: StanzaParams

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self._pipeline: Any = None
        self._lock = threading.Lock()

    @property
    def pipeline(self) -> Any:
        """The loaded ``stanza.Pipeline`` (loaded on first use)."""
        with self._lock:
            if self._pipeline is None:
                self._pipeline = load_stanza_pipeline(self.params)
            return self._pipeline

    def parse(self, prompt: str) -> ParsedPrompt:
        return document_to_parsed(self.pipeline(prompt), prompt)


def load_stanza_pipeline(params: StanzaParams) -> Any:
    """Build the Stanza pipeline from local models only.

    Raises:
        ParserError: Stanza or its models are missing; the message gives the download call.
    """
    try:
        import stanza
    except ImportError:  # pragma: no cover - stanza is a dependency
        raise ParserError("the stanza parser needs Stanza: pip install stanza") from None
    kwargs: dict[str, Any] = {
        "lang": params.lang,
        "processors": params.processors,
        "download_method": None,
        "use_gpu": False,  # a few prompts; keep the accelerator for the diffusion model
        "logging_level": "WARN",
    }
    if params.model_dir is not None:
        kwargs["dir"] = params.model_dir
    try:
        return stanza.Pipeline(**kwargs)
    except Exception as exc:  # noqa: BLE001 - stanza raises many types for missing models
        where = f", model_dir={json.dumps(params.model_dir)}" if params.model_dir else ""
        call = f"stanza.download({json.dumps(params.lang)}{where})"
        detail = " ".join(str(exc).split())
        raise ParserError(
            f"Stanza models for {params.lang!r} ({params.processors}) are not available"
            f" ({type(exc).__name__}: {detail}); fetch them with:"
            f" python -c 'import stanza; {call}'"
        ) from None


def document_to_parsed(doc: Any, prompt: str | None = None, parser: str = "stanza") -> ParsedPrompt:
    """Convert a ``stanza.Document`` to a ``ParsedPrompt`` (UD labels, lower case).

    Stanza heads are 1-based within a sentence (0 for the root); they become 0-based word
    indices over the whole prompt (-1 for each root). Character spans come from the tokens'
    ``start_char``/``end_char``; when those are missing (a CoNLL-U read without
    ``reconstruct_text``) each token is found in ``prompt`` left to right.

    Args:
        doc: the Stanza document.
        prompt: the text the spans refer to; ``doc.text`` if ``None``.
        parser: the name recorded in ``ParsedPrompt.parser``.
    """
    text = prompt if prompt is not None else (doc.text or "")
    words: list[Word] = []
    cursor = 0
    for sentence in doc.sentences:
        offset = len(words)
        for token in sentence.tokens:
            start, end = _token_span(token, text, cursor)
            cursor = end
            for word_start, word_end, word in _word_spans(token, text, start, end):
                words.append(
                    Word(
                        index=len(words),
                        text=text[word_start:word_end],
                        start=word_start,
                        end=word_end,
                        upos=word.upos or "X",
                        head=offset + word.head - 1 if word.head else -1,
                        deprel=(word.deprel or "dep").lower(),
                        lemma=word.lemma or word.text.lower(),
                    )
                )
    return ParsedPrompt(prompt=text, words=tuple(words), parser=parser)


def _token_span(token: Any, text: str, cursor: int) -> tuple[int, int]:
    if token.start_char is not None and token.end_char is not None:
        return int(token.start_char), int(token.end_char)
    start = text.find(token.text, cursor)
    if start < 0:
        raise ParserError(f"token {token.text!r} not found in prompt {text!r}")
    return start, start + len(token.text)


def _word_spans(token: Any, text: str, start: int, end: int) -> list[tuple[int, int, Any]]:
    """Spans of the words of one token; a multi-word token's words are found inside it."""
    if len(token.words) == 1:
        return [(start, end, token.words[0])]
    out, cursor = [], start
    for word in token.words:
        found = text.find(word.text, cursor, end)
        if found < 0:  # "du" = "de" + "le": the words are not substrings; share the span
            out.append((start, end, word))
            continue
        out.append((found, found + len(word.text), word))
        cursor = found + len(word.text)
    return out
