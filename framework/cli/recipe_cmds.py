"""``attnguide run``, ``attnguide validate`` and ``attnguide recipes``: recipes from the command line.

A RECIPE is a shipped name (``quickstart``, see ``attnguide recipes``) or a path to a YAML file;
``KEY=VALUE`` arguments override dotted keys (``sampling.steps=20 losses.0.step_size=10
model=tiny``), their values read as YAML.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import AttnguideError
from .verbosity import add_output_flags, library_output


class _IntermixedParser(argparse.ArgumentParser):
    """Lets flags and KEY=VALUE overrides come in any order (``run r a=1 --quiet b=2``); plain
    argparse stops filling a ``nargs='*'`` positional at the first flag."""

    _inside = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self._inside:
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run a recipe: every cell x prompt x seed, resumable",
                       description="Run a recipe. Finished images are skipped, so rerunning resumes.")
    p.__class__ = _IntermixedParser  # subparsers are built by main's parser class
    p.add_argument("recipe", help="a shipped recipe name or a recipe YAML file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. sampling.steps=20")
    p.add_argument("--dry-run", action="store_true", help="print the resolved recipe and the jobs, run nothing")
    add_output_flags(p)
    p.set_defaults(func=cmd_run)

    v = sub.add_parser("validate", help="check recipes without loading any weights")
    v.add_argument("items", nargs="+", metavar="RECIPE|KEY=VALUE",
                   help="recipes to check; KEY=VALUE items override keys of every recipe")
    v.set_defaults(func=cmd_validate)

    r = sub.add_parser("recipes", help="list the shipped recipes")
    r.add_argument("--json", action="store_true", help="name, file, description and command of each")
    r.set_defaults(func=cmd_recipes)


# -- run ----------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from ..runs.recipe import check_output_dir, load_recipe

    loaded = load_recipe(args.recipe, args.overrides)
    if args.dry_run:
        check_output_dir(loaded, create=False)
        print_dry_run(loaded)
        return 0
    check_output_dir(loaded, create=True)
    library_output(args.verbose)
    from ..runs.runner import run_recipe

    summary = run_recipe(loaded, progress=not args.quiet)
    if summary is None:  # another process of a multi-process run: rank 0 reports
        return 0
    print_summary(summary, loaded)
    return summary.exit_code


def print_dry_run(loaded: Any) -> None:
    from ..results.shared import dump_yaml
    from ..runs.jobs import is_finished, plan_jobs

    print(dump_yaml(loaded.resolved(), f"Resolved from {loaded.source}"), end="")
    jobs = plan_jobs(loaded)
    run_dir = loaded.run_dir
    done = sum(is_finished(j, run_dir, loaded.recipe.save_latents) for j in jobs)
    print(f"# jobs: {len(jobs)} ({len(loaded.cells)} cells x {len(loaded.prompts)} prompts x "
          f"{len(loaded.seeds)} seeds), {done} done, into {run_dir}")
    for job in jobs:
        status = "done" if is_finished(job, run_dir, loaded.recipe.save_latents) else "todo"
        print(f"# {status}  {job.cell.name}/{job.name}.png  seed={job.seed}  {job.prompt!r}")


def print_summary(summary: Any, loaded: Any) -> None:
    run_dir = summary.run_dir
    print(f"{loaded.name}: {summary.written} written, {summary.skipped} skipped, {summary.failed} failed "
          f"in {summary.wall_s:.1f} s on {summary.world_size} process(es)")
    cells = ", ".join(c.name for c in loaded.cells)
    print(f"  images:    {run_dir}/<cell>/<prompt>_s<seed>.png  (cells: {cells})")
    print("  metadata:  next to each image as <prompt>_s<seed>.json "
          "(config, bindings with token positions, per-step losses, timings, content hash)")
    for label, (count, example) in _artifacts(loaded).items():
        print(f"  {label}: {count} file(s), e.g. {example}")
    if summary.grids:
        print(f"  grids:     {run_dir / 'grids'}/ ({len(summary.grids)} PNG, rows = seeds, columns = cells)")
    print(f"  index:     {run_dir / 'results.jsonl'}   recipe: {run_dir / 'recipe.resolved.yaml'}")
    for row in summary.failures[:10]:
        print(f"  FAILED {row['cell']} / {row['prompt']!r} / seed {row['seed']}: {row.get('error')}", file=sys.stderr)
    if summary.failed:
        print(f"  {summary.failed} job(s) failed; rerun the same command to retry them", file=sys.stderr)


_STANDARD_FILES = ("image", "metadata", "latents")


def _artifacts(loaded: Any) -> dict[str, tuple[int, Path]]:
    """Files that callbacks added next to the images (heat maps ...), by kind."""
    from ..runs.jobs import plan_jobs, read_metadata

    found: dict[str, list[Path]] = {}
    for job in plan_jobs(loaded):
        meta_path = job.metadata_path(loaded.run_dir)
        meta = read_metadata(meta_path) or {}
        if meta.get("content_hash") != job.content_hash:
            continue
        for kind, name in (meta.get("files") or {}).items():
            if kind not in _STANDARD_FILES:
                for path in (name if isinstance(name, list) else [name]):
                    found.setdefault(str(kind), []).append(meta_path.parent / str(path))
    labels = {kind: "heat maps" if "heatmap" in kind else kind for kind in found}
    return {f"{labels[kind]:<9}": (len(paths), paths[0]) for kind, paths in found.items()}


# -- validate -----------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace) -> int:
    from ..plugin.manager import make_plugin_manager
    from ..runs.recipe import check_output_dir, load_recipe

    overrides = [item for item in args.items if "=" in item]
    refs = [item for item in args.items if "=" not in item]
    if not refs:
        print("attnguide: error: validate needs at least one recipe", file=sys.stderr)
        return 2
    registry = make_plugin_manager().registry
    status = 0
    for ref in refs:
        try:
            loaded = load_recipe(ref, overrides, registry=registry)
            check_output_dir(loaded, create=False)
        except AttnguideError as exc:
            print(f"attnguide: error: {exc}", file=sys.stderr)
            status = 2
            continue
        images = len(loaded.cells) * len(loaded.prompts) * len(loaded.seeds)
        print(f"ok  {ref}: {len(loaded.cells)} cells x {len(loaded.prompts)} prompts x "
              f"{len(loaded.seeds)} seeds = {images} images -> {loaded.run_dir}")
    return status


# -- recipes ------------------------------------------------------------------------------
def describe_shipped() -> list[dict[str, str]]:
    import yaml

    from ..runs.recipe import shipped_recipes

    rows = []
    for name, path in shipped_recipes().items():
        text = path.read_text(encoding="utf-8")
        first = text.splitlines()[0] if text else ""
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError:
            data = {}
        rows.append({"name": name, "file": str(path), "command": first.lstrip("# ").strip(),
                     "description": str(data.get("description", "")) if isinstance(data, dict) else ""})
    return rows


def cmd_recipes(args: argparse.Namespace) -> int:
    rows = describe_shipped()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(row["name"])
    return 0
