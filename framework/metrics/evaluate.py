"""Score every image of a run and aggregate per sweep cell.

Writes ``RUN_DIR/metrics.jsonl`` (one row per image) and ``RUN_DIR/metrics_summary.json``
(per cell: mean and bootstrap interval of every scalar metric; per prompt: per-cell means).
Scorers can be passed in (tests use tiny random models); otherwise they are loaded by id.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..results.files import atomic_write, write_json
from ..results.reader import ImageEntry, read_run
from .models import DEFAULT_BLIP_VQA, DEFAULT_CLIP
from .phrases import noun_phrases
from .stats import BOOTSTRAP_SAMPLES, CONFIDENCE, bootstrap_ci, phrase_preference
from .toy_judge import LOWER_IS_BETTER, TOY_SCALARS, is_toyworld_run, judge_image, toy_objects
from .vqa import DEFAULT_TEMPLATE

METRICS_FILE, SUMMARY_FILE = "metrics.jsonl", "metrics_summary.json"
FAMILIES = ("clip", "vqa", "toy")
AUTO = "auto"  # toy for runs of the toyworld model, clip and vqa for every other run
# scalar metrics per image, in report order; higher is better except for LOWER_IS_BETTER
SCALARS: dict[str, str] = {
    "clip_score": "CLIP similarity of image and full prompt",
    "clip_min_object": "minimum over noun phrases of CLIP similarity (Attend-and-Excite)",
    "syngen_preference": "mean over phrases of CLIP softmax across cells (SynGen); 1/cells = chance",
    "syngen_win": "share of (prompt, seed) where this cell's image is SynGen's preferred one",
    "blip_vqa": "product over noun phrases of BLIP-VQA P(yes) (T2I-CompBench style)",
    **TOY_SCALARS,
}


@dataclass
class EvalSettings:
    """What to compute and with which models (also recorded in the summary)."""

    metrics: tuple[str, ...] = (AUTO,)
    clip_model: str = DEFAULT_CLIP
    vqa_model: str = DEFAULT_BLIP_VQA
    phrases: str = "auto"
    clip_templates: tuple[str, ...] = ("{}",)
    vqa_template: str = DEFAULT_TEMPLATE
    bootstrap_samples: int = BOOTSTRAP_SAMPLES
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if tuple(self.metrics) == (AUTO,):
            return
        unknown = [m for m in self.metrics if m not in FAMILIES]
        if unknown or not self.metrics:
            raise ConfigError(f"unknown metrics {unknown or list(self.metrics)!r}; choose from {', '.join(FAMILIES)} "
                              f"(or {AUTO!r} alone)")


@dataclass
class EvalResult:
    run_dir: Path
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    files: list[Path] = field(default_factory=list)


def evaluate_run(run_dir: Path | str, settings: EvalSettings | None = None, *, clip: Any = None,
                 vqa: Any = None, progress: bool = False) -> EvalResult:
    """Score the run's images, write ``metrics.jsonl`` and ``metrics_summary.json``.

    ``settings.metrics == ("auto",)`` (the default) scores a run of the ``toyworld`` model with
    the toy judge (no model to load) and any other run with CLIP and BLIP-VQA.

    Args:
        clip: a ``ClipScorer``; loaded from ``settings.clip_model`` when needed and not given.
        vqa: a ``BlipVqaScorer``; loaded from ``settings.vqa_model`` likewise.
    """
    settings = settings or EvalSettings()
    contents = read_run(run_dir)
    if tuple(settings.metrics) == (AUTO,):
        settings = replace(settings, metrics=("toy",) if is_toyworld_run(contents) else ("clip", "vqa"))
    if "toy" in settings.metrics:
        for prompt in contents.prompts:
            toy_objects(prompt)  # a prompt the judge cannot read fails before any scoring
    clip, vqa = _scorers(settings, clip, vqa)
    rows = score_images(contents.run_dir, contents.images, settings, clip=clip, vqa=vqa, progress=progress)
    add_preferences(rows)
    summary = summarise(rows, contents.cells, contents.prompts, settings)
    summary["run"] = contents.name
    text = "".join(json.dumps(row) + "\n" for row in rows)
    files = [atomic_write(contents.run_dir / METRICS_FILE, lambda f: f.write(text.encode("utf-8"))),
             write_json(contents.run_dir / SUMMARY_FILE, summary)]
    return EvalResult(contents.run_dir, rows, summary, files)


def _scorers(settings: EvalSettings, clip: Any, vqa: Any) -> tuple[Any, Any]:
    from .clip_score import ClipScorer
    from .models import load_blip_vqa, load_clip
    from .vqa import BlipVqaScorer

    if "clip" in settings.metrics and clip is None:
        model, processor = load_clip(settings.clip_model, settings.device)
        clip = ClipScorer(model, processor, templates=settings.clip_templates, device=settings.device)
    if "vqa" in settings.metrics and vqa is None:
        model, processor = load_blip_vqa(settings.vqa_model, settings.device)
        vqa = BlipVqaScorer(model, processor, template=settings.vqa_template, device=settings.device)
    return (clip if "clip" in settings.metrics else None), (vqa if "vqa" in settings.metrics else None)


def score_images(run_dir: Path, images: Sequence[ImageEntry], settings: EvalSettings, *, clip: Any = None,
                 vqa: Any = None, progress: bool = False, batch: int = 16) -> list[dict[str, Any]]:
    """One row per image: identity, noun phrases and the scores of each metric family."""
    from PIL import Image
    from tqdm.auto import tqdm

    rows = []
    with tqdm(total=len(images), desc="evaluating", unit="img", disable=not progress) as bar:
        for start in range(0, len(images), batch):
            chunk = images[start : start + batch]
            pictures = [Image.open(run_dir / e.image).convert("RGB") for e in chunk]
            embeddings: Any = clip.image_embeddings(pictures) if clip is not None else None
            for k, (entry, picture) in enumerate(zip(chunk, pictures)):
                row: dict[str, Any] = {"cell": entry.cell, "prompt": entry.prompt, "seed": entry.seed,
                                       "image": entry.image}
                if clip is not None or vqa is not None:
                    phrases, method = noun_phrases(entry.prompt, settings.phrases)
                    row.update(phrases=phrases, phrase_method=method)
                if clip is not None:
                    scores = clip.score(embeddings[k], entry.prompt, phrases)
                    row.update(clip_score=scores.full, clip_min_object=scores.min_object,
                               clip_phrases=scores.phrases, clip_phrase_logits=scores.phrase_logits)
                if vqa is not None:
                    row["blip_vqa"], row["vqa_p_yes"] = vqa.score(picture, phrases)
                if "toy" in settings.metrics:
                    row.update(judge_image(picture, entry.prompt))
                rows.append(row)
                bar.update(1)
    return rows


def add_preferences(rows: list[dict[str, Any]]) -> None:
    """SynGen's comparison: among the images of one (prompt, seed) from different cells, each
    gets ``syngen_preference`` and ``syngen_win`` (1 for the preferred image, ties shared)."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if "clip_phrase_logits" in row:
            groups[(row["prompt"], row["seed"])].append(row)
    for group in groups.values():
        if len({r["cell"] for r in group}) < 2:
            continue
        prefs = phrase_preference([r["clip_phrase_logits"] for r in group])
        best = max(prefs)
        winners = [i for i, p in enumerate(prefs) if abs(p - best) <= 1e-12]
        for i, (row, pref) in enumerate(zip(group, prefs)):
            row["syngen_preference"] = pref
            row["syngen_win"] = 1.0 / len(winners) if i in winners else 0.0


def summarise(rows: list[dict[str, Any]], cells: Sequence[str], prompts: Sequence[str],
              settings: EvalSettings) -> dict[str, Any]:
    """Per cell and metric: mean and interval over images; per prompt and cell: means."""
    present = [m for m in SCALARS if any(m in r for r in rows)]
    by_cell: dict[str, dict[str, Any]] = {}
    for cell in cells:
        mine = [r for r in rows if r["cell"] == cell]
        by_cell[cell] = {m: bootstrap_ci([r[m] for r in mine if m in r], samples=settings.bootstrap_samples,
                                         seed=settings.seed).to_dict() for m in present}
        by_cell[cell]["images"] = len(mine)
    per_prompt: dict[str, dict[str, dict[str, float | None]]] = {}
    for prompt in prompts:
        per_prompt[prompt] = {}
        for cell in cells:
            mine = [r for r in rows if r["cell"] == cell and r["prompt"] == prompt]
            if mine:
                per_prompt[prompt][cell] = {m: _mean([r[m] for r in mine if m in r]) for m in present}
    return {"settings": asdict(settings), "metrics": {m: SCALARS[m] for m in present},
            "lower_is_better": [m for m in present if m in LOWER_IS_BETTER],
            "confidence": CONFIDENCE, "cells": by_cell, "per_prompt": per_prompt}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
