"""``attnguide`` command line. Each subcommand lives in its own module with
``register(subparsers)``; errors in the user's input or environment end with one line
``attnguide: error: ...`` and the error's exit code (2 bad input, 3 a run stopped on a disk error,
4 the run folder is in use; ``attnguide run`` exits 1 when images failed)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import AttnguideError
from .unknown_options import reject_unknown_options

SUBCOMMANDS: tuple[str, ...] = (
    "attnguide.cli.generate_cmd",
    "attnguide.cli.parse_cmd",
    "attnguide.cli.plugins_cmd",
    "attnguide.cli.recipe_cmds",
    "attnguide.cli.datasets_cmd",
    "attnguide.cli.evaluate_cmd",
    "attnguide.cli.attention_cmd",
    "attnguide.cli.explore_cmd",
    "attnguide.cli.report_cmd",
    "attnguide.cli.toyworld_cmd",
    "attnguide.cli.tune_cmd",
)

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnguide",
        description="Test-time attention guidance for text-to-image diffusion models.",
    )
    parser.add_argument("--version", action="version", version=f"attnguide {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMANDS:
        importlib.import_module(module_name).register(sub)
    return parser


def _quiet_libraries() -> None:
    """Library chatter (optional torchvision, accelerate hints) is not the user's problem."""
    import os
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=FutureWarning)


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_libraries()
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    reject_unknown_options(parser, words)  # before argparse's "required" check hides a typo
    args = parser.parse_args(words)
    logging.basicConfig(level=logging.INFO if not getattr(args, "quiet", False) else logging.WARNING,
                        format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except AttnguideError as exc:
        if args.debug:
            raise
        print(f"attnguide: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("attnguide: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
