"""The report as one static HTML page: no scripts, no external styles or fonts.

Images are referenced by paths relative to the page (or embedded as data URIs), so the page
opens from disk and the run directory can be copied elsewhere with it. Images smaller than
``MIN_DISPLAY_PX`` (the toy model's 64 px) are shown at a whole multiple of their size with
``image-rendering: pixelated``, so the browser enlarges them by nearest neighbour, not blur.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..results.reader import RunContents
from .colour_scale import MapRange
from .tables import CellRow, best_cells, format_estimate

MIN_DISPLAY_PX = 256

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1600px}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.best{background:#e3f6e3;font-weight:bold}
.grid img{max-width:220px;display:block}
img.pixelated{image-rendering:pixelated;max-width:none}
.sheets img{max-width:100%;display:block}.missing{background:#eee;color:#777}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:12px}figure{display:inline-block;margin:.5em}
figcaption{font-size:12px;color:#555}nav a{margin-right:1em}.note{color:#666}
"""


@dataclass
class PageInputs:
    """What the page shows; paths are absolute, turned into links by ``Links``."""

    contents: RunContents
    rows: list[CellRow]
    metrics: dict[str, str]  # name -> description
    per_prompt: dict[str, dict[str, dict[str, Any]]]
    loss_plots: dict[str, Path] = field(default_factory=dict)
    grids: dict[str, Path] = field(default_factory=dict)
    sheets: dict[str, ScaledSheet] = field(default_factory=dict)  # image (relative path) -> its sheet
    lower_is_better: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ScaledSheet:
    """A heat-map sheet as the run wrote it, the copy with a colour scale, and its raw value range."""

    original: Path
    scaled: Path
    value_range: MapRange | None


def display_scale(path: Path) -> tuple[int, int, int] | None:
    """``(width, height, factor)`` for an image whose longer side is under ``MIN_DISPLAY_PX``:
    the smallest whole factor that brings it to at least that size; None for larger or
    unreadable images."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
    except OSError:
        return None
    longest = max(width, height)
    if longest <= 0 or longest >= MIN_DISPLAY_PX:
        return None
    return width, height, -(-MIN_DISPLAY_PX // longest)


def image_tag(src: str, path: Path, alt: str) -> str:
    """``<img>`` for ``path``; a small image gets a pixelated, whole-multiple display size."""
    scale = display_scale(path)
    if scale is None:
        return f'<img src="{src}" alt="{escape(alt)}">'
    width, height, factor = scale
    return (f'<img class="pixelated" src="{src}" alt="{escape(alt)}" width="{width * factor}" '
            f'height="{height * factor}">')


class Links:
    """``src``/``href`` values for files: relative to the page's folder, or data URIs."""

    def __init__(self, page_dir: Path, embed: bool) -> None:
        self.page_dir, self.embed = page_dir, embed

    def __call__(self, path: Path, *, image: bool = True) -> str:
        if self.embed and image:
            return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
        rel = os.path.relpath(path, self.page_dir)
        return quote(Path(rel).as_posix(), safe="/._-~")


def render_page(inputs: PageInputs, link: Callable[..., str], title: str) -> str:
    c = inputs.contents
    parts = [
        f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<p>{len(c.images)} images: {len(c.cells)} cells &times; {len(c.prompts)} prompts &times; "
        f"{len(c.seeds)} seeds" + (f"; <strong>{len(c.failed)} failed</strong>" if c.failed else "") + "</p>",
        '<nav><a href="#metrics">metrics</a><a href="#losses">loss curves</a>'
        '<a href="#prompts">prompts</a><a href="#recipe">recipe</a></nav>',
        _metrics_section(inputs),
        _losses_section(inputs, link),
        '<h2 id="prompts">Prompts</h2>',
        *(_prompt_section(inputs, link, i, p) for i, p in enumerate(c.prompts)),
        '<h2 id="recipe">Resolved recipe</h2>',
        f"<pre>{escape(c.recipe_text)}</pre>" if c.recipe_text else '<p class="note">no recipe.resolved.yaml</p>',
        "</body></html>\n",
    ]
    return "\n".join(parts)


def _metrics_table(rows: list[CellRow], metrics: list[str], lower: frozenset[str] = frozenset()) -> str:
    best = {m: best_cells(rows, m, lower=m in lower) for m in metrics}
    head = "".join(f"<th>{escape(m)}{' &darr;' if m in lower else ''}</th>" for m in metrics)
    body = []
    for r in rows:
        labels = ", ".join(f"{k}={v}" for k, v in r.labels.items())
        cells = "".join(
            f'<td class="best">{format_estimate(r.metrics.get(m))}</td>' if r.cell in best[m]
            else f"<td>{format_estimate(r.metrics.get(m))}</td>" for m in metrics)
        failed = f" ({r.failed} failed)" if r.failed else ""
        body.append(f"<tr><td>{escape(r.cell)}<br><small>{escape(labels)}</small></td>"
                    f"<td>{r.images}{failed}</td>{cells}</tr>")
    return f"<table><tr><th>cell</th><th>images</th>{head}</tr>{''.join(body)}</table>"


def _metrics_section(inputs: PageInputs) -> str:
    out = ['<h2 id="metrics">Metrics</h2>']
    if not inputs.metrics:
        out.append('<p class="note">No metrics yet: run <code>attnguide evaluate RUN_DIR</code>, '
                   "then build the report again.</p>")
        out.append(_metrics_table(inputs.rows, []))
        return "\n".join(out)
    out.append("<p>Mean over images [95% bootstrap interval]; the best cell per column is highlighted "
               "(higher is better, except in columns marked &darr;).</p>")
    out.append(_metrics_table(inputs.rows, list(inputs.metrics), inputs.lower_is_better))
    out.append("<ul>" + "".join(f"<li><b>{escape(m)}</b>: {escape(d)}</li>" for m, d in inputs.metrics.items()) + "</ul>")
    return "\n".join(out)


def _losses_section(inputs: PageInputs, link: Callable[..., str]) -> str:
    if not inputs.loss_plots:
        return '<h2 id="losses">Loss curves</h2><p class="note">no loss values in the image metadata</p>'
    figures = "".join(f'<figure><img src="{link(p)}" alt="{escape(name)} loss per step">'
                      f"<figcaption>{escape(name)}</figcaption></figure>" for name, p in inputs.loss_plots.items())
    return f'<h2 id="losses">Loss curves</h2><p>Mean loss per denoising step, per cell.</p>{figures}'


def _prompt_section(inputs: PageInputs, link: Callable[..., str], index: int, prompt: str) -> str:
    c = inputs.contents
    out = [f'<section id="prompt-{index}"><h3>{escape(prompt)}</h3>']
    scores = inputs.per_prompt.get(prompt)
    if scores and inputs.metrics:
        head = "".join(f"<th>{escape(m)}</th>" for m in inputs.metrics)
        body = "".join(
            f"<tr><td>{escape(cell)}</td>" + "".join(
                f"<td>{'-' if vals.get(m) is None else f'{vals[m]:.4f}'}</td>" for m in inputs.metrics) + "</tr>"
            for cell, vals in scores.items())
        out.append(f"<table><tr><th>cell (mean over seeds)</th>{head}</tr>{body}</table>")
    head = "".join(f"<th>{escape(cell)}</th>" for cell in c.cells)
    rows = []
    for seed in c.seeds:
        tds = []
        for cell in c.cells:
            entry = c.image(cell, prompt, seed)
            if entry is None:
                tds.append('<td class="missing">missing</td>')
            else:
                path = c.run_dir / entry.image
                img = image_tag(link(path), path, f"{cell} seed {seed}")
                tds.append(f'<td><a href="{link(path, image=False)}">{img}</a></td>')
        rows.append(f"<tr><th>seed {seed}</th>{''.join(tds)}</tr>")
    out.append(f'<table class="grid"><tr><th></th>{head}</tr>{"".join(rows)}</table>')
    if prompt in inputs.grids:
        out.append(f'<p><a href="{link(inputs.grids[prompt], image=False)}">comparison grid PNG</a></p>')
    sheets = [(e, inputs.sheets[e.image]) for e in c.images if e.prompt == prompt and e.image in inputs.sheets]
    if sheets:
        figs = "".join(_sheet_figure(e.cell, e.seed, s, link) for e, s in sheets)
        out.append(f'<details class="sheets"><summary>attention heat maps ({len(sheets)})</summary>{figs}</details>')
    out.append("</section>")
    return "\n".join(out)


def _sheet_figure(cell: str, seed: int, sheet: ScaledSheet, link: Callable[..., str]) -> str:
    """The sheet with its colour scale, linked to the sheet as the run wrote it."""
    value_range = sheet.value_range
    raw = (f"; raw attention {value_range.low:.4g} to {value_range.high:.4g}" if value_range is not None
           else "; raw values not saved")
    return (f'<figure><a href="{link(sheet.original, image=False)}"><img src="{link(sheet.scaled)}" '
            f'alt="heat maps {escape(cell)} seed {seed}"></a><figcaption>{escape(cell)}, seed {seed} '
            f"(colours: each map from its own min to max{raw})</figcaption></figure>")
