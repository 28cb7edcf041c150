"""Built-in prompt parsers, registered through the ``attnguide_register_parsers`` hook."""

from __future__ import annotations

from attnguide import hookimpl
from attnguide.prompts.parsing import Parser

from .manual import ManualParser
from .spacy_parser import SpacyParser
from .stanza_parser import StanzaParser

BUILTIN_PARSERS: tuple[type[Parser], ...] = (SpacyParser, StanzaParser, ManualParser)


@hookimpl
def attnguide_register_parsers() -> list[type[Parser]]:
    """The built-in parser classes: ``spacy``, ``stanza`` and ``manual``."""
    return list(BUILTIN_PARSERS)

