"""``KEY=VALUE`` text, as the command line and method labels write settings.

The one parser for ``--param``, ``--parser-param``, recipe overrides (``sampling.steps=20``)
and toy-world method labels (``syngen:step_size=5``): values are read as YAML, so ``3`` is an
int, ``[0, 0.5]`` a list and ``true`` a bool.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from .errors import ConfigError


def parse_key_value(item: str, what: str, example: str = "KEY=VALUE") -> tuple[str, Any]:
    """``"a=[1, 2]"`` -> ``("a", [1, 2])``; a ``ConfigError`` naming ``what`` (the flag or
    label it came from) when there is no ``=``, no key, or the value is not YAML. An empty value
    reads as ``""``."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{what} {item!r} must look like KEY=VALUE, e.g. {example}")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())
        raise ConfigError(f"{what} {item!r}: the value is not valid YAML ({problem})") from None
    return key.strip(), value


def parse_key_values(items: Iterable[str], what: str, example: str = "KEY=VALUE") -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (``parse_key_value`` on each; a later key
    wins)."""
    return dict(parse_key_value(item, what, example) for item in items)
