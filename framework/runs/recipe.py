"""Recipes: find a YAML file, apply ``key=value`` overrides, validate everything that can be
validated without weights, and resolve it into cells, prompts and seeds.

``load_recipe`` is the only entry point the CLI needs. Every problem is a ``RecipeError`` that
names the recipe file, the dotted key and what was expected; nothing is written and no model
is loaded before a recipe has passed.
"""

from __future__ import annotations

import difflib
import importlib.resources
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
import yaml

from ..errors import ConfigError, RecipeError
from ..keyvalue import parse_key_value
from .keys import check_key, join_key, set_at, split_key
from .prompts import load_prompts
from .resolve import resolve_plugins
from .schema import Recipe, field_names, model_at

SHIPPED_PACKAGE = "attnguide.recipes"


@dataclass
class Cell:
    """One point of the sweep: its directory name, axis labels and validated settings."""

    name: str
    labels: dict[str, str]
    recipe: Recipe
    losses: list[dict[str, Any]]
    callbacks: list[dict[str, Any]]

    def resolved(self, prompts: list[str], seeds: list[int], run_name: str) -> dict[str, Any]:
        """This cell as a stand-alone recipe (no sweep): what ``recipe.resolved.yaml`` holds."""
        out = resolved_dict(self.recipe, self.losses, self.callbacks, prompts, seeds)
        out["name"], out["sweep"] = f"{run_name}-{self.name}", None
        out["description"] = f"cell {self.name} of {run_name}: " + ", ".join(f"{k}={v}" for k, v in self.labels.items())
        return out

    def hashed_config(self) -> dict[str, Any]:
        """What decides this cell's pixels: the content hash of an image covers this, its
        prompt and its seed. Where outputs go and how many processes run do not count; the
        torch thread count does (CPU kernels sum in another order with another count)."""
        r = self.recipe
        out: dict[str, Any] = {
            "model": r.model.model_dump(mode="json"),
            "sampling": r.sampling.model_dump(mode="json"),
            "attention": r.attention.model_dump(mode="json"),
            "losses": self.losses,
            "callbacks": self.callbacks,
            "precision": r.runtime.precision,
            "threads": r.runtime.threads,
        }
        if self.losses or self.callbacks:
            out["parser"] = {"name": r.parser.name, **r.parser.params()}
        return out


@dataclass
class LoadedRecipe:
    """A validated recipe with its overrides applied, ready to run."""

    path: Path
    source: str
    raw: dict[str, Any]
    recipe: Recipe
    name: str
    prompts: list[str]
    seeds: list[int]
    cells: list[Cell]
    losses: list[dict[str, Any]]
    callbacks: list[dict[str, Any]]
    overrides: list[str] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return Path(self.recipe.output_dir).expanduser() / self.name

    def resolved(self) -> dict[str, Any]:
        """The whole recipe, overrides applied and defaults filled in (the sweep as written)."""
        out = resolved_dict(self.recipe, self.losses, self.callbacks, self.prompts, self.seeds)
        out["name"] = self.name
        return out


# -- finding and reading ----------------------------------------------------------------
def shipped_recipes() -> dict[str, Path]:
    """Recipes shipped in ``attnguide.recipes``, by name."""
    root = importlib.resources.files(SHIPPED_PACKAGE)
    return {p.name[: -len(".yaml")]: Path(str(p)) for p in sorted(root.iterdir(), key=lambda p: p.name)
            if p.name.endswith(".yaml")}


def find_recipe(ref: str) -> Path:
    """A path to a file, or a bare name of a shipped recipe (``quickstart``)."""
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    shipped = shipped_recipes()
    name = ref[: -len(".yaml")] if ref.endswith(".yaml") else ref
    if os.sep not in ref and name in shipped:
        return shipped[name]
    if path.exists():
        raise ConfigError(f"recipe {ref!r} is not a file")
    close = difflib.get_close_matches(name, list(shipped), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"no recipe file {ref!r} and no shipped recipe of that name.{hint} "
                      f"Shipped: {', '.join(shipped) or 'none'}")


def read_yaml(path: Path, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RecipeError(source, [("", f"not valid YAML{at}: {getattr(exc, 'problem', exc)}")]) from None
    except OSError as exc:
        raise RecipeError(source, [("", f"cannot be read: {exc.strerror or exc}")]) from None
    if not isinstance(data, dict):
        raise RecipeError(source, [("", f"expected a mapping of keys (name, model, prompts ...), got {type(data).__name__}")])
    return data


# -- overrides --------------------------------------------------------------------------
_SHORTHANDS = {"model": "id", "parser": "name"}


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """``["sampling.steps=20"]`` -> ``[("sampling.steps", 20)]`` (values are YAML)."""
    return [parse_key_value(item, "override", "sampling.steps=20") for item in items]


def apply_overrides(raw: dict[str, Any], overrides: list[tuple[str, Any]], registry: Any, source: str) -> None:
    for section in ("losses", "callbacks") if overrides else ():
        # a bare name is shorthand for {name: ...}; spelled out, its parameters can be overridden
        if isinstance(raw.get(section), list):
            raw[section] = [{"name": e} if isinstance(e, str) else e for e in raw[section]]
    for key, value in overrides:
        try:
            path = split_key(key)
        except ValueError as exc:
            raise RecipeError(source, [(key, f"{exc} (from override {key}={value!r})")]) from None
        if len(path) == 1 and path[0] in _SHORTHANDS and isinstance(value, str):
            path.append(_SHORTHANDS[str(path[0])])
        problem = check_key(raw, path, registry)
        if problem:
            raise RecipeError(source, [(join_key(path), f"{problem} (from override {key}={value!r})")])
        set_at(raw, path, value)


# -- validation -------------------------------------------------------------------------
def validate_schema(raw: dict[str, Any], source: str, context: str = "") -> Recipe:
    try:
        return Recipe.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise RecipeError(source, schema_problems(exc), context) from None


def schema_problems(exc: pydantic.ValidationError) -> list[tuple[str, str]]:
    problems = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if p not in ("inline", "values")]
        key = join_key(loc)
        if err["type"] == "extra_forbidden":
            parent = model_at(loc[:-1])
            names = field_names(parent) if parent else []
            close = difflib.get_close_matches(str(loc[-1]), names, n=1)
            hint = f"; did you mean {join_key([*loc[:-1], close[0]])!r}?" if close else ""
            problems.append((key, f"unknown key{hint} (valid keys: {', '.join(names)})"))
        elif err["type"] == "missing":
            problems.append((key, "required key is missing"))
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            problems.append((key, f"{msg} (got {_short(err.get('input'))})"))
    return problems


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_recipe(ref: str, overrides: list[str] | None = None, *, registry: Any = None) -> LoadedRecipe:
    """Find, read, override, validate and resolve a recipe. Loads no weights."""
    if registry is None:
        from ..plugin.manager import make_plugin_manager

        registry = make_plugin_manager().registry
    path = find_recipe(ref)
    source = str(path)
    raw = read_yaml(path, source)
    apply_overrides(raw, parse_overrides(list(overrides or [])), registry, source)
    recipe = validate_schema(raw, source)
    problems: list[tuple[str, str]] = []
    try:
        prompts = load_prompts(recipe.prompts, path.parent, source)
    except RecipeError as exc:  # reported together with the plugins' problems below
        prompts, problems = [], exc.problems
    try:
        losses, callbacks = resolve_plugins(recipe, registry, source)
        cells = _cells(raw, recipe, (losses, callbacks), registry, source)
    except RecipeError as exc:
        if not problems:
            raise
        raise RecipeError(source, problems + exc.problems, exc.context) from None
    if problems:
        raise RecipeError(source, problems)
    name = recipe.name or path.stem
    return LoadedRecipe(path, source, raw, recipe, name, prompts, recipe.seeds.expand(), cells,
                        losses, callbacks, list(overrides or []))


def _cells(raw: dict[str, Any], recipe: Recipe, base_plugins: tuple[list[Any], list[Any]], registry: Any,
           source: str) -> list[Cell]:
    from .sweep import expand_sweep

    cells = []
    for name, labels, cell_raw in expand_sweep(raw, registry, source):
        if not labels:  # no sweep: the recipe is its only cell
            cells.append(Cell(name, labels, recipe, *base_plugins))
            continue
        context = f"sweep cell {name}"
        cell_recipe = validate_schema(cell_raw, source, context)
        cells.append(Cell(name, labels, cell_recipe, *resolve_plugins(cell_recipe, registry, source, context)))
    return cells


def resolved_dict(recipe: Recipe, losses: list[dict[str, Any]], callbacks: list[dict[str, Any]],
                  prompts: list[str], seeds: list[int]) -> dict[str, Any]:
    out = recipe.model_dump(mode="json")
    out["parser"] = {"name": recipe.parser.name, **recipe.parser.params()}
    out["losses"], out["callbacks"] = losses, callbacks
    out["prompts"], out["seeds"] = list(prompts), list(seeds)
    if not recipe.attention.layers:
        out["attention"].pop("layers", None)
    return out


def check_output_dir(loaded: LoadedRecipe, *, create: bool) -> Path:
    """The run directory, checked writable (created only when ``create``)."""
    from ..results.files import ensure_writable_dir

    run_dir = loaded.run_dir
    if create:
        try:
            return ensure_writable_dir(run_dir)
        except ConfigError as exc:
            raise RecipeError(loaded.source, [("output_dir", f"{exc}".replace("; choose another --out", "; set output_dir=DIR"))]) from None
    probe = run_dir
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise RecipeError(loaded.source, [("output_dir", f"{str(run_dir)!r} cannot be created: {str(probe)!r} is not a writable directory; set output_dir=DIR")])
    return run_dir
