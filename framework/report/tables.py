"""The per-cell table of a report: metric estimates, the best cell per metric, CSV and Markdown."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from ..results.reader import RunContents


@dataclass
class CellRow:
    """One sweep cell: its axis labels, image counts and ``{metric: {mean, ci_low, ci_high, n}}``."""

    cell: str
    labels: dict[str, str]
    images: int
    failed: int
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)


def cell_rows(contents: RunContents, summary: dict[str, Any] | None) -> list[CellRow]:
    cells = (summary or {}).get("cells", {})
    rows = []
    for cell in contents.cells:
        values = cells.get(cell, {})
        rows.append(CellRow(
            cell=cell,
            labels=contents.cell_labels.get(cell, {}),
            images=sum(1 for e in contents.images if e.cell == cell),
            failed=sum(1 for r in contents.failed if r.get("cell") == cell),
            metrics={k: v for k, v in values.items() if isinstance(v, dict)},
        ))
    return rows


def best_cells(rows: list[CellRow], metric: str, *, lower: bool = False) -> set[str]:
    """Cells whose mean of ``metric`` is the highest (the lowest with ``lower``, for rates such
    as ``neglect_rate``); none when fewer than two cells have a value or all of them are equal."""
    means = {r.cell: r.metrics.get(metric, {}).get("mean") for r in rows}
    known = {c: m for c, m in means.items() if m is not None}
    if len(known) < 2 or len(set(known.values())) == 1:
        return set()
    top = min(known.values()) if lower else max(known.values())
    return {c for c, m in known.items() if m == top}


def format_estimate(value: dict[str, Any] | None, digits: int = 4) -> str:
    if not value or value.get("mean") is None:
        return "-"
    return f"{value['mean']:.{digits}f} [{value['ci_low']:.{digits}f}, {value['ci_high']:.{digits}f}]"


def label_keys(rows: list[CellRow]) -> list[str]:
    return list(dict.fromkeys(k for r in rows for k in r.labels))


def to_csv(rows: list[CellRow], metrics: list[str]) -> str:
    """One line per cell: cell, its axis labels, counts, and mean/ci_low/ci_high/n per metric."""
    keys = label_keys(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["cell", *keys, "images", "failed",
                     *(f"{m}_{part}" for m in metrics for part in ("mean", "ci_low", "ci_high", "n"))])
    for r in rows:
        values = []
        for m in metrics:
            est = r.metrics.get(m, {})
            values += ["" if est.get(p) is None else est[p] for p in ("mean", "ci_low", "ci_high", "n")]
        writer.writerow([r.cell, *(r.labels.get(k, "") for k in keys), r.images, r.failed, *values])
    return buffer.getvalue()


def to_markdown(rows: list[CellRow], metrics: list[str], lower: frozenset[str] = frozenset()) -> str:
    """A Markdown table, the best value of each metric in bold (the lowest for ``lower``
    metrics, whose headers carry a "(lower is better)" mark)."""
    best = {m: best_cells(rows, m, lower=m in lower) for m in metrics}
    names = [f"{m} (lower is better)" if m in lower else m for m in metrics]
    lines = ["| cell | images | " + " | ".join(names) + " |", "|---" * (len(metrics) + 2) + "|"]
    for r in rows:
        cells = []
        for m in metrics:
            text = format_estimate(r.metrics.get(m))
            cells.append(f"**{text}**" if r.cell in best[m] else text)
        lines.append(f"| {r.cell} | {r.images} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
