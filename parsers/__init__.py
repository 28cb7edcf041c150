"""Built-in prompt parsers, registered through the ``attnguide_register_parsers`` hook."""

from __future__ import annotations

from attnguide.plugin.hookspecs import hookimpl
from attnguide.parsers.manual import ManualParser
from attnguide.parsers.spacy_parser import SpacyParser
from attnguide.parsers.stanza_parser import StanzaParser
from attnguide.prompts.parsing import Parser

BUILTIN_PARSERS: tuple[type[Parser], ...] = (SpacyParser, StanzaParser, ManualParser)


@hookimpl
def attnguide_register_parsers() -> list[type[Parser]]:
    """The built-in parser classes: ``spacy``, ``stanza`` and ``manual``."""
    return list(BUILTIN_PARSERS)

