"""``attnguide`` command line. Each subcommand lives in its own module with
``register(subparsers)``; errors in the user's input end with one line and exit code 2."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import AttnguideError

SUBCOMMANDS: tuple[str, ...] = (
    "attnguide.cli.generate_cmd",
    "attnguide.cli.parse_cmd",
    "attnguide.cli.plugins_cmd",
    "attnguide.cli.recipe_cmds",
    "attnguide.cli.datasets_cmd",
    "attnguide.cli.evaluate_cmd",
    "attnguide.cli.attention_cmd",
    "attnguide.cli.report_cmd",
    "attnguide.cli.toyworld_cmd",
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
    args = parser.parse_args(argv)
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
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("attnguide: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
