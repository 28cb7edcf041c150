"""Engines built once per process: one per (model, scheduler, dtype, attention, parser).

Weights are loaded once per (model id, dtype, config); engines that differ only in scheduler,
attention layers or parser share them. Prompt analyses are cached per (weights, parser,
prompt), so a parser model is loaded once and a prompt parsed once per process. One set of
weights stays in memory at a time: the runner orders jobs by model.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..errors import AttnguideError
from ..types import PromptAnalysis
from .schema import ModelSpec, Recipe


class EngineCache:
    def __init__(self, fabric: Any, plugin_manager: Any = None, runtime: Any = None) -> None:
        self.fabric = fabric
        self.runtime = runtime
        self._pm = plugin_manager  # built on first use: a run with every image done needs none
        self._weights: tuple[str, Any] | None = None
        self._engines: dict[str, Any] = {}
        self._failed: dict[str, AttnguideError] = {}
        self._analyses: dict[tuple[str, str, str], PromptAnalysis] = {}

    def engine(self, recipe: Recipe) -> tuple[Any, float]:
        """The engine for ``recipe`` and the seconds spent building it now (0 when cached)."""
        from ..engine.engine import Engine

        key = _engine_key(recipe)
        if key in self._failed:
            raise self._failed[key]  # a model that failed to load fails each of its jobs at once
        if key in self._engines:
            return self._engines[key], 0.0
        started = time.perf_counter()
        try:
            pipe = self._pipeline(recipe.model)
            engine = Engine(
                pipe,
                fabric=self.fabric,
                runtime=self.runtime,
                plugin_manager=self.plugin_manager,
                parser=recipe.parser.name,
                parser_params=recipe.parser.params(),
                **recipe.attention.engine_kwargs(),
            )
        except AttnguideError as exc:
            self._failed[key] = exc
            raise
        self._engines[key] = engine
        return engine, time.perf_counter() - started

    @property
    def plugin_manager(self) -> Any:
        if self._pm is None:
            from ..plugin.manager import make_plugin_manager

            self._pm = make_plugin_manager()
        return self._pm

    def analysis(self, engine: Any, recipe: Recipe, prompt: str) -> PromptAnalysis:
        key = (_weights_key(recipe.model), json.dumps(recipe.parser.model_dump(), sort_keys=True), prompt)
        if key not in self._analyses:
            self._analyses[key] = engine.analyse(prompt)
        return self._analyses[key]

    def _pipeline(self, model: ModelSpec) -> Any:
        from ..models.loading import load_pipeline

        weights = _weights_key(model)
        if self._weights is None or self._weights[0] != weights:
            self._weights = None
            self._engines.clear()  # drop the previous model before loading the next
            self._weights = (weights, load_pipeline(model.id, dtype=model.dtype, config=model.config))
        base = self._weights[1]
        return with_scheduler(base, model.scheduler) if model.scheduler else base


def with_scheduler(pipe: Any, name: str) -> Any:
    """A pipeline sharing ``pipe``'s modules, with scheduler ``name`` built from its config."""
    from ..models.schedulers import make_scheduler

    components = {**pipe.components, "scheduler": make_scheduler(name, pipe.scheduler.config)}
    out = type(pipe)(**components, requires_safety_checker=False)
    out.set_progress_bar_config(disable=True)
    return out


def _weights_key(model: ModelSpec) -> str:
    return json.dumps([model.id, model.dtype, model.config])


def _engine_key(recipe: Recipe) -> str:
    parts = [recipe.model.model_dump(), recipe.attention.model_dump(), recipe.parser.model_dump()]
    return json.dumps(parts, sort_keys=True, default=str)
