"""The typed recipe schema: what a recipe YAML may say, with defaults.

Only structure and types live here; what needs the plugin registry (loss and callback
parameters, parser names), the file system (prompt files, output directory) or the sweep
(``attnguide.runs.sweep``) is checked in ``attnguide.runs.recipe``. Every model forbids unknown keys so
that a typo is an error, not a silently ignored setting.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal

import pydantic

from ..engine.runtime import RuntimeConfig
from ..engine.sampling import MAX_SEED, SamplingConfig, seed_problem

# Keys a sweep may not vary: they name the run, place it, or are the grid's rows and pages.
UNSWEEPABLE = ("name", "description", "output_dir", "runtime", "prompts", "seeds", "sweep")


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


class ModelSpec(_Strict):
    """Which weights: ``tiny``, a hub id, a local diffusers directory or a single file."""

    id: str = pydantic.Field("tiny", min_length=1)
    scheduler: str | None = None
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    config: str | None = pydantic.Field(None, description="diffusers config for single-file checkpoints")

    @pydantic.model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"id": value} if isinstance(value, str) else value


class AttentionSpec(_Strict):
    """Which cross-attention layers the losses see: one grid size, or named layers."""

    resolution: int | None = pydantic.Field(16, gt=0)
    layers: list[str] | None = None

    def engine_kwargs(self) -> dict[str, Any]:
        # Named layers alone select every grid size unless a resolution is also given.
        explicit = "resolution" in self.model_fields_set
        resolution = self.resolution if (explicit or not self.layers) else None
        return {"attention_resolution": resolution, "attention_layers": self.layers}


class ParserSpec(pydantic.BaseModel):
    """A registered parser and its settings (any further key is a parser parameter)."""

    model_config = pydantic.ConfigDict(extra="allow")

    name: str = "spacy"

    @pydantic.model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    def params(self) -> dict[str, Any]:
        extra = dict(self.model_extra or {})
        return {**extra.pop("params", {}), **extra}


class PluginEntry(pydantic.BaseModel):
    """``{name: ..., <plugin parameters>}``; a bare string is a name with defaults."""

    model_config = pydantic.ConfigDict(extra="allow")

    name: str = pydantic.Field(min_length=1)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, **(self.model_extra or {})}


class LossEntry(PluginEntry):
    """A loss plugin with its ``weight`` and its ``window`` (fractions of the steps) or
    ``time_window`` (the scheduler's time, 1 = pure noise)."""

    weight: float = 1.0
    window: tuple[float, float] | None = None
    time_window: tuple[float, float] | None = None

    def spec(self) -> dict[str, Any]:
        out = {"name": self.name, "weight": self.weight, **(self.model_extra or {})}
        if self.window is not None:
            out["window"] = list(self.window)
        if self.time_window is not None:
            out["time_window"] = list(self.time_window)
        return out


class PromptSource(_Strict):
    """Prompts inline (a YAML list), from a file, or from a named built-in set."""

    inline: list[str] | None = None
    file: str | None = pydantic.Field(None, min_length=1, description=".txt, .csv (column 'prompt') or .jsonl")
    set: str | None = pydantic.Field(None, min_length=1, description="a built-in prompt set")
    limit: int | None = pydantic.Field(None, ge=1)
    seed: int | None = pydantic.Field(None, description="sampling seed of a prompt set")

    @pydantic.model_validator(mode="before")
    @classmethod
    def _from_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"inline": [value]}
        return {"inline": value} if isinstance(value, list) else value

    @pydantic.model_validator(mode="after")
    def _one_source(self) -> PromptSource:
        given = [k for k in ("inline", "file", "set") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give a list of prompts, {file: PATH} or {set: NAME} (exactly one)")
        if self.inline is not None and not self.inline:
            raise ValueError("the prompt list is empty")
        if self.seed is not None and self.set is None:
            raise ValueError("'seed' only applies to {set: NAME}")
        return self


def _in_seed_range(seed: int) -> int:
    problem = seed_problem(seed)
    if problem is not None:
        raise ValueError(problem)
    return seed


Seed = Annotated[int, pydantic.AfterValidator(_in_seed_range)]
"""A generator seed: a whole number in ``[0, 2**64-1]``."""


class SeedSource(_Strict):
    """Seeds as a list, one int, or ``{start: 0, count: 4}``; each in ``[0, 2**64-1]``."""

    values: list[Seed] | None = None
    start: Seed = 0
    count: int | None = pydantic.Field(None, ge=1)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _from_list(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return {"values": [value]}
        return {"values": value} if isinstance(value, list) else value

    @pydantic.model_validator(mode="after")
    def _one_form(self) -> SeedSource:
        if self.values is not None:
            if not self.values:
                raise ValueError("the seed list is empty")
            if len(set(self.values)) != len(self.values):
                raise ValueError("seeds repeat: each seed gives one image, list each once")
        elif self.count is None:
            raise ValueError("give a list of seeds or {start: S, count: N}")
        elif self.start + self.count - 1 > MAX_SEED:
            raise ValueError(f"seeds {{start: {self.start}, count: {self.count}}} end at "
                             f"{self.start + self.count - 1}, out of range [0, 2**64-1]")
        return self

    def expand(self) -> list[int]:
        if self.values is not None:
            return list(self.values)
        return list(range(self.start, self.start + (self.count or 0)))


class Recipe(_Strict):
    """A whole recipe. ``prompts`` is the only required key."""

    name: str | None = pydantic.Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
    description: str = ""
    model: ModelSpec = pydantic.Field(default_factory=ModelSpec)
    runtime: RuntimeConfig = pydantic.Field(default_factory=RuntimeConfig)
    sampling: SamplingConfig = pydantic.Field(default_factory=SamplingConfig)
    attention: AttentionSpec = pydantic.Field(default_factory=AttentionSpec)
    parser: ParserSpec = pydantic.Field(default_factory=ParserSpec)
    losses: list[LossEntry] = pydantic.Field(default_factory=list)
    callbacks: list[PluginEntry] = pydantic.Field(default_factory=list)
    prompts: PromptSource
    seeds: SeedSource = pydantic.Field(default_factory=lambda: SeedSource(values=[0]))
    output_dir: str = pydantic.Field("outputs", min_length=1)
    save_latents: bool = False
    sweep: dict[str, Any] | None = None

    @pydantic.field_validator("losses", "callbacks", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value

    @pydantic.field_validator("sampling")
    @classmethod
    def _one_image_per_seed(cls, value: SamplingConfig) -> SamplingConfig:
        if value.images_per_prompt != 1:
            raise ValueError("recipes make one image per seed: list more seeds instead of images_per_prompt")
        return value


def model_at(path: list[str | int]) -> type[pydantic.BaseModel] | None:
    """The schema model that holds the keys under ``path`` (``["sampling"]`` ->
    ``SamplingConfig``, ``["losses", 0]`` -> ``LossEntry``), or ``None`` where the schema says
    nothing about the keys (a list of values, a plugin's parameters, the sweep's axes)."""
    annotation: Any = Recipe
    for part in path:
        if isinstance(part, int):
            annotation = _list_item(annotation)
            if annotation is None:
                return None
            continue
        model = _model_of(annotation)
        if model is None or str(part) not in model.model_fields:
            return None
        annotation = model.model_fields[str(part)].annotation
    return _model_of(annotation)


def _members(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return list(typing.get_args(annotation))
    return [annotation]


def _model_of(annotation: Any) -> type[pydantic.BaseModel] | None:
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, pydantic.BaseModel):
            return member
    return None


def _list_item(annotation: Any) -> Any:
    for member in _members(annotation):
        if typing.get_origin(member) is list:
            return typing.get_args(member)[0]
    return None


def field_names(model: type[pydantic.BaseModel]) -> list[str]:
    """Keys a user may write in ``model`` (internal forms like ``inline``/``values`` hidden)."""
    hidden = {"inline", "values"}
    return [k for k in model.model_fields if k not in hidden]
