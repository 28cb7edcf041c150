"""The page's server-side state: one model, its engines, and generation jobs run one at a time.

Every generation goes the way ``attnguide run`` goes: the page's recipe is loaded by the recipe
loader, each cell's engine comes from the runner's ``EngineCache`` and ``Engine.generate`` runs
it with the cell's losses and callbacks (``heatmaps`` among them, capturing each step's maps).
A job waits for ``generation_lock`` - a second request queues, it never runs beside the first -
and reports its progress through a callback on the run's step hook.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import AttnguideError, ConfigError
from ..plugin.callbacks import Callback, CallbackParams
from ..runs.recipe import Cell, LoadedRecipe
from ..types import PromptAnalysis
from .maps import loss_series, refinements
from .page_recipe import MethodChoice, PageRequest, build_recipe, load_page_recipe

KEEP_JOBS = 8
"""Finished jobs kept for the page (their images and maps stay in memory)."""


@dataclass
class CellResult:
    """One method's image: ``maps[step]`` is ``[words, H, W]`` float32 (the heatmaps callback's)."""

    label: str
    method: str
    image: Any
    words: list[str]
    maps: dict[int, torch.Tensor]
    losses: list[Any]
    seconds: float

    def summary(self) -> dict[str, Any]:
        return {"label": self.label, "method": self.method, "words": self.words, "steps": sorted(self.maps),
                "losses": loss_series(self.losses), "refinements": refinements(self.losses),
                "seconds": round(self.seconds, 3)}


@dataclass
class Job:
    """One generation request: queued, then running (cell by cell, step by step), then done or failed."""

    id: str
    request: PageRequest
    recipe: dict[str, Any]
    loaded: LoadedRecipe
    state: str = "queued"
    queued_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    cell: int = 0
    step: int = 0
    steps: int = 0
    cells: list[CellResult] = field(default_factory=list)
    error: str | None = None

    def status(self) -> dict[str, Any]:
        """What the page polls: state, progress and, when done, each cell's summary."""
        return {
            "id": self.id, "state": self.state, "error": self.error,
            "progress": {"cell": self.cell, "cells": len(self.loaded.cells), "step": self.step,
                         "steps": self.steps or self.request.steps},
            "queued_at": self.queued_at, "started_at": self.started_at, "finished_at": self.finished_at,
            "cells": [c.summary() for c in self.cells] if self.state == "done" else [],
        }

    def result(self, label: str) -> CellResult:
        for cell in self.cells:
            if cell.label == label:
                return cell
        raise ConfigError(f"job {self.id} has no image for method {label!r}; it has "
                          f"{', '.join(c.label for c in self.cells) or 'none yet'}")


class StepProgress(Callback[CallbackParams]):
    """Reports each finished step to its job (reads the run, changes nothing)."""

    name = "explore_progress"

    def __init__(self, job: Job) -> None:
        super().__init__()
        self.job = job

    def on_run_start(self, run: Any) -> None:
        self.job.steps = len(run.timesteps)

    def on_step_end(self, run: Any, step: int) -> None:
        self.job.step = step + 1


class ExploreSession:
    """The model the page explores, its engines and its jobs (thread-safe)."""

    def __init__(self, model: str, keep: int = KEEP_JOBS, threads: int = 1) -> None:
        self.model = model
        self.threads = threads  # torch threads of every generation: the recipe's runtime.threads
        self.keep = keep
        self.generation_lock = threading.Lock()
        self._engine_lock = threading.Lock()
        self._jobs_lock = threading.Lock()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._ids = itertools.count(1)
        self._pm: Any = None
        self._engines: Any = None

    @property
    def plugin_manager(self) -> Any:
        from ..plugin.manager import make_plugin_manager

        if self._pm is None:
            self._pm = make_plugin_manager()
        return self._pm

    @property
    def registry(self) -> Any:
        return self.plugin_manager.registry

    def warm(self) -> None:
        """Load the model and the default parser now, so the first request does not wait."""
        import logging

        try:
            self.analyse(PageRequest(prompt="a red circle and a blue square"))
        except AttnguideError as exc:  # the page reports it again on the first request
            logging.getLogger(__name__).warning("attnguide explore: %s", exc)

    # -- parse -------------------------------------------------------------------------
    def analyse(self, request: PageRequest) -> PromptAnalysis:
        """The analysis a generation of ``request`` would use (same parser, tokenizer, cache)."""
        plain = request.model_copy(update={"methods": [MethodChoice(name="none")]})
        loaded = load_page_recipe(build_recipe(plain, self.model, self.registry, self.threads), self.registry)
        cell = loaded.cells[0]
        return self._engine_and_analysis(cell, loaded.prompts[0])[1]

    def _engine_and_analysis(self, cell: Cell, prompt: str) -> tuple[Any, PromptAnalysis]:
        """As the runner gets them: the engine of the cell's recipe and the prompt's analysis."""
        with self._engine_lock:
            if self._engines is None:
                from ..engine.runtime import RuntimeConfig, make_fabric
                from ..runs.engine_cache import EngineCache

                runtime = RuntimeConfig()
                self._engines = EngineCache(make_fabric(runtime), plugin_manager=self.plugin_manager,
                                            runtime=runtime)
            engine, _ = self._engines.engine(cell.recipe)
            return engine, self._engines.analysis(engine, cell.recipe, prompt)

    # -- generate ----------------------------------------------------------------------
    def submit(self, request: PageRequest) -> Job:
        """Validate ``request`` as a recipe now (errors reach the caller), then queue it."""
        recipe = build_recipe(request, self.model, self.registry, self.threads)
        loaded = load_page_recipe(recipe, self.registry)
        job = Job(str(next(self._ids)), request, recipe, loaded)
        with self._jobs_lock:
            self._jobs[job.id] = job
            while len(self._jobs) > self.keep:
                self._jobs.popitem(last=False)
        threading.Thread(target=self.run_job, args=(job,), name=f"explore-job-{job.id}", daemon=True).start()
        return job

    def job(self, job_id: str) -> Job:
        with self._jobs_lock:
            if job_id not in self._jobs:
                raise ConfigError(f"no job {job_id!r} (finished jobs are kept {self.keep} at a time)")
            return self._jobs[job_id]

    def run_job(self, job: Job) -> None:
        """Run ``job`` once no other job runs; failures end in ``job.error``, not in the thread."""
        from ..engine.runtime import kept_threads, pin_threads

        with self.generation_lock, kept_threads():
            job.state, job.started_at = "running", time.time()
            try:
                pin_threads(job.loaded.recipe.runtime.threads)  # as `attnguide run` computes
                for index, cell in enumerate(job.loaded.cells):
                    job.cell, job.step = index, 0
                    job.cells.append(self._generate(job, cell))
                job.state = "done"
            except AttnguideError as exc:
                job.state, job.error = "failed", str(exc)
            except Exception as exc:  # noqa: BLE001 - shown on the page, the server keeps serving
                job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
            finally:
                job.finished_at = time.time()

    def _generate(self, job: Job, cell: Cell) -> CellResult:
        """One cell's image, as ``attnguide run`` generates it (``runner._generate_and_write``)."""
        started = time.perf_counter()
        prompt, seed = job.loaded.prompts[0], job.loaded.seeds[0]
        engine, analysis = self._engine_and_analysis(cell, prompt)
        result = engine.generate([prompt], [seed], losses=cell.losses, callbacks=[*cell.callbacks, StepProgress(job)],
                                 sampling=cell.recipe.sampling, analyses=[analysis], progress=False)
        tensors, meta = result.run.artifacts.get(0, {}).get("maps.safetensors", ({}, {}))
        maps = {int(key.removeprefix("step")): value for key, value in tensors.items()}
        words = [w for w in str(meta.get("words", "")).split("|") if w]
        label = cell.labels.get("method", cell.name)
        method = "+".join(s["name"] for s in [*cell.losses, *cell.callbacks] if s["name"] != "heatmaps") or "none"
        return CellResult(label, method, result.images[0], words, maps, result.records[0].losses,
                          time.perf_counter() - started)
