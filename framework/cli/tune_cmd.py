"""``attnguide tune --method syngen --param step_size=log:0.5..20:6 --out runs/tune``: choose a
loss plugin's parameters on a calibration split against a metric and report them on a disjoint
held-out split, paired with ``none`` (docs/tune.md). Resumable: rerun the same command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..models.toy_names import is_toy_model
from .verbosity import add_output_flags, library_output

TOY_PROMPTS = "toyworld"


def register(sub: Any) -> None:
    p = sub.add_parser("tune", help="choose a method's parameters on a calibration split, report them held out",
                       description="Grid (or seeded random) search over a loss plugin's parameters. Every scored "
                                   "image is logged to OUT/evaluations.jsonl, so rerunning resumes.")
    p.add_argument("--method", default=None,
                   help="a loss plugin or toy-world method, with fixed overrides as NAME[:KEY=VALUE...] (syngen)")
    p.add_argument("--ablation", default=None, metavar="FILE|NAME",
                   help="instead of --method: tune every method of an ablation file (YAML {methods: {METHOD: "
                        "{PARAM: VALUES}}}) on one calibration split, report all on one held-out split against "
                        "one none baseline; 'toyworld' is the shipped one")
    p.add_argument("--only", default=None, metavar="METHODS",
                   help="with --ablation: run only these of its methods (comma-separated labels as the file "
                        "writes them, or plugin names)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUES",
                   help="a parameter to tune: 1,3,10 | log:LOW..HIGH:N | lin:LOW..HIGH:N | [[0, 0.5], [0, 1]] "
                        "(repeatable; the grid is every combination)")
    p.add_argument("--space", default=None, help="a YAML search space {method: NAME, params: {NAME: VALUES}}; "
                                                 "--param overrides its entries")
    p.add_argument("--model", default="toyworld", help="model to tune on (default toyworld)")
    p.add_argument("--metric", default=None,
                   help="toy_binding, clip or clip_min_object (default: toy_binding on toyworld, else clip)")
    p.add_argument("--clip-model", default=None, help="CLIP model for the clip metrics (default openai ViT-B/16)")
    p.add_argument("--prompts", default=TOY_PROMPTS,
                   help="'toyworld' (two-object toy prompts, the default), a prompt file (.txt/.csv/.jsonl) "
                        "or a built-in prompt set (attnguide datasets list)")
    p.add_argument("--calibration", type=int, default=50, help="calibration samples (default 50)")
    p.add_argument("--heldout", type=int, default=100, help="held-out samples (default 100)")
    p.add_argument("--seed", type=int, default=0, help="split seed and first generation seed (default 0)")
    p.add_argument("--search", choices=["grid", "random"], default="grid", help="grid (default) or random")
    p.add_argument("--trials", type=int, default=None, help="grid points a random search evaluates")
    p.add_argument("--search-seed", type=int, default=0, help="seed of the random search (default 0)")
    p.add_argument("--steps", type=int, default=50, help="denoising steps (default 50)")
    p.add_argument("--guidance-scale", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    p.add_argument("--height", type=int, default=None, help="image height (default: the model's)")
    p.add_argument("--width", type=int, default=None, help="image width (default: the model's)")
    p.add_argument("--scheduler", default=None, help="scheduler short name (default: the model's)")
    p.add_argument("--parser", default="spacy", help="prompt parser for bindings (default spacy)")
    p.add_argument("--batch-size", type=int, default=8, help="images per engine call (default 8)")
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--out", required=True, help="folder for evaluations.jsonl (resumable) and tune.json")
    p.add_argument("--write-recipe", default=None, metavar="PATH", help="write a recipe with the chosen values")
    p.add_argument("--json", action="store_true", help="print tune.json instead of the table")
    add_output_flags(p)
    p.set_defaults(func=run_tune)


def run_tune(args: argparse.Namespace) -> int:
    from ..plugin.manager import make_plugin_manager
    from ..tune.method import check_space, method_specs
    from ..tune.report import recipe, table, write_recipe
    from ..tune.search import tune
    from ..tune.space import Dimension, merge_dimensions, parse_param, read_space_file
    from ..tune.splits import make_splits

    if (args.method is None) == (args.ablation is None):
        raise ConfigError("give --method NAME (one method) or --ablation FILE (several), not both or neither")
    if args.only is not None and args.ablation is None:
        raise ConfigError("--only chooses methods of an --ablation file")
    if args.ablation is not None:
        return _run_ablation(args)
    method: str = args.method
    dims: list[Dimension] = []
    if args.space is not None:
        named, dims = read_space_file(args.space)
        if named is not None and named.split(":")[0] != method.split(":")[0]:
            raise ConfigError(f"--space {args.space} is for method {named!r}, but --method is {method!r}")
    dims = merge_dimensions(dims, [parse_param(item) for item in args.param])
    pm = make_plugin_manager()
    check_space(method_specs(method, pm.registry), dims, pm.registry)  # before any weights load
    calibration, heldout = make_splits(_prompts(args), args.calibration, args.heldout, args.seed)
    metric, engine, sampling, settings = _setup(args, pm)
    result = tune(engine, method, dims, metric, calibration, heldout, out_dir=args.out, search=args.search,
                  trials=args.trials, search_seed=args.search_seed, batch_size=args.batch_size,
                  progress=not args.quiet, settings=settings, **sampling)
    print(json.dumps(result, indent=2, default=str) if args.json else table(result))
    if args.write_recipe:
        path = Path(args.write_recipe)
        name = "".join(c if c.isalnum() or c in "_.+-" else "_" for c in path.stem).lstrip("_.+-") or "tuned"
        write_recipe(path, recipe(result, model=args.model, scheduler=args.scheduler, parser=args.parser,
                                  name=name))
        print(f"wrote {path} (run it with: attnguide run {path})", file=sys.stderr)
    return 0


def _setup(args: argparse.Namespace, pm: Any) -> tuple[Any, Any, dict[str, Any], dict[str, Any]]:
    """``(metric, engine, sampling, settings)`` for a tune or ablation run: the metric is checked
    before the model loads; ``settings`` is what else the scores depend on (for the log's hash)."""
    from ..engine.engine import Engine
    from ..engine.runtime import RuntimeConfig
    from ..models.loading import load_pipeline
    from ..tune.objective import METRICS, builtin_metric

    metric_name = args.metric or ("toy_binding" if is_toy_model(args.model) else "clip")
    if metric_name not in METRICS:
        raise ConfigError(f"unknown --metric {metric_name!r}; choose from {', '.join(METRICS)}")
    metric = builtin_metric(metric_name, clip_model=args.clip_model)
    library_output(args.verbose)
    engine = Engine(load_pipeline(args.model, scheduler=args.scheduler), parser=args.parser, plugin_manager=pm,
                    runtime=RuntimeConfig(accelerator=args.accelerator))
    sampling: dict[str, Any] = {"steps": args.steps, "guidance_scale": args.guidance_scale}
    sampling.update({k: v for k, v in (("height", args.height), ("width", args.width)) if v is not None})
    settings = {"model": args.model, "scheduler": args.scheduler, "parser": args.parser, "clip_model": args.clip_model}
    return metric, engine, sampling, settings


def _run_ablation(args: argparse.Namespace) -> int:
    from ..plugin.manager import make_plugin_manager
    from ..tune.ablation import ablation_table, read_ablation, run_ablation, select_entries
    from ..tune.method import check_space, method_specs
    from ..tune.splits import make_splits

    for flag in ("param", "space", "write_recipe"):
        if getattr(args, flag):
            raise ConfigError(f"--{flag.replace('_', '-')} tunes one method; an --ablation file holds every "
                              "method's space")
    if args.search != "grid" or args.trials is not None:
        raise ConfigError("an --ablation searches every method's whole grid; --search random and --trials are "
                          "for one method")
    entries = read_ablation(args.ablation)
    if args.only is not None:
        entries = select_entries(entries, args.only, args.ablation)
    pm = make_plugin_manager()
    for entry in entries:  # every space is checked before any weights load
        check_space(method_specs(entry.label, pm.registry), list(entry.dimensions), pm.registry)
    calibration, heldout = make_splits(_prompts(args), args.calibration, args.heldout, args.seed)
    metric, engine, sampling, settings = _setup(args, pm)
    result = run_ablation(engine, entries, metric, calibration, heldout, out_dir=args.out,
                          batch_size=args.batch_size, progress=not args.quiet, settings=settings, **sampling)
    print(json.dumps(result, indent=2, default=str) if args.json else ablation_table(result))
    return 0


def _prompts(args: argparse.Namespace) -> list[str]:
    """The prompt pool both splits are drawn from."""
    if args.prompts == TOY_PROMPTS:
        from ..tune.splits import toy_prompts

        return toy_prompts(args.calibration + args.heldout, args.seed)
    from ..runs.prompts import load_prompts
    from ..runs.schema import PromptSource

    source = PromptSource(file=args.prompts) if Path(args.prompts).exists() else PromptSource(set=args.prompts)
    return load_prompts(source, Path.cwd(), f"--prompts {args.prompts}")
