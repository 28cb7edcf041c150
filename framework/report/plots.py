"""Per-step loss curves: for each loss plugin one PNG, one line per sweep cell.

A line is the mean over the cell's images of the loss at each step's first evaluation
(``refinement == 0``, what the update at that step started from), read from the ``losses``
list of each image's metadata. Drawn with matplotlib's object API (no pyplot, no display).

Steps are whole numbers on the x axis. The unguided cells (no loss in their recipe) are the
reference: where one recorded values of a loss they are drawn as a dashed black line; where it
recorded none (an unguided run evaluates no loss) or the run has no unguided cell, the legend
says that there is no reference.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..results.reader import ImageEntry, RunContents

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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


def unguided_cells(contents: RunContents) -> list[str]:
    """Cells run without guidance: every image's recipe (``config.losses`` in its metadata)
    lists no loss; for metadata without a ``config``, a cell named or labelled ``none``."""
    out = []
    for cell in contents.cells:
        metas = [e.meta for e in contents.images if e.cell == cell]
        configs = [m.get("config") for m in metas]
        if configs and all(isinstance(c, dict) for c in configs):
            if all(not c.get("losses") for c in configs if isinstance(c, dict)):
                out.append(cell)
        elif cell in ("none", "method-none") or "none" in contents.cell_labels.get(cell, {}).values():
            out.append(cell)
    return out


def loss_figure(plugin: str, by_cell: dict[str, list[tuple[int, float]]], cells: Sequence[str],
                unguided: Sequence[str] = ()) -> Figure:
    """One plugin's plot: a line per guided cell (in the order of ``cells``), the unguided cells'
    values as a dashed reference where recorded, else a legend entry saying there is none."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
    ax = fig.subplots()
    for cell in [c for c in cells if c in by_cell and c not in unguided]:
        steps, values = zip(*by_cell[cell])
        ax.plot(steps, values, marker="o", markersize=3, label=cell)
    references = [c for c in unguided if c in by_cell]
    for cell in references:
        steps, values = zip(*by_cell[cell])
        ax.plot(steps, values, color="black", linestyle="--", label=f"{cell} (unguided reference)")
    if not references:
        note = (f"no unguided reference: {', '.join(unguided)} (unguided) recorded no {plugin} loss" if unguided
                else "no unguided reference: the run has no unguided cell")
        ax.plot([], [], linestyle="none", label=note)  # a legend line with no mark
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("denoising step")
    ax.set_ylabel(f"{plugin} loss (mean over images)")
    ax.set_title(plugin)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def plot_losses(series: Series, out_dir: Path, cells: Sequence[str], unguided: Sequence[str] = ()) -> dict[str, Path]:
    """``{plugin: PNG path}``, one plot per plugin (``loss_figure``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for plugin, by_cell in series.items():
        path = out_dir / f"loss_{_file_safe(plugin)}.png"
        loss_figure(plugin, by_cell, cells, unguided).savefig(path, format="png")
        written[plugin] = path
    return written


def _file_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
