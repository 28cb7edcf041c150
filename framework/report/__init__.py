"""Static reports of a run: ``build_report`` writes report.html (comparison grids, metrics with
confidence intervals, loss curves, heat maps, the resolved recipe), report.csv and report.md."""

from __future__ import annotations

from .build import Report, build_report

__all__ = ["Report", "build_report"]
