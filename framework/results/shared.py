"""Shared outputs of a run, written by global rank 0 only: resolved recipes and grids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..runs.jobs import Job, is_finished
from ..runs.recipe import LoadedRecipe
from .files import atomic_write, write_png

RESOLVED = "recipe.resolved.yaml"


def dump_yaml(data: dict[str, Any], header: str = "") -> str:
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
    return "".join(f"# {line}\n" for line in header.splitlines()) + body


def write_resolved_recipes(run_dir: Path, loaded: LoadedRecipe) -> None:
    """``recipe.resolved.yaml`` for the run and for each cell (a stand-alone recipe)."""
    overrides = " ".join(loaded.overrides)
    header = (f"Resolved from {loaded.source}{' with ' + overrides if overrides else ''}.\n"
              f"Rerun (skips finished images): attnguide run {run_dir / RESOLVED}")
    _write_text(run_dir / RESOLVED, dump_yaml(loaded.resolved(), header))
    for cell in loaded.cells:
        cell_file = run_dir / cell.name / RESOLVED
        text = dump_yaml(cell.resolved(loaded.prompts, loaded.seeds, loaded.name),
                         f"Cell {cell.name} of {loaded.name}, alone: attnguide run {cell_file}")
        _write_text(cell_file, text)


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_grids(run_dir: Path, jobs: list[Job], loaded: LoadedRecipe) -> list[Path]:
    """One comparison grid per prompt under ``grids/``: rows = seeds, columns = cells."""
    from PIL import Image

    from .grids import comparison_grid

    written = []
    by_key = {job.key: job for job in jobs}
    stems = {job.prompt: job.prompt_stem for job in jobs}
    columns = ["\n".join(f"{k}={v}" for k, v in c.labels.items()) or c.name for c in loaded.cells]
    for prompt in loaded.prompts:
        tiles: list[list[Any]] = []
        for seed in loaded.seeds:
            row = []
            for cell in loaded.cells:
                job = by_key[(cell.name, prompt, seed)]
                path = run_dir / cell.name / f"{job.name}.png"
                ok = is_finished(job, run_dir, loaded.recipe.save_latents) and path.is_file()
                row.append(Image.open(path).convert("RGB") if ok else None)
            tiles.append(row)
        if not any(t is not None for row in tiles for t in row):
            continue
        # 256-pixel tiles: larger images are reduced, small ones (the toy model's 64x64) enlarged
        # with sharp pixels, and column labels get room to be read
        grid = comparison_grid(prompt, columns, [f"seed {s}" for s in loaded.seeds], tiles,
                               tile=256, missing_text="failed or not run")
        written.append(write_png(run_dir / "grids" / f"{stems[prompt]}.png", grid))
    return written
