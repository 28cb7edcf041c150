"""``attnguide parse PROMPT``: show what the parse -> bind -> align station makes of a prompt.

    attnguide parse "a pink sunflower and a yellow flamingo"
    attnguide parse "a red crown" --parser manual --bindings '{"crown": ["red"]}' --json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import TYPE_CHECKING, Any, TextIO

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..types import PromptAnalysis


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``parse`` subcommand to ``subparsers`` (from ``add_subparsers``)."""
    cmd: argparse.ArgumentParser = subparsers.add_parser(
        "parse",
        help="show a prompt's parse, bindings and token positions",
        description="Parse a prompt, bind modifiers to nouns and align them to token positions.",
    )
    cmd.add_argument("prompt", help="the prompt text")
    cmd.add_argument("--parser", default="spacy", help="a registered parser: spacy, stanza, manual, or a plugin's")
    cmd.add_argument(
        "--parser-model",
        default=None,
        metavar="NAME",
        help="spaCy model (spacy) or model directory (stanza)",
    )
    cmd.add_argument(
        "--bindings",
        default=None,
        metavar="JSON",
        help='manual parser bindings: [2, 5], ["cat", "frog"] or {"crown": ["red"]}',
    )
    cmd.add_argument("--model", default="tiny", help="whose tokenizer: tiny or a model id/path")
    cmd.add_argument("--json", action="store_true", help="print JSON instead of tables")
    cmd.set_defaults(func=run)
    return cmd


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Analyse ``args.prompt`` and print it; errors are raised as ``AttnguideError``."""
    out = out or sys.stdout
    from ..models.loading import load_tokenizer
    from ..plugin.manager import make_plugin_manager
    from ..prompts.parsing import analyse_prompt, get_parser

    registry = make_plugin_manager().registry
    parser = get_parser(args.parser, _parser_params(args, registry), registry)
    analysis = analyse_prompt(args.prompt, parser, load_tokenizer(args.model))
    if args.json:
        out.write(json.dumps(to_json(analysis, args.parser), ensure_ascii=False, indent=2) + "\n")
        for warning in analysis.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    else:
        model = getattr(parser, "model_name", None)
        out.write(render(analysis, f"{args.parser} ({model})" if model else args.parser))
    return 0


def _parser_params(args: argparse.Namespace, registry: Any) -> dict[str, Any]:
    cls = registry.get("parser", args.parser)
    params: dict[str, Any] = {}
    if args.parser_model is not None:
        if cls.model_param is None:
            raise ConfigError(f"--parser-model does not apply to the {args.parser!r} parser")
        params[cls.model_param] = args.parser_model
    if getattr(args, "bindings", None) is not None:
        if args.parser != "manual":
            raise ConfigError("--bindings is for --parser manual")
        try:
            params["bindings"] = json.loads(args.bindings)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--bindings is not JSON: {exc}") from None
    return params


def to_json(analysis: PromptAnalysis, parser: str) -> dict[str, Any]:
    """``{"prompt", "parser", "words", "bindings"}`` - the ``--json`` output."""
    words = analysis.parsed.words if analysis.parsed else ()
    return {
        "prompt": analysis.prompt,
        "parser": parser,
        "words": [dataclasses.asdict(w) for w in words],
        "bindings": [b.to_dict() for b in analysis.bindings],
    }


def render(analysis: PromptAnalysis, parser: str) -> str:
    """Readable tables: words (tags, heads), bindings (with positions), tokens (pieces)."""
    lines = [f"prompt: {analysis.prompt}", f"parser: {parser}", "", "words"]
    words = analysis.parsed.words if analysis.parsed else ()
    rows: list[tuple[str, ...]] = [("#", "word", "upos", "deprel", "head")]
    for w in words:
        head = f"{w.head} {words[w.head].text}" if w.head >= 0 else "-"
        rows.append((str(w.index), w.text, w.upos, w.deprel, head))
    lines += _table(rows) if words else ["  (none)"]
    lines += ["", "bindings"]
    for b in analysis.bindings:
        entity = f"{b.entity.text} {list(b.entity.tokens)}"
        mods = ", ".join(f"{m.text} {list(m.tokens)}" for m in b.modifiers)
        lines.append(f"  {entity} <- {mods}" if mods else f"  {entity}")
    if not analysis.bindings:
        lines.append("  (none)")
    lines += ["", "tokens"]
    owner = _owners(analysis)
    rows = [("pos", "piece", "word")]
    for pos, piece in enumerate(analysis.tokens.pieces):
        rows.append((str(pos), piece, owner.get(pos, "")))
    lines += _table(rows)
    if analysis.warnings:
        lines += ["", "warnings"] + [f"  {w}" for w in analysis.warnings]
    return "\n".join(lines) + "\n"


def _owners(analysis: PromptAnalysis) -> dict[int, str]:
    """Token position -> the binding word on it (entity or modifier)."""
    owner: dict[int, str] = {}
    for b in analysis.bindings:
        owner.update({p: f"{b.entity.text} (entity)" for p in b.entity.tokens})
        for m in b.modifiers:
            owner.update({p: f"{m.text} (of {b.entity.text})" for p in m.tokens})
    return owner


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
