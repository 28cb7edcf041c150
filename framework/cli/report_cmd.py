"""``attnguide report RUN_DIR``: a static HTML page (plus CSV and Markdown) comparing a run's cells."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO


def register(sub: Any) -> None:
    p = sub.add_parser("report", help="write RUN_DIR/report.html, report.csv and report.md",
                       description="A self-contained HTML report of a run: comparison grid per prompt, "
                                   "metrics per cell with confidence intervals (after `attnguide evaluate`), "
                                   "per-step loss curves, attention heat maps and the resolved recipe.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by `attnguide run`")
    p.add_argument("--out", default=None, help="where to write the report (default: RUN_DIR)")
    p.add_argument("--embed", action="store_true", help="embed images in the HTML (one portable file; larger)")
    p.add_argument("--title", default=None, help="page title (default: the run's name)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from ..report import build_report

    out = out or sys.stdout
    report = build_report(args.run_dir, args.out, embed=args.embed, title=args.title)
    print(f"wrote {report.html}, {report.csv.name}, {report.markdown.name}", file=out)
    return 0
