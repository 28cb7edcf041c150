"""``attnguide evaluate RUN_DIR``: CLIP and BLIP-VQA scores (or the toy-world judge's verdicts) per
image, means with CIs per cell."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO


def register(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="score a run's images (CLIP, BLIP-VQA, toy judge), aggregate per sweep cell",
                       description="Writes RUN_DIR/metrics.jsonl (per image) and RUN_DIR/metrics_summary.json "
                                   "(per cell: mean and 95%% bootstrap interval). See docs/evaluation.md.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by `attnguide run` (or generate)")
    p.add_argument("--metrics", default="auto", help="comma-separated: clip, vqa, toy (the toy-world judge); "
                   "default auto: toy for runs of the toyworld model, clip,vqa for others")
    p.add_argument("--clip-model", default=None, help="CLIP hub id or local directory "
                   "(default openai/clip-vit-base-patch16)")
    p.add_argument("--vqa-model", default=None, help="BLIP-VQA hub id or local directory "
                   "(default Salesforce/blip-vqa-base)")
    p.add_argument("--phrases", choices=("auto", "spacy", "split"), default="auto",
                   help="how prompts are split into noun phrases (default: spacy if installed, else ' and '/' with ')")
    p.add_argument("--clip-template", action="append", default=None, metavar="TEMPLATE",
                   help="text template with {} for the text; repeat to average several (default '{}')")
    p.add_argument("--vqa-template", default=None, help="question with {phrase} (default 'is there {phrase}?')")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> Any:
    from ..metrics.evaluate import EvalSettings

    defaults = EvalSettings()
    device = args.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return EvalSettings(
        metrics=tuple(m.strip() for m in args.metrics.split(",") if m.strip()),
        clip_model=args.clip_model or defaults.clip_model,
        vqa_model=args.vqa_model or defaults.vqa_model,
        phrases=args.phrases,
        clip_templates=tuple(args.clip_template or defaults.clip_templates),
        vqa_template=args.vqa_template or defaults.vqa_template,
        bootstrap_samples=args.bootstrap or defaults.bootstrap_samples,
        seed=args.seed,
        device=device,
    )


def run(args: argparse.Namespace, out: TextIO | None = None, **scorers: Any) -> int:
    """``scorers``: ``clip=``/``vqa=`` instances to use instead of loading models (tests)."""
    from ..metrics.evaluate import evaluate_run

    out = out or sys.stdout
    result = evaluate_run(args.run_dir, settings_from_args(args), progress=not args.quiet, **scorers)
    if args.json:
        print(json.dumps(result.summary, indent=2), file=out)
    else:
        print(format_summary(result.summary), file=out)
        print(f"wrote {', '.join(str(p) for p in result.files)}", file=out)
    return 0


def format_summary(summary: dict[str, Any]) -> str:
    """A plain table: one row per cell, ``mean [low, high]`` per metric."""
    metrics = list(summary["metrics"])
    header = ["cell", "images", *metrics]
    lines = [header]
    for cell, values in summary["cells"].items():
        row = [cell, str(values.get("images", ""))]
        for m in metrics:
            v = values.get(m) or {}
            row.append("-" if v.get("mean") is None else f"{v['mean']:.4f} [{v['ci_low']:.4f}, {v['ci_high']:.4f}]")
        lines.append(row)
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in lines)
