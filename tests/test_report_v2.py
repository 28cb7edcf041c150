"""The report shows small images enlarged without smoothing, heat-map sheets with a colour scale,
loss plots with whole-number steps and an unguided reference, and lower-is-better rates."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from metric_helpers import make_run_dir
from PIL import Image
from safetensors.torch import save_file
from test_report import Page, resolves

from attnguide.plugins.heatmaps import colorize
from attnguide.report import build_report
from attnguide.report.colour_scale import BAR_WIDTH, MARGIN, STRIP_WIDTH
from attnguide.report.page import MIN_DISPLAY_PX
from attnguide.report.plots import loss_figure, unguided_cells
from attnguide.results.reader import read_run


def img_tags(html: str) -> list[dict[str, str]]:
    return [dict(re.findall(r'(\w+)="([^"]*)"', tag)) for tag in re.findall(r"<img [^>]*>", html)]


def test_small_images_are_enlarged_by_a_whole_factor_with_nearest_neighbour_rendering(tmp_path):
    run_dir = make_run_dir(tmp_path, prompts=("a cat",), seeds=(0,))  # 48 x 48 images
    Image.new("RGB", (512, 384), "gray").save(run_dir / "method-syngen" / "a_cat_s0.png")
    report = build_report(run_dir)
    html = report.html.read_text(encoding="utf-8")
    tags = {t["alt"]: t for t in img_tags(html)}
    small = tags["method-none seed 0"]
    assert small.get("class") == "pixelated"
    assert int(small["width"]) == int(small["height"]) == 48 * 6 >= MIN_DISPLAY_PX
    assert re.search(r"img\.pixelated\{image-rendering:pixelated", html)
    large = tags["method-syngen seed 0"]
    assert "class" not in large and "width" not in large


def write_sheet(run_dir: Path, cell: str, stem: str, low: float, high: float) -> Image.Image:
    """A fake heat-map sheet and its maps (two steps of ``[2, 4, 4]`` spanning ``low..high``)."""
    sheet = Image.new("RGB", (384, 300), (200, 200, 200))
    sheet.save(run_dir / cell / f"{stem}.heatmaps.png")
    maps = {"step000": torch.full((2, 4, 4), (low + high) / 2), "step002": torch.full((2, 4, 4), (low + high) / 2)}
    maps["step000"][0, 0, 0], maps["step002"][1, 3, 3] = low, high
    save_file(maps, str(run_dir / cell / f"{stem}.maps.safetensors"))
    meta_path = run_dir / cell / f"{stem}.json"
    meta = json.loads(meta_path.read_text())
    meta["files"].update({"heatmaps.png": f"{stem}.heatmaps.png", "maps.safetensors": f"{stem}.maps.safetensors"})
    meta_path.write_text(json.dumps(meta))
    return sheet


def test_heat_map_sheets_are_shown_with_a_colour_bar_and_their_raw_value_range(tmp_path):
    run_dir = make_run_dir(tmp_path, prompts=("a cat",), seeds=(0,))
    sheet = write_sheet(run_dir, "method-syngen", "a_cat_s0", 0.0125, 0.375)
    report = build_report(run_dir)
    html = report.html.read_text(encoding="utf-8")
    page = Page(html)
    assert all(resolves(report.html.parent, ref) for ref in page.images + page.links)
    assert "method-syngen/a_cat_s0.heatmaps.png" in page.links  # the sheet as the run wrote it
    shown = report.html.parent / "report_files/heatmaps/method-syngen/a_cat_s0.heatmaps.png"
    assert "report_files/heatmaps/method-syngen/a_cat_s0.heatmaps.png" in page.images
    scaled = np.asarray(Image.open(shown).convert("RGB")).astype(int)
    assert scaled.shape[1] == sheet.width + STRIP_WIDTH
    assert (scaled[:300, :384] == 200).all(), "the sheet itself is unchanged"
    column = scaled[:, sheet.width + MARGIN + BAR_WIDTH // 2]
    bar = [tuple(px) for px in column if len(set(px)) > 1]  # coloured: not white, black or grey text
    top, bottom = colorize(np.array([[1.0], [0.0]], dtype=np.float32))[:, 0]
    assert np.abs(np.array(bar[0]) - top).max() <= 3 and np.abs(np.array(bar[-1]) - bottom).max() <= 3
    assert len(bar) > 60, "a bar, not a swatch"
    assert "raw attention 0.0125 to 0.375" in "".join(page.text)


def test_a_sheet_without_saved_maps_still_gets_a_colour_bar_and_says_the_range_is_unknown(tmp_path):
    run_dir = make_run_dir(tmp_path, prompts=("a cat",), seeds=(0,))
    write_sheet(run_dir, "method-none", "a_cat_s0", 0.1, 0.2)
    (run_dir / "method-none" / "a_cat_s0.maps.safetensors").unlink()
    report = build_report(run_dir)
    assert "raw values not saved" in report.html.read_text(encoding="utf-8")
    shown = report.html.parent / "report_files/heatmaps/method-none/a_cat_s0.heatmaps.png"
    assert Image.open(shown).width == 384 + STRIP_WIDTH


def test_loss_plot_steps_are_whole_numbers(tmp_path):
    fig = loss_figure("syngen", {"syngen": [(0, 1.0), (1, 0.5)]}, ["none", "syngen"], ["none"])
    ax = fig.axes[0]
    low, high = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if low <= t <= high]
    assert ticks == [0.0, 1.0]


def test_the_unguided_cell_is_the_loss_plots_reference_or_the_legend_says_there_is_none():
    curves = {"syngen": [(0, 1.0), (1, 0.5), (2, 0.2)], "none": [(0, 1.2), (1, 1.1), (2, 1.0)]}
    ax = loss_figure("syngen", curves, ["none", "syngen"], ["none"]).axes[0]
    reference = next(line for line in ax.get_lines() if line.get_label() == "none (unguided reference)")
    assert reference.get_linestyle() == "--" and list(reference.get_ydata()) == [1.2, 1.1, 1.0]
    ax = loss_figure("syngen", {"syngen": curves["syngen"]}, ["none", "syngen"], ["none"]).axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["syngen", "no unguided reference: none (unguided) recorded no syngen loss"]
    ax = loss_figure("syngen", {"syngen": curves["syngen"]}, ["syngen"], []).axes[0]
    assert "no unguided reference: the run has no unguided cell" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_unguided_cells_are_those_whose_recipe_lists_no_loss(tmp_path):
    run_dir = make_run_dir(tmp_path, cells=("plain", "guided"), prompts=("a cat",), seeds=(0,))
    for cell, losses in (("plain", []), ("guided", [{"name": "syngen"}])):
        path = run_dir / cell / "a_cat_s0.json"
        meta = json.loads(path.read_text())
        meta["config"] = {"losses": losses}
        path.write_text(json.dumps(meta))
    assert unguided_cells(read_run(run_dir)) == ["plain"]
    assert unguided_cells(read_run(make_run_dir(tmp_path / "b", prompts=("a cat",), seeds=(0,)))) == ["method-none"]


@pytest.mark.parametrize("lower", [True, False])
def test_the_best_cell_of_a_lower_is_better_rate_is_the_lowest(tmp_path, lower):
    run_dir = make_run_dir(tmp_path, cells=("a", "b"), prompts=("a cat",), seeds=(0,))
    est = lambda m: {"mean": m, "ci_low": m, "ci_high": m, "n": 1}  # noqa: E731
    summary = {"metrics": {"neglect_rate": "x"}, "per_prompt": {},
               "cells": {"a": {"neglect_rate": est(0.1)}, "b": {"neglect_rate": est(0.6)}}}
    if not lower:
        summary["lower_is_better"] = []  # the summary's own list wins over the known names
    (run_dir / "metrics_summary.json").write_text(json.dumps(summary))
    page = Page(build_report(run_dir).html.read_text(encoding="utf-8"))
    assert page.best == [(1 if lower else 2, 2)]
