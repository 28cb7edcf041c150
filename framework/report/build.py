"""``build_report``: read a run (and its metrics, when evaluated), write report.html/.csv/.md."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..results.files import atomic_write
from ..results.reader import RunContents, read_run
from .colour_scale import map_range, with_colour_scale
from .page import Links, PageInputs, ScaledSheet, render_page
from .plots import loss_series, plot_losses, unguided_cells
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


def _scaled_sheets(contents: RunContents, assets: Path) -> dict[str, ScaledSheet]:
    """Each image's heat-map sheet copied to ``assets/heatmaps/<cell>/`` with a colour scale;
    keyed by the image's relative path."""
    from PIL import Image

    out: dict[str, ScaledSheet] = {}
    for entry in contents.images:
        sheet = entry.sibling("heatmaps.png")
        if not sheet or not (contents.run_dir / sheet).is_file():
            continue
        maps = entry.sibling("maps.safetensors")
        value_range = map_range(contents.run_dir / maps) if maps else None
        target = assets / "heatmaps" / Path(sheet)
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(contents.run_dir / sheet) as image:
            scaled = with_colour_scale(image, value_range)
        atomic_write(target, _png_writer(scaled))
        out[entry.image] = ScaledSheet(contents.run_dir / sheet, target, value_range)
    return out


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
    lower = _lower_is_better(summary, metrics)
    plots = plot_losses(loss_series(contents.images), out / ASSETS, contents.cells, unguided_cells(contents))
    inputs = PageInputs(contents, rows, metrics, (summary or {}).get("per_prompt") or {}, plots, _grids(contents),
                        _scaled_sheets(contents, out / ASSETS), lower)
    page = render_page(inputs, Links(out.resolve(), embed), title or f"attnguide report: {contents.name}")
    md = _markdown(contents, rows, list(metrics), plots, out, lower)
    paths = {}
    for name, text in ((HTML, page), (CSV, to_csv(rows, list(metrics))), (MARKDOWN, md)):
        paths[name] = atomic_write(out / name, _text_writer(text))
    return Report(paths[HTML], paths[CSV], paths[MARKDOWN], plots)


def _lower_is_better(summary: dict[str, Any] | None, metrics: dict[str, str]) -> frozenset[str]:
    """The summary's ``lower_is_better`` list; for a summary written before it had one, the
    metrics known to be lower-is-better."""
    from ..metrics.toy_judge import LOWER_IS_BETTER

    listed = (summary or {}).get("lower_is_better")
    names = listed if isinstance(listed, list) else [m for m in metrics if m in LOWER_IS_BETTER]
    return frozenset(str(m) for m in names)


def _png_writer(image: Any) -> Callable[[IO[bytes]], None]:
    """``atomic_write``'s callback that writes ``image`` (PIL) as PNG."""
    def write(handle: IO[bytes]) -> None:
        image.save(handle, format="PNG")

    return write


def _text_writer(text: str) -> Callable[[IO[bytes]], int]:
    """``atomic_write``'s callback that writes ``text`` as UTF-8."""
    return lambda f: f.write(text.encode("utf-8"))


def _markdown(contents: RunContents, rows: list[Any], metrics: list[str], plots: dict[str, Path], out: Path,
              lower: frozenset[str] = frozenset()) -> str:
    links = Links(out.resolve(), embed=False)
    lines = [f"# attnguide report: {contents.name}", "",
             f"{len(contents.images)} images: {len(contents.cells)} cells x {len(contents.prompts)} prompts x "
             f"{len(contents.seeds)} seeds" + (f", {len(contents.failed)} failed" if contents.failed else "") + ".", ""]
    if metrics:
        lines += ["Mean over images [95% bootstrap interval]; best per column in bold.", "",
                  to_markdown(rows, metrics, lower)]
    else:
        lines += ["No metrics yet: run `attnguide evaluate RUN_DIR`.", ""]
    for name, path in plots.items():
        lines += [f"![{name} loss per step]({links(path)})", ""]
    lines += ["## Prompts", ""] + [f"- {p}" for p in contents.prompts]
    return "\n".join(lines) + "\n"
