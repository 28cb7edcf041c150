"""Unknown options are reported first, with the closest known one.

argparse checks a subcommand's required options before it reports what it did not recognise, so
``attnguide generate --promt "a cat" --out x`` used to end with "the following arguments are
required: --prompt" - true, but it hides the typo. ``reject_unknown_options`` parses once with
nothing required; whatever is then left unrecognised ends the command, naming the nearest option.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Iterator, Sequence


def reject_unknown_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Return when ``parser`` recognises every argument of ``argv`` (required ones may be
    missing: the real parse reports those); else exit through the subcommand's ``error``
    (usage, one error line, exit code 2): ``unrecognized argument --promt (did you mean
    --prompt?)``."""
    relaxed = [a for p in _parsers(parser) for a in p._actions if a.required]
    for action in relaxed:
        action.required = False
    try:
        _, unknown = parser.parse_known_args(list(argv))
    finally:
        for action in relaxed:
            action.required = True
    if not unknown:
        return
    chain = _chain(parser, argv)
    options = [u for u in unknown if u.startswith("-")]
    # a value after an unknown option is unknown too; the option is the mistake to name
    named = [_describe(u, _owner(chain, argv, u)) for u in options] or [repr(u) for u in unknown]
    plural = "s" if len(named) > 1 else ""
    _owner(chain, argv, unknown[0]).error(f"unrecognized argument{plural} {', '.join(named)}")


def _describe(option: str, owner: argparse.ArgumentParser) -> str:
    flag = option.split("=", 1)[0]
    known = [s for a in owner._actions for s in a.option_strings]
    close = difflib.get_close_matches(flag, known, n=1)
    return f"{flag} (did you mean {close[0]}?)" if close else flag


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and every subcommand parser below it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def _chain(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[tuple[int, argparse.ArgumentParser]]:
    """The parsers ``argv`` passes through, each with the index of the word that chose it: the
    program (``-1``), then each subcommand named."""
    chain = [(-1, parser)]
    for index, word in enumerate(argv):
        subs = [a for a in chain[-1][1]._actions if isinstance(a, argparse._SubParsersAction)]
        if not word.startswith("-") and subs and word in subs[0].choices:
            chain.append((index, subs[0].choices[word]))
    return chain


def _owner(chain: list[tuple[int, argparse.ArgumentParser]], argv: Sequence[str],
           word: str) -> argparse.ArgumentParser:
    """The parser that was reading when ``word`` came: options before a subcommand's name
    belong to the parser above it."""
    at = list(argv).index(word) if word in argv else len(argv)
    return [p for start, p in chain if start < at][-1]
