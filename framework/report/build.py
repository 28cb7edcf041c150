"""``build_report``: read a run (and its metrics, when evaluated), write report.html/.csv/.md."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..results.files import atomic_write
from ..results.reader import RunContents, read_run
from .page import Links, PageInputs, render_page
from .plots import loss_series, plot_losses
from .tables import cell_rows, to_csv, to_markdown

HTML, CSV, MARKDOWN, ASSETS = "report.html", "report.csv", "report.md", "report_files"


@dataclass
class Report:
    html: Path
    csv: Path
    markdown: Path
    loss_plots: dict[str, Path]


def load_summary(run_dir: Path, contents: RunContents) -> dict[str, Any] | None:
    """``metrics_summary.json``; rebuilt from ``metrics.jsonl`` when only that exists."""
    from ..metrics.evaluate import METRICS_FILE, SUMMARY_FILE

    try:
        summary: dict[str, Any] = json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
        return summary
    except (OSError, ValueError):
        pass
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return None
    from ..metrics.evaluate import EvalSettings, summarise

    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return summarise(rows, contents.cells, contents.prompts, EvalSettings()) if rows else None


def _grids(contents: RunContents) -> dict[str, Path]:
    """The runner's ``grids/<prompt stem>.png`` per prompt, where it exists."""
    from ..runs.jobs import prompt_stems

    stems = prompt_stems(contents.prompts)
    found = {p: contents.run_dir / "grids" / f"{stems[p]}.png" for p in contents.prompts}
    return {p: path for p, path in found.items() if path.is_file()}


def build_report(run_dir: Path | str, out_dir: Path | str | None = None, *, embed: bool = False,
                 title: str | None = None) -> Report:
    """Write ``report.html`` (self-contained: relative links or, with ``embed``, data URIs),
    ``report.csv`` and ``report.md`` into ``out_dir`` (default: the run directory)."""
    contents = read_run(run_dir)
    out = Path(out_dir) if out_dir is not None else contents.run_dir
    out.mkdir(parents=True, exist_ok=True)
    summary = load_summary(contents.run_dir, contents)
    rows = cell_rows(contents, summary)
    metrics = dict((summary or {}).get("metrics") or {})
    plots = plot_losses(loss_series(contents.images), out / ASSETS, contents.cells)
    inputs = PageInputs(contents, rows, metrics, (summary or {}).get("per_prompt") or {}, plots, _grids(contents))
    page = render_page(inputs, Links(out.resolve(), embed), title or f"attnguide report: {contents.name}")
    md = _markdown(contents, rows, list(metrics), plots, out)
    paths = {}
    for name, text in ((HTML, page), (CSV, to_csv(rows, list(metrics))), (MARKDOWN, md)):
        paths[name] = atomic_write(out / name, _text_writer(text))
    return Report(paths[HTML], paths[CSV], paths[MARKDOWN], plots)


def _text_writer(text: str) -> Callable[[IO[bytes]], int]:
    """``atomic_write``'s callback that writes ``text`` as UTF-8."""
    return lambda f: f.write(text.encode("utf-8"))


def _markdown(contents: RunContents, rows: list[Any], metrics: list[str], plots: dict[str, Path], out: Path) -> str:
    links = Links(out.resolve(), embed=False)
    lines = [f"# attnguide report: {contents.name}", "",
             f"{len(contents.images)} images: {len(contents.cells)} cells x {len(contents.prompts)} prompts x "
             f"{len(contents.seeds)} seeds" + (f", {len(contents.failed)} failed" if contents.failed else "") + ".", ""]
    if metrics:
        lines += ["Mean over images [95% bootstrap interval]; best per column in bold.", "", to_markdown(rows, metrics)]
    else:
        lines += ["No metrics yet: run `attnguide evaluate RUN_DIR`.", ""]
    for name, path in plots.items():
        lines += [f"![{name} loss per step]({links(path)})", ""]
    lines += ["## Prompts", ""] + [f"- {p}" for p in contents.prompts]
    return "\n".join(lines) + "\n"
