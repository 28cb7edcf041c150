"""``attnguide datasets list|show|dvmp``: the built-in prompt sets, and DVMP prompts on demand."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any, TextIO


def register(sub: Any) -> None:
    p = sub.add_parser("datasets", help="list, show or generate evaluation prompt sets",
                       description="Built-in prompt sets (sources and licences: docs/datasets.md).")
    actions = p.add_subparsers(dest="datasets_command", metavar="ACTION")
    actions.required = True

    ls = actions.add_parser("list", help="every prompt set with its size and source")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=cmd_list)

    show = actions.add_parser("show", help="print the prompts of a set, one per line")
    show.add_argument("name", help="a set name from `attnguide datasets list`")
    show.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    show.add_argument("--seed", type=int, default=None, help="shuffle with this seed before --limit")
    show.add_argument("--json", action="store_true", help="one JSON object per line with category, subjects, phrases")
    show.set_defaults(func=cmd_show)

    dvmp = actions.add_parser("dvmp", help="generate DVMP prompts (SynGen's multi-modifier prompts)")
    dvmp.add_argument("--n", type=int, default=200, help="number of prompts (default 200)")
    dvmp.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    dvmp.add_argument("--max-phrases", type=int, default=3, help="phrases per prompt: 1 to this (default 3)")
    dvmp.add_argument("--json", action="store_true", help="one JSON object per line with phrases and subjects")
    dvmp.set_defaults(func=cmd_dvmp)


def cmd_list(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from ..datasets import list_prompt_sets

    out = out or sys.stdout
    rows: list[dict[str, Any]] = [{"name": s.name, "size": len(s.read()), "licence": s.licence, "source": s.source,
             "description": s.description} for s in list_prompt_sets()]
    if args.json:
        print(json.dumps(rows, indent=2), file=out)
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  {r['size']:>5}  {r['licence']:<8}  {r['description']}", file=out)
        print(f"{'':<{width}}         source: {r['source']}", file=out)
    return 0


def cmd_show(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from ..datasets import load_prompt_items

    out = out or sys.stdout
    for item in load_prompt_items(args.name, args.limit, args.seed):
        print(json.dumps(dataclasses.asdict(item)) if args.json else item.prompt, file=out)
    return 0


def cmd_dvmp(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from ..datasets import generate_dvmp

    out = out or sys.stdout
    for prompt in generate_dvmp(args.n, args.seed, args.max_phrases):
        if args.json:
            row = {"prompt": prompt.text, "phrases": [p.text for p in prompt.phrases],
                   "subjects": list(prompt.subjects), "num_modifiers": prompt.num_modifiers}
            print(json.dumps(row), file=out)
        else:
            print(prompt.text, file=out)
    return 0
