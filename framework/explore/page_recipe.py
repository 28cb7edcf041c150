"""What the page asks for, as a recipe: the one form in which settings reach the engine.

A ``PageRequest`` (prompt, seed, sampling, parser, bindings, methods) becomes a recipe with
one sweep cell per method (``method-<label>``), every cell with the ``heatmaps`` callback
capturing every step. ``load_page_recipe`` validates it with the recipe loader that
``attnguide run`` uses, so an exported recipe reproduces the page's images.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import pydantic
import yaml

from ..errors import ConfigError, RecipeError
from ..results.shared import dump_yaml
from ..runs.recipe import LoadedRecipe, load_recipe

SOURCE = "the explore page"
RECIPE_NAME = "explore"


class MethodChoice(pydantic.BaseModel):
    """One column of the page: a registered method (or ``none``) and the parameters the user
    changed; each value is YAML text, as ``--param`` reads it (``"3"``, ``"[0, 0.5]"``)."""

    model_config = pydantic.ConfigDict(extra="forbid")

    name: str = pydantic.Field(min_length=1)
    params: dict[str, str] = pydantic.Field(default_factory=dict)


class PageRequest(pydantic.BaseModel):
    """The page's settings for one generation (or one parse: ``methods`` unused there)."""

    model_config = pydantic.ConfigDict(extra="forbid")

    prompt: str
    seed: int = 0
    steps: int = 50
    guidance_scale: float = 7.5
    height: int | None = None
    width: int | None = None
    parser: str = "spacy"
    bindings: dict[str, list[str]] | None = None
    methods: list[MethodChoice] = pydantic.Field(default_factory=lambda: [MethodChoice(name="none")])

    @pydantic.field_validator("prompt")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the prompt is empty: type the text to generate")
        return value.strip()


def read_request(data: Any) -> PageRequest:
    """``data`` (the request's JSON) as a ``PageRequest``; a ``ConfigError`` naming the field."""
    try:
        return PageRequest.model_validate(data)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "request"
        raise ConfigError(f"{field}: {str(err['msg']).removeprefix('Value error, ')}") from None


def method_labels(methods: list[MethodChoice]) -> list[str]:
    """Unique cell labels: the method name, then ``name_2``, ``name_3`` for repeats."""
    labels: list[str] = []
    for method in methods:
        base = re.sub(r"[^A-Za-z0-9_]", "_", method.name)
        label, n = base, 1
        while label in labels:
            n += 1
            label = f"{base}_{n}"
        labels.append(label)
    return labels


def build_recipe(request: PageRequest, model: str, registry: Any, threads: int = 1) -> dict[str, Any]:
    """The recipe dict for ``request`` on ``model`` (``registry`` tells losses from callbacks),
    computed at ``threads`` torch threads (they decide an image's last bits on a CPU)."""
    # count above the number of timesteps (PNDM adds one): every step's maps are kept
    heatmaps = {"name": "heatmaps", "count": request.steps + 1}
    sampling: dict[str, Any] = {"steps": request.steps, "guidance_scale": request.guidance_scale}
    sampling.update({k: v for k, v in (("height", request.height), ("width", request.width)) if v is not None})
    parser: dict[str, Any] = {"name": request.parser}
    if request.bindings is not None:
        if request.parser != "manual":
            raise ConfigError(f"bindings edited by hand need the manual parser, not {request.parser!r}")
        parser["bindings"] = {entity: list(mods) for entity, mods in request.bindings.items()}
    if not request.methods:
        raise ConfigError("methods: choose at least one method (none for no guidance)")
    cells: dict[str, Any] = {}
    for label, method in zip(method_labels(request.methods), request.methods):
        spec = {"name": method.name, **{k: _yaml_value(method.name, k, v) for k, v in method.params.items()}}
        if method.name == "none":
            cells[label] = {"losses": [], "callbacks": [dict(heatmaps)]}
        elif method.name in registry.classes["callback"] and method.name not in registry.classes["loss"]:
            cells[label] = {"losses": [], "callbacks": [spec, dict(heatmaps)]}
        else:
            cells[label] = {"losses": [spec], "callbacks": [dict(heatmaps)]}
    return {
        "name": RECIPE_NAME,
        "description": f"exported by attnguide explore: {', '.join(cells)} on one prompt and seed",
        "model": {"id": model},
        "runtime": {"threads": threads},
        "sampling": sampling,
        "parser": parser,
        "prompts": [request.prompt],
        "seeds": [request.seed],
        "callbacks": [heatmaps],
        "output_dir": "outputs",
        "sweep": {"method": cells},
    }


def _yaml_value(method: str, key: str, text: str) -> Any:
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"{method}.{key}: {text!r} is not a valid value ({' '.join(str(exc).split())})") from None


def recipe_yaml(recipe: dict[str, Any], filename: str = "explore.yaml") -> str:
    """The recipe as YAML, opening with the command that runs it (as shipped recipes do)."""
    return dump_yaml(recipe, f"attnguide run {filename}\n"
                     "Exported by `attnguide explore`: one cell per method, same prompt and seed; the heatmaps\n"
                     "callback captures every step's maps, as on the page (capture is part of the computation).")


def load_page_recipe(recipe: dict[str, Any], registry: Any) -> LoadedRecipe:
    """``recipe`` validated and resolved by ``attnguide.runs.recipe.load_recipe``, through a
    temporary file as ``attnguide run`` would read it; problems name the page as the source."""
    with tempfile.TemporaryDirectory(prefix="attnguide-explore-") as folder:
        path = Path(folder) / "explore.yaml"
        path.write_text(recipe_yaml(recipe), encoding="utf-8")
        try:
            return load_recipe(str(path), registry=registry)
        except RecipeError as exc:
            raise RecipeError(SOURCE, exc.problems, exc.context) from None
