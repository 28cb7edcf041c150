"""Run a loaded recipe: jobs sharded across Fabric processes, resumable, one image per job.

A process generates its jobs in batches of ``runtime.batch_size`` images of one cell (one
engine call, batched guidance), and writes and journals each image on its own.

Every process (``fabric.launch`` starts them for ``runtime.devices > 1`` or several nodes) plans
the same job list, skips finished images, takes every ``world_size``-th pending job from its
``global_rank``, and appends a row per job to its own journal. Rank 0 alone writes what is
shared: the resolved recipes before the jobs, and after all processes are done the merged
``results.jsonl``, the comparison grids and the summary.

Rank 0 holds the run folder's lock (``lock.py``) from before its first write until after the
summary, so no other run writes there meanwhile. A disk error no later image can avoid (a full
disk, a read-only file system, no permission in the run folder) stops a process's sweep at its
first image, and the run ends with a one-line ``RunIOError`` naming the file (with several
processes, once each has stopped or finished). Finished images stay valid; rerunning resumes.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..engine.runtime import kept_threads, make_fabric, pin_threads
from ..errors import AttnguideError, RunIOError
from ..results.files import append_jsonl, atomic_write, disk_fault, write_json
from ..results.shared import write_grids, write_resolved_recipes
from .jobs import Job, is_finished, journal_path, merge_results, plan_jobs, result_row, shard
from .lock import RunLock
from .recipe import LoadedRecipe

log = logging.getLogger(__name__)
EXIT_OK, EXIT_FAILED_JOBS = 0, 1
_DONE_MARKER = "results.rank{rank}.done.json"
_WAIT_POLL_S = 0.5


@dataclass
class RunSummary:
    """What one ``attnguide run`` did, over all processes."""

    run_dir: Path
    total: int = 0
    written: int = 0
    skipped: int = 0
    failed: int = 0
    wall_s: float = 0.0
    world_size: int = 1
    failures: list[dict[str, Any]] = field(default_factory=list)
    grids: list[Path] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED_JOBS if self.failed else EXIT_OK


def run_recipe(loaded: LoadedRecipe, *, progress: bool = True, report: Any = print) -> RunSummary | None:
    """Run every job of ``loaded``; returns the summary on global rank 0, ``None`` elsewhere.

    The run directory must already be checked writable (``check_output_dir(create=True)``).
    Each process computes at ``runtime.threads`` torch threads; this one, when the run ends,
    sets back the count (and ``OMP_NUM_THREADS``) it had, so a notebook calling this keeps its own.
    """
    fabric = make_fabric(loaded.recipe.runtime)
    for name in ("lightning.fabric", "lightning.pytorch"):  # after lightning's import sets them; the
        logging.getLogger(name).setLevel(logging.WARNING)  # summary says how many processes ran
    work = functools.partial(_run_pinned, loaded=loaded, progress=progress, report=report)
    with kept_threads():
        summary: RunSummary | None = fabric.launch(work)
    return summary


def _run_pinned(fabric: Any, *, loaded: LoadedRecipe, progress: bool, report: Any) -> RunSummary | None:
    """``_run_on_rank`` at ``runtime.threads`` torch threads, set in each process once launched:
    after Lightning's launcher chose its own count (cores / processes)."""
    pin_threads(loaded.recipe.runtime.threads)
    return _run_on_rank(fabric, loaded=loaded, progress=progress, report=report)


def _run_on_rank(fabric: Any, *, loaded: LoadedRecipe, progress: bool, report: Any) -> RunSummary | None:
    """One process's share. Global rank 0 takes the lock and cleans up before any process lists
    what is done, and releases it when the run ends, also on an error or Ctrl-C."""
    started = time.perf_counter()
    lock: RunLock | None = None
    try:
        failure: Exception | None = None
        if fabric.is_global_zero:
            try:
                lock = RunLock.acquire(loaded.run_dir)
                _prepare(loaded.run_dir, loaded)
            except (OSError, AttnguideError) as exc:
                failure = exc
        failure = fabric.broadcast(failure, src=0)  # when rank 0 cannot start, no process does
        if failure is not None:
            if fabric.is_global_zero:
                raise failure
            return None  # rank 0 reports it, once (a process that fails gets every process killed)
        return _run_jobs(fabric, loaded, progress, report, started)
    except OSError as exc:
        raise _stopped_by(exc, loaded.run_dir) from exc
    finally:
        if lock is not None:
            lock.release()


def _run_jobs(fabric: Any, loaded: LoadedRecipe, progress: bool, report: Any, started: float) -> RunSummary | None:
    """List what is done, run this process's shard, and on rank 0 gather all and finish."""
    from .engine_cache import EngineCache

    rank, world = fabric.global_rank, fabric.world_size
    run_dir, save_latents = loaded.run_dir, loaded.recipe.save_latents
    jobs = plan_jobs(loaded)
    pending = [job for job in jobs if not is_finished(job, run_dir, save_latents)]
    if fabric.is_global_zero:
        report(f"{loaded.name}: {len(jobs)} images ({len(loaded.cells)} cells x {len(loaded.prompts)} prompts x "
               f"{len(loaded.seeds)} seeds), {len(jobs) - len(pending)} already done, {world} process(es) -> {run_dir}")
    fabric.barrier()  # nobody writes an image before every process has listed what is done
    mine = _in_model_order(shard(pending, rank, world))
    engines = EngineCache(fabric, runtime=loaded.recipe.runtime)
    counts = {"written": 0, "failed": 0, "skipped": 0 if rank else len(jobs) - len(pending)}
    try:
        _execute(mine, engines, run_dir, journal_path(run_dir, rank, world), loaded, rank, world,
                 progress and fabric.is_global_zero, counts)
        error = None
    except OSError as exc:
        if world == 1:
            raise
        error = exc  # rank 0 raises it (or reads it in the done-marker) once every process is done
    if world > 1:
        if not fabric.is_global_zero:
            reported = None if error is None else str(_stopped_by(error, run_dir))
            write_json(run_dir / _DONE_MARKER.format(rank=rank), {**counts, "error": reported})
            return None
        counts = _wait_for_ranks(run_dir, world, counts, error)
    return _finish(loaded, jobs, counts, time.perf_counter() - started, world)


def _finish(loaded: LoadedRecipe, jobs: list[Job], counts: dict[str, int], wall_s: float, world: int) -> RunSummary:
    """Rank 0, once every process is done: the merged index, the grids and the summary."""
    run_dir = loaded.run_dir
    rows = merge_results(run_dir, jobs, loaded.recipe.save_latents)
    grids = write_grids(run_dir, jobs, loaded)
    keys = {job.key for job in jobs}
    failures = [r for r in rows if r.get("status") == "failed" and (r["cell"], r["prompt"], int(r["seed"])) in keys]
    summary = RunSummary(run_dir, len(jobs), counts["written"], counts["skipped"], counts["failed"],
                         wall_s, world, failures, grids)
    _write_summary(summary)
    return summary


def _stopped_by(exc: OSError, run_dir: Path) -> RunIOError:
    """The one-line error for a run stopped by ``exc``: the file, the cause, what to do."""
    where = exc.filename if isinstance(exc.filename, str) else str(run_dir)
    cause = exc.strerror or str(exc)
    fix = {errno.ENOSPC: "free some space", getattr(errno, "EDQUOT", errno.ENOSPC): "free some space",
           errno.EROFS: "make the file system writable", errno.EACCES: "make the folder writable",
           errno.EPERM: "make the folder writable"}.get(exc.errno or 0, "fix the cause")
    return RunIOError(f"{where}: {cause}; the run stopped, the images finished so far are kept: "
                      f"{fix} and rerun the same command to resume")


def _prepare(run_dir: Path, loaded: LoadedRecipe) -> None:
    """Rank 0, holding the lock: no other run writes here, so every temp file and done-marker
    left is a killed run's."""
    for stale in [*run_dir.glob(_DONE_MARKER.format(rank="*")), *run_dir.glob("*/.*.tmp"), *run_dir.glob(".*.tmp")]:
        stale.unlink(missing_ok=True)  # never taken as results
    write_resolved_recipes(run_dir, loaded)


def _in_model_order(jobs: list[Job]) -> list[Job]:
    """Jobs grouped by model weights (stable), so each process loads each model once."""
    first: dict[str, int] = {}
    for job in jobs:
        first.setdefault(_weights_key(job), len(first))
    return sorted(jobs, key=lambda job: first[_weights_key(job)])


def _weights_key(job: Job) -> str:
    model = job.cell.recipe.model
    return json.dumps([model.id, model.dtype, model.config])


def _execute(jobs: list[Job], engines: Any, run_dir: Path, journal: Path, loaded: LoadedRecipe,
             rank: int, world: int, progress: bool, counts: dict[str, int]) -> None:
    """Run ``jobs``, journal a row for each and count them into ``counts`` (kept when a disk
    error stops the sweep). With ``progress``, a bar counts the images and, under it while a
    batch is made, the engine's bar counts its denoising steps (so a slow image still moves)."""
    desc = loaded.name if world == 1 else f"{loaded.name} rank 0/{world}"
    with tqdm(total=len(jobs), desc=desc, unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for batch in batches(jobs, loaded.recipe.runtime.batch_size):
            bar.set_postfix_str(batch[0].cell.name, refresh=False)
            for job, row in zip(batch, _run_batch(batch, engines, run_dir, loaded, rank, steps=progress)):
                append_jsonl(journal, row)
                counts["written" if row["status"] == "ok" else "failed"] += 1
                if row["status"] != "ok":
                    bar.write(f"failed: {job.cell.name} / {job.prompt!r} / seed {job.seed}: {row['error']}")
                bar.update(1)


def batches(jobs: list[Job], size: int) -> list[list[Job]]:
    """Consecutive jobs of one cell (same model and settings), at most ``size`` per batch."""
    out: list[list[Job]] = []
    for job in jobs:
        if out and len(out[-1]) < size and out[-1][0].cell.name == job.cell.name:
            out[-1].append(job)
        else:
            out.append([job])
    return out


def _run_batch(batch: list[Job], engines: Any, run_dir: Path, loaded: LoadedRecipe, rank: int,
               steps: bool = False) -> list[dict[str, Any]]:
    """One row per job. A batch that fails is run again one image at a time, so one bad image
    costs only itself and its error names it. ``steps``: show the engine's denoising-step bar."""
    if len(batch) == 1:
        return [_generate_and_write(batch, engines, run_dir, loaded, rank, steps=steps)[0]]
    try:
        return _generate_and_write(batch, engines, run_dir, loaded, rank, raise_errors=True, steps=steps)
    except Exception as exc:  # noqa: BLE001 - retried per image below, where each error is recorded
        if disk_fault(exc, run_dir) is not None:
            raise
        log.warning("a batch of %d images failed; running them one at a time", len(batch))
        return [_generate_and_write([job], engines, run_dir, loaded, rank, steps=steps)[0] for job in batch]


def _generate_and_write(batch: list[Job], engines: Any, run_dir: Path, loaded: LoadedRecipe, rank: int,
             raise_errors: bool = False, steps: bool = False) -> list[dict[str, Any]]:
    """Generate ``batch`` (jobs of one cell) in one engine call and write each image; ``steps``
    shows the engine's bar of denoising steps, nested under the images bar while it runs."""
    from ..results.images import save_image

    started = time.perf_counter()
    cell, recipe = batch[0].cell, batch[0].cell.recipe
    try:
        engine, load_s = engines.engine(recipe)
        prompts = list(dict.fromkeys(job.prompt for job in batch))
        analyses = [engines.analysis(engine, recipe, p) for p in prompts] if (cell.losses or cell.callbacks) else None
        gen_start = time.perf_counter()
        result = engine.generate([job.prompt for job in batch], [job.seed for job in batch], losses=cell.losses,
                                 callbacks=cell.callbacks, sampling=recipe.sampling, analyses=analyses, progress=steps)
        generate_s = time.perf_counter() - gen_start
        rows = []
        for k, job in enumerate(batch):
            extra = {
                "recipe": loaded.name,
                "recipe_file": loaded.source,
                "cell": cell.name,
                "cell_labels": cell.labels,
                "config": cell.hashed_config(),
                "content_hash": job.content_hash,
                "model": recipe.model.id,
                "rank": rank,
                "batch_size": len(batch),
                "job_timings": {"engine_load_s": load_s, "generate_s": generate_s / len(batch)},
                "wall_time_s": (time.perf_counter() - started) / len(batch),
            }
            paths = save_image(result, k, run_dir / cell.name, job.name, extra=extra,
                               save_latents=loaded.recipe.save_latents)
            files = {key: str(Path(p).relative_to(run_dir)) for key, p in paths.items()}
            rows.append(result_row(job, run_dir, "ok", rank=rank, wall_time_s=extra["wall_time_s"], files=files))
        return rows
    except Exception as exc:  # noqa: BLE001 - one failed image must not end the sweep; a full disk must
        fault = disk_fault(exc, run_dir)
        if fault is not None:
            raise fault
        if raise_errors:
            raise
        job = batch[0]
        detail = str(exc) if isinstance(exc, AttnguideError) else f"{type(exc).__name__}: {exc}"
        return [result_row(job, run_dir, "failed", error=detail, rank=rank,
                           wall_time_s=time.perf_counter() - started,
                           traceback=None if isinstance(exc, AttnguideError) else traceback.format_exc(limit=8))]


def _wait_for_ranks(run_dir: Path, world: int, counts: dict[str, int], error: OSError | None) -> dict[str, int]:
    """Rank 0 waits (without a collective, so a long shard cannot time out a barrier) until every
    other process has written its done-marker, then adds their counts to its own ``counts``; it
    raises its own disk ``error``, or the first another process reported, once all are done."""
    markers = [run_dir / _DONE_MARKER.format(rank=r) for r in range(1, world)]
    while not all(m.is_file() for m in markers):
        time.sleep(_WAIT_POLL_S)
    total = dict(counts)
    reported = []
    for marker in markers:
        done = json.loads(marker.read_text(encoding="utf-8"))
        for key in ("written", "skipped", "failed"):
            total[key] += int(done.get(key, 0))
        if done.get("error"):
            reported.append(str(done["error"]))
        marker.unlink(missing_ok=True)
    if error is not None:
        raise error
    if reported:
        raise RunIOError(reported[0])
    return total


def _write_summary(summary: RunSummary) -> None:
    data = {k: v for k, v in summary.__dict__.items() if k not in ("run_dir", "failures", "grids")}
    data["grids"] = [str(p.relative_to(summary.run_dir)) for p in summary.grids]
    text = json.dumps(data, indent=2) + "\n"
    atomic_write(summary.run_dir / "summary.json", lambda f: f.write(text.encode("utf-8")))
