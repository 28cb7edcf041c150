"""Per-step loss curves: for each loss plugin one PNG, one line per sweep cell.

A line is the mean over the cell's images of the loss at each step's first evaluation
(``refinement == 0``, what the update at that step started from), read from the ``losses``
list of each image's metadata. Drawn with matplotlib's object API (no pyplot, no display).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from ..results.reader import ImageEntry

Series = dict[str, dict[str, list[tuple[int, float]]]]  # plugin -> cell -> [(step, mean value)]


def loss_series(images: Sequence[ImageEntry]) -> Series:
    sums: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for entry in images:
        for term in entry.meta.get("losses") or []:
            if not isinstance(term, dict) or term.get("refinement", 0) != 0:
                continue
            try:
                key = (str(term["plugin"]), entry.cell, int(term["step"]))
                sums[key].append(float(term["value"]))
            except (KeyError, TypeError, ValueError):
                continue
    series: Series = defaultdict(lambda: defaultdict(list))
    for (plugin, cell, step), values in sorted(sums.items(), key=lambda kv: kv[0]):
        series[plugin][cell].append((step, sum(values) / len(values)))
    return {p: dict(c) for p, c in series.items()}


def plot_losses(series: Series, out_dir: Path, cells: Sequence[str]) -> dict[str, Path]:
    """``{plugin: PNG path}``, one plot per plugin, lines in the order of ``cells``."""
    from matplotlib.figure import Figure

    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for plugin, by_cell in series.items():
        fig = Figure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
        ax = fig.subplots()
        for cell in [c for c in cells if c in by_cell]:
            steps, values = zip(*by_cell[cell])
            ax.plot(steps, values, marker="o", markersize=3, label=cell)
        ax.set_xlabel("denoising step")
        ax.set_ylabel(f"{plugin} loss (mean over images)")
        ax.set_title(plugin)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        path = out_dir / f"loss_{_file_safe(plugin)}.png"
        fig.savefig(path, format="png")
        written[plugin] = path
    return written


def _file_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
