"""The ASGI app: one static page and a small JSON/PNG API over an ``ExploreSession``.

    GET  /                                   the page (static/index.html; no remote assets)
    GET  /api/info                           model, parsers, defaults and the suggested methods
    GET  /api/methods                        registered methods with parameters and defaults
    POST /api/parse                          prompt -> words, arcs, bindings, token positions
    POST /api/generate                       settings -> a queued job {"id": ...} (202)
    GET  /api/jobs/{id}                      state, progress and, when done, each method's summary
    GET  /api/jobs/{id}/image/{label}.png    a method's final image
    GET  /api/jobs/{id}/map/{label}/{step}/{word}.png?mode=guided|unguided|compare&alpha=0.6
    GET  /api/jobs/{id}/sheet/{label}.png?steps=0,10   the heat-map sheet of those steps
    GET  /api/jobs/{id}/recipe.yaml          the job as a recipe ``attnguide run`` reproduces
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import AttnguideError, ConfigError
from ..models.toy_names import is_toy_model
from .maps import compare_png, map_png, png_bytes, sheet_png
from .methods import describe_methods
from .page_recipe import read_request, recipe_yaml
from .parse_view import analysis_json
from .session import CellResult, ExploreSession, Job

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")
TOY_METHODS = [{"name": "none"}, {"name": "syngen", "params": {"step_size": "3"}}]
DEFAULT_METHODS = [{"name": "none"}, {"name": "syngen"}]
"""First columns of the page: on a toy-world model SynGen at the step size measured there (3,
docs/toyworld.md), elsewhere at its defaults."""


def static_dir() -> Path:
    """The folder of index.html, explore.js and explore.css (package data)."""
    return Path(str(importlib.resources.files("attnguide.explore") / "static"))


def create_app(session: ExploreSession, allowed_hosts: list[str] | None = None) -> Starlette:
    """The app for ``session``. ``allowed_hosts``: Host headers served (default: loopback
    names only, so a web page elsewhere cannot reach the server through DNS rebinding)."""
    api = _Api(session)
    routes = [
        Route("/", lambda request: FileResponse(static_dir() / "index.html")),
        Mount("/static", app=StaticFiles(directory=static_dir()), name="static"),
        Route("/api/info", api.info),
        Route("/api/methods", api.methods),
        Route("/api/parse", api.parse, methods=["POST"]),
        Route("/api/generate", api.generate, methods=["POST"]),
        Route("/api/jobs/{job}", api.status),
        Route("/api/jobs/{job}/image/{label}.png", api.image),
        Route("/api/jobs/{job}/map/{label}/{step:int}/{word:int}.png", api.map),
        Route("/api/jobs/{job}/sheet/{label}.png", api.sheet),
        Route("/api/jobs/{job}/recipe.yaml", api.recipe),
    ]
    hosts = list(allowed_hosts or LOOPBACK_NAMES)
    return Starlette(routes=routes, middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts)],
                     exception_handlers={AttnguideError: _error})


async def _error(request: Request, exc: Exception) -> Response:
    status = 404 if isinstance(exc, _NotFound) else 400
    return JSONResponse({"error": str(exc)}, status_code=status)


class _NotFound(ConfigError):
    """A job, method, step or word the server does not have."""


class _Api:
    def __init__(self, session: ExploreSession) -> None:
        self.session = session

    async def info(self, request: Request) -> Response:
        registry = await run_in_threadpool(lambda: self.session.registry)
        model = self.session.model
        return JSONResponse({
            "model": model, "parsers": sorted(registry.classes["parser"]),
            "defaults": {"prompt": "a red circle and a blue square" if is_toy_model(model) else
                         "a pink sunflower and a yellow flamingo", "seed": 0, "steps": 50,
                         "guidance_scale": 7.5, "parser": "spacy"},
            "methods": TOY_METHODS if is_toy_model(model) else DEFAULT_METHODS,
        })

    async def methods(self, request: Request) -> Response:
        rows = await run_in_threadpool(lambda: describe_methods(self.session.registry))
        return JSONResponse(rows)

    async def parse(self, request: Request) -> Response:
        page = read_request(await _json(request))
        analysis = await run_in_threadpool(self.session.analyse, page)
        return JSONResponse(analysis_json(analysis, page.parser))

    async def generate(self, request: Request) -> Response:
        page = read_request(await _json(request))
        job = await run_in_threadpool(self.session.submit, page)
        return JSONResponse(job.status(), status_code=202)

    async def status(self, request: Request) -> Response:
        return JSONResponse(self._job(request).status())

    async def image(self, request: Request) -> Response:
        cell = self._cell(request)
        return _png(await run_in_threadpool(png_bytes, cell.image))

    async def map(self, request: Request) -> Response:
        job, cell = self._job(request), self._cell(request)
        step, word = int(request.path_params["step"]), int(request.path_params["word"])
        mode, alpha = request.query_params.get("mode", "guided"), _alpha(request)
        guided = _word_map(cell, step, word)
        if mode == "guided":
            return _png(await run_in_threadpool(map_png, cell.image, guided, alpha))
        baseline = _unguided(job)
        if mode == "unguided":
            return _png(await run_in_threadpool(map_png, baseline.image, _word_map(baseline, step, word), alpha))
        if mode == "compare":
            unguided = _word_map(baseline, step, word)
            return _png(await run_in_threadpool(compare_png, cell.image, guided, unguided, alpha))
        raise ConfigError(f"mode {mode!r}: use guided, unguided or compare")

    async def sheet(self, request: Request) -> Response:
        cell = self._cell(request)
        text = request.query_params.get("steps")
        try:
            steps = [int(s) for s in text.split(",") if s.strip()] if text else sorted(cell.maps)
        except ValueError:
            raise ConfigError(f"steps {text!r}: give comma-separated step numbers") from None
        missing = [s for s in steps if s not in cell.maps]
        if missing:
            raise _NotFound(f"{cell.label}: no maps at steps {missing}")
        return _png(await run_in_threadpool(sheet_png, cell.image, cell.words, cell.maps, steps, _alpha(request)))

    async def recipe(self, request: Request) -> Response:
        job = self._job(request)
        return Response(recipe_yaml(job.recipe), media_type="application/x-yaml",
                        headers={"Content-Disposition": 'attachment; filename="explore.yaml"'})

    def _job(self, request: Request) -> Job:
        try:
            return self.session.job(str(request.path_params["job"]))
        except ConfigError as exc:
            raise _NotFound(str(exc)) from None

    def _cell(self, request: Request) -> CellResult:
        job = self._job(request)
        if job.state != "done":
            raise _NotFound(f"job {job.id} is {job.state}; its images come when it is done")
        try:
            return job.result(str(request.path_params["label"]))
        except ConfigError as exc:
            raise _NotFound(str(exc)) from None


def _word_map(cell: CellResult, step: int, word: int) -> Any:
    """``[H, W]`` map of ``cell``'s word ``word`` at ``step``."""
    if step not in cell.maps:
        raise _NotFound(f"{cell.label}: no maps at step {step}; saved steps are 0..{max(cell.maps, default=-1)}")
    if not 0 <= word < len(cell.words):
        raise _NotFound(f"{cell.label}: no word {word}; the bound words are {cell.words}")
    return cell.maps[step][word]


def _unguided(job: Job) -> CellResult:
    for cell in job.cells:
        if cell.method == "none":
            return cell
    raise ConfigError("comparing with the unguided run needs the method none among this job's methods")


def _alpha(request: Request) -> float:
    text = request.query_params.get("alpha", "0.6")
    try:
        alpha = float(text)
    except ValueError:
        alpha = -1.0
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha {text!r}: give a number from 0 to 1")
    return alpha


async def _json(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError as exc:
        raise ConfigError(f"the request body is not JSON: {exc}") from None


def _png(data: bytes) -> Response:
    return Response(data, media_type="image/png", headers={"Cache-Control": "max-age=3600"})
