"""``attnguide report``: a static page whose every link resolves, with metrics, curves and maps."""

from __future__ import annotations

import base64
import csv
import io
import json
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
from PIL import Image

from attnguide.cli.main import main
from attnguide.metrics import EvalSettings, evaluate_run
from attnguide.report import build_report
from attnguide.report.plots import loss_series
from attnguide.results.reader import read_run
from metric_helpers import make_run_dir, one_thread, tiny_clip_scorer, tiny_vqa_scorer

pytestmark = pytest.mark.usefixtures("one_thread")


class Page(HTMLParser):
    """Collects links, images, highlighted cells and the text of a page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.best: list[tuple[int, int]] = []  # (row, column) of td.best in the first table
        self.external: list[str] = []
        self.text: list[str] = []
        self._table = self._row = self._col = -1
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "a" and not attrs.get("href", "").startswith("#"):
            self.links.append(attrs["href"])
        if tag in ("script", "link", "iframe"):
            self.external.append(tag)
        if tag == "table":
            self._table += 1
            self._row = -1
        if tag == "tr":
            self._row, self._col = self._row + 1, -1
        if tag in ("td", "th"):
            self._col += 1
            if attrs.get("class") == "best" and self._table == 0:
                self.best.append((self._row, self._col))

    def handle_data(self, data):
        self.text.append(data)


def resolves(page_dir: Path, ref: str) -> bool:
    if ref.startswith("data:image/png;base64,"):
        return Image.open(io.BytesIO(base64.b64decode(ref.split(",", 1)[1]))).format == "PNG"
    assert "://" not in ref and not ref.startswith("/"), f"not a relative link: {ref}"
    return (page_dir / unquote(ref)).is_file()


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, one_thread):
    """``attnguide run`` on the tiny model: no guidance vs SynGen, heat maps, 2 seeds; evaluated."""
    root = tmp_path_factory.mktemp("report")
    recipe = root / "r.yaml"
    recipe.write_text(
        "name: t\nmodel: tiny\nruntime: {accelerator: cpu, devices: 1}\n"
        "sampling: {steps: 2, guidance_scale: 7.5, height: 128, width: 128}\nattention: {resolution: 16}\n"
        "callbacks: [heatmaps]\nprompts: [a red car and a blue dog]\nseeds: [0, 1]\n"
        f"output_dir: {root / 'out'}\n"
        "sweep:\n  method:\n    none: {losses: []}\n    syngen: {losses: [{name: syngen}]}\n", encoding="utf-8")
    assert main(["run", str(recipe), "--quiet"]) == 0
    run_dir = root / "out" / "t"
    evaluate_run(run_dir, EvalSettings(bootstrap_samples=200, phrases="split"), clip=tiny_clip_scorer(),
                 vqa=tiny_vqa_scorer())
    return run_dir


def test_the_report_of_a_real_run_shows_grid_metrics_curves_maps_and_recipe(real_run):
    report = build_report(real_run)
    page = Page(report.html.read_text(encoding="utf-8"))
    assert page.images and all(resolves(report.html.parent, src) for src in page.images + page.links)
    assert not page.external, "the page must not load scripts or styles from anywhere"
    for cell in ("method-none", "method-syngen"):
        for seed in (0, 1):
            assert f"{cell}/a_red_car_and_a_blue_dog_s{seed}.png" in page.images
            assert f"{cell}/a_red_car_and_a_blue_dog_s{seed}.heatmaps.png" in page.links
            assert f"report_files/heatmaps/{cell}/a_red_car_and_a_blue_dog_s{seed}.heatmaps.png" in page.images
    assert "report_files/loss_syngen.png" in page.images and set(report.loss_plots) == {"syngen"}
    assert "grids/a_red_car_and_a_blue_dog.png" in page.links
    text = "".join(page.text)
    assert "name: t" in text and "clip_min_object" in text and "blip_vqa" in text
    assert text.count("raw attention ") == 4, "each sheet gives the value range of its saved maps"
    rows = list(csv.DictReader(report.csv.read_text().splitlines()))
    assert [(r["cell"], r["method"], r["images"]) for r in rows] == [("method-none", "none", "2"),
                                                                    ("method-syngen", "syngen", "2")]
    summary = json.loads((real_run / "metrics_summary.json").read_text())
    assert float(rows[1]["clip_score_mean"]) == pytest.approx(summary["cells"]["method-syngen"]["clip_score"]["mean"])
    assert "| method-syngen | 2 |" in report.markdown.read_text()


def test_the_report_command_writes_to_another_folder_with_working_links(real_run, tmp_path, capsys):
    out = tmp_path / "elsewhere"
    assert main(["report", str(real_run), "--out", str(out)]) == 0
    assert "report.html" in capsys.readouterr().out
    page = Page((out / "report.html").read_text(encoding="utf-8"))
    assert all(resolves(out, ref) for ref in page.images + page.links)


def test_embedded_images_make_one_portable_file(tmp_path):
    run_dir = make_run_dir(tmp_path, prompts=("a cat and a dog",), seeds=(0,))
    report = build_report(run_dir, tmp_path / "portable", embed=True)
    page = Page(report.html.read_text(encoding="utf-8"))
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert all(resolves(report.html.parent, src) for src in page.images)


def test_the_best_cell_of_each_metric_is_highlighted(tmp_path):
    run_dir = make_run_dir(tmp_path, cells=("a", "b", "c"), prompts=("a cat",), seeds=(0,))
    est = lambda m: {"mean": m, "ci_low": m - 0.1, "ci_high": m + 0.1, "n": 1}  # noqa: E731
    summary = {"metrics": {"clip_score": "x", "blip_vqa": "y", "syngen_win": "z"}, "per_prompt": {},
               "cells": {"a": {"clip_score": est(0.3), "blip_vqa": est(0.1), "syngen_win": est(0.5)},
                         "b": {"clip_score": est(0.2), "blip_vqa": est(0.4), "syngen_win": est(0.5)},
                         "c": {"clip_score": est(0.1), "blip_vqa": est(0.2), "syngen_win": est(0.5)}}}
    (run_dir / "metrics_summary.json").write_text(json.dumps(summary))
    report = build_report(run_dir)
    page = Page(report.html.read_text(encoding="utf-8"))
    # rows: header, a, b, c; columns: cell, images, clip_score, blip_vqa, syngen_win (all equal: none)
    assert sorted(page.best) == [(1, 2), (2, 3)]
    md = report.markdown.read_text()
    assert "**0.3000 [0.2000, 0.4000]**" in md and "**0.4000 [0.3000, 0.5000]**" in md
    assert "**0.5000" not in md


def test_without_metrics_the_page_says_how_to_compute_them_and_marks_missing_images(tmp_path):
    run_dir = make_run_dir(tmp_path, prompts=("a cat and a dog",), seeds=(0, 1))
    (run_dir / "method-syngen" / "a_cat_and_a_dog_s1.png").unlink()
    with open(run_dir / "results.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"cell": "method-syngen", "prompt": "a cat and a dog", "seed": 1,
                                 "status": "failed", "error": "boom"}) + "\n")
    report = build_report(run_dir)
    html = report.html.read_text(encoding="utf-8")
    assert "attnguide evaluate RUN_DIR" in html and "1 failed" in html
    assert html.count('class="missing"') == 1
    page = Page(html)
    assert all(resolves(report.html.parent, ref) for ref in page.images + page.links)


def test_loss_curves_average_the_first_evaluation_of_each_step(tmp_path):
    run_dir = make_run_dir(tmp_path, cells=("none", "syngen"), prompts=("a cat",), seeds=(0, 1))
    meta_path = run_dir / "syngen" / "a_cat_s0.json"
    meta = json.loads(meta_path.read_text())
    meta["losses"].append({"step": 0, "refinement": 1, "plugin": "syngen", "value": 100.0})
    meta_path.write_text(json.dumps(meta))
    series = loss_series(read_run(run_dir).images)
    assert set(series) == {"syngen"} and set(series["syngen"]) == {"syngen"}
    steps = dict(series["syngen"]["syngen"])
    assert steps[0] == pytest.approx((1.0 + 1.01) / 2) and steps[3] == pytest.approx((0.25 + 0.26) / 2)


def test_a_run_directory_is_read_without_its_index_and_errors_name_the_folder(tmp_path, capsys):
    run_dir = make_run_dir(tmp_path, cells=("x", "y"), prompts=("a cat", "a dog"), seeds=(0, 1), results=False)
    contents = read_run(run_dir)
    assert contents.cells == ["x", "y"] and contents.prompts == ["a cat", "a dog"] and contents.seeds == [0, 1]
    assert contents.image("y", "a dog", 1).image == "y/a_dog_s1.png"
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
