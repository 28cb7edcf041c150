"""The jobs of a recipe run (cell x prompt x seed), their content hashes, and the results index.

A job is finished when its metadata JSON exists, carries the job's content hash, and every file
it lists is on disk: ``save_image`` writes the JSON last and every file atomically, so a killed
run never leaves a job that looks finished but is not.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..results.files import atomic_write, slugify
from .recipe import Cell, LoadedRecipe

RESULTS = "results.jsonl"


@dataclass(frozen=True)
class Job:
    """One image: a cell's settings, a prompt and a seed."""

    index: int
    cell: Cell
    prompt: str
    prompt_stem: str  # file-name stem shared by the prompt's images and grid
    seed: int
    content_hash: str

    @property
    def name(self) -> str:
        return f"{self.prompt_stem}_s{self.seed}"

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.cell.name, self.prompt, self.seed)

    def metadata_path(self, run_dir: Path) -> Path:
        return run_dir / self.cell.name / f"{self.name}.json"


def content_hash(config: dict[str, Any], prompt: str, seed: int) -> str:
    """sha256 of the canonical JSON of what decides an image's pixels."""
    blob = json.dumps({"config": config, "prompt": prompt, "seed": int(seed)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def prompt_stems(prompts: list[str]) -> dict[str, str]:
    """A file-name stem per prompt; prompts whose slugs collide get a short hash appended."""
    slugs = {p: slugify(p) for p in prompts}
    counts: dict[str, int] = {}
    for slug in slugs.values():
        counts[slug] = counts.get(slug, 0) + 1
    return {p: s if counts[s] == 1 else f"{s}_{hashlib.sha1(p.encode()).hexdigest()[:6]}" for p, s in slugs.items()}


def plan_jobs(loaded: LoadedRecipe) -> list[Job]:
    """Every job, cell-major, then prompt, then seed. The order is the same in every process."""
    stems = prompt_stems(loaded.prompts)
    jobs: list[Job] = []
    for cell in loaded.cells:
        config = cell.hashed_config()
        for prompt in loaded.prompts:
            for seed in loaded.seeds:
                jobs.append(Job(len(jobs), cell, prompt, stems[prompt], seed, content_hash(config, prompt, seed)))
    return jobs


def shard(jobs: list[Job], rank: int, world_size: int) -> list[Job]:
    """The jobs of process ``rank`` of ``world_size``: every ``world_size``-th, from ``rank``."""
    return jobs[rank::world_size]


def read_metadata(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or ``None`` when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_finished(job: Job, run_dir: Path, save_latents: bool = False) -> bool:
    meta = read_metadata(job.metadata_path(run_dir))
    if meta is None or meta.get("content_hash") != job.content_hash:
        return False
    files = meta.get("files") or {}
    if save_latents and "latents" not in files:
        return False
    folder = job.metadata_path(run_dir).parent
    return all((folder / name).is_file() for name in files.values())


def result_row(job: Job, run_dir: Path, status: str, **fields: Any) -> dict[str, Any]:
    cell_dir = run_dir / job.cell.name
    return {
        "cell": job.cell.name,
        "prompt": job.prompt,
        "seed": job.seed,
        "status": status,
        "image": str((cell_dir / f"{job.name}.png").relative_to(run_dir)),
        "metadata": str(job.metadata_path(run_dir).relative_to(run_dir)),
        "content_hash": job.content_hash,
        **fields,
    }


def journal_path(run_dir: Path, rank: int, world_size: int) -> Path:
    """Where a process appends its rows while it runs: ``results.jsonl`` when alone,
    ``results.rank<k>.jsonl`` when several processes share the run."""
    return run_dir / (RESULTS if world_size == 1 else f"results.rank{rank}.jsonl")


def read_result_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``results*.jsonl`` file; lines cut short by a killed process are skipped."""
    rows: list[dict[str, Any]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut short by a killed process
        if isinstance(row, dict) and {"cell", "prompt", "seed"} <= set(row):
            rows.append(row)
    return rows


def merge_results(run_dir: Path, jobs: list[Job], save_latents: bool = False) -> list[dict[str, Any]]:
    """Rewrite ``results.jsonl``: one row per image, the latest attempt winning, in job order.

    Reads the previous index and every ``results.rank<k>.jsonl``, then removes the latter.
    Finished images with no row (an index lost or deleted) get one rebuilt from their metadata.
    """
    rank_files = sorted(run_dir.glob("results.rank*.jsonl"))
    latest: dict[tuple[str, str, int], dict[str, Any]] = {}
    for path in [run_dir / RESULTS, *rank_files]:
        for row in read_result_rows(path):
            latest[(row["cell"], row["prompt"], int(row["seed"]))] = row
    for job in jobs:
        if job.key not in latest and is_finished(job, run_dir, save_latents):
            meta = read_metadata(job.metadata_path(run_dir)) or {}
            latest[job.key] = result_row(job, run_dir, "ok", wall_time_s=meta.get("wall_time_s"))
    order = {job.key: job.index for job in jobs}
    rows = sorted(latest.values(), key=lambda r: order.get((r["cell"], r["prompt"], int(r["seed"])), math.inf))
    text = "".join(json.dumps(row) + "\n" for row in rows)
    atomic_write(run_dir / RESULTS, lambda f: f.write(text.encode("utf-8")))
    for path in rank_files:
        path.unlink(missing_ok=True)
    return rows
