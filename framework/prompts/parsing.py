"""The parse -> bind -> align station: parser base class, per-process parser cache, and
``analyse_prompt``, which turns a prompt into the ``PromptAnalysis`` the losses read.

A parser plugin subclasses ``Parser``, sets ``name`` and a ``Params`` model, and implements
``parse`` (prompt -> UD parse). Binding (``attnguide.prompts.binding``) and alignment
(``attnguide.prompts.alignment``) are shared; a parser that knows its bindings or token positions
directly (the manual parser) overrides ``bindings`` or ``analyse``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from ..errors import ConfigError, PluginError
from ..plugin.params import validate_plugin_params
from ..types import Binding, ParsedPrompt, PromptAnalysis
from .alignment import align_bindings
from .binding import extract_bindings

logger = logging.getLogger(__name__)


class ParserParams(BaseModel):
    """Base of every parser's ``Params``: unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Parser:
    """Base class of prompt parsers.

    Class attributes:
        name: the registered name (``--parser``, recipe ``parser:``).
        Params: the pydantic model of the parser's settings.
        model_param: the ``Params`` field that ``--parser-model`` sets, or ``None``.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = ParserParams
    model_param: ClassVar[str | None] = None

    def __init__(self, params: Mapping[str, Any] | BaseModel | None = None) -> None:
        self.params = validate_params(type(self), params)

    def parse(self, prompt: str) -> ParsedPrompt:
        """Dependency-parse ``prompt`` into UD words with character spans."""
        raise NotImplementedError(f"parser {self.name!r} does not implement parse()")

    def bindings(self, prompt: str, parsed: ParsedPrompt | None = None) -> list[Binding]:
        """Entities and their modifiers: the shared rules on ``parsed`` (parsed here if None)."""
        return extract_bindings(parsed if parsed is not None else self.parse(prompt))

    def analyse(self, prompt: str, tokenizer: Any) -> PromptAnalysis:
        """parse -> bind -> align for one prompt (call ``analyse_prompt``, which checks it)."""
        parsed = self.parse(prompt)
        alignment = align_bindings(prompt, self.bindings(prompt, parsed), tokenizer)
        return PromptAnalysis(
            prompt=prompt,
            tokens=alignment.tokens,
            bindings=alignment.bindings,
            parsed=parsed,
            warnings=alignment.warnings,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"


def validate_params(cls: type[Parser], params: Mapping[str, Any] | BaseModel | None) -> BaseModel:
    """``params`` as ``cls.Params``; a bad key or value is a ``ConfigError`` naming the parser."""
    return validate_plugin_params("parser", cls.name, cls.Params, params)


def analyse_prompt(prompt: str, parser: Parser, tokenizer: Any) -> PromptAnalysis:
    """Parse, bind and align one prompt.

    Args:
        prompt: the text (not empty).
        parser: a parser instance (see ``get_parser``).
        tokenizer: the text encoder's tokenizer, with character offsets.

    Returns:
        ``PromptAnalysis`` with every entity in ``bindings`` (with or without modifiers), the
        token view, the parse and the warnings (truncation, no nouns, words without tokens).
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError(f"prompt {prompt!r} is empty; give a text to generate from")
    analysis = parser.analyse(prompt, tokenizer)
    if not analysis.bindings:
        message = f"prompt {prompt!r} has no nouns the {parser.name!r} parser could bind"
        analysis.warnings.append(message + "; nothing to guide")
        logger.info(message)
    return analysis


_CACHE: dict[tuple[type[Parser], str], Parser] = {}
_LOCK = threading.Lock()


def get_parser(
    name: str,
    params: Mapping[str, Any] | BaseModel | None = None,
    registry: Mapping[str, type[Parser]] | Any | None = None,
) -> Parser:
    """The parser ``name`` with ``params``, made once per process and reused.

    Parsers load their models lazily and keep them, so the cache means one spaCy or Stanza
    model per process per ``(name, params)``. Parsers hold no per-prompt state.

    Args:
        name: a registered parser name.
        params: its settings (dict or its ``Params``).
        registry: name -> class, or the plugin manager's ``Registry`` (looked up with
            ``registry.get("parser", name)``); the built-in parsers if ``None``.
    """
    cls = _parser_class(name, registry)
    validated = validate_params(cls, params)
    key = (cls, json.dumps(validated.model_dump(mode="json"), sort_keys=True))
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = cls(validated)
        return _CACHE[key]


def _parser_class(name: str, registry: Mapping[str, type[Parser]] | Any | None) -> type[Parser]:
    if registry is None:
        from ..plugin.manager import make_plugin_manager

        registry = make_plugin_manager(autoload=False).registry
    if not isinstance(registry, Mapping):
        return registry.get("parser", name)  # a ..plugin.manager.Registry
    if name not in registry:
        known = ", ".join(sorted(registry)) or "none"
        raise PluginError(f"unknown parser {name!r}; registered parsers: {known}")
    return registry[name]


def clear_parser_cache() -> None:
    """Forget every cached parser (and with it the loaded models)."""
    with _LOCK:
        _CACHE.clear()
