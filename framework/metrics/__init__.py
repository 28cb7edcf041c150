"""Evaluation metrics: CLIP similarity (full prompt, per noun phrase, A&E's minimum object,
SynGen's per-phrase comparison) and a BLIP-VQA binding score, aggregated with bootstrap CIs.

``evaluate_run`` is what ``attnguide evaluate`` calls; docs/evaluation.md describes each metric.
"""

from __future__ import annotations

from .clip_score import ClipScorer, ClipScores
from .evaluate import SCALARS, EvalResult, EvalSettings, evaluate_run
from .models import DEFAULT_BLIP_VQA, DEFAULT_CLIP, load_blip_vqa, load_clip
from .phrases import noun_phrases, split_phrases
from .stats import Estimate, bootstrap_ci, phrase_preference
from .vqa import BlipVqaScorer

__all__ = [
    "DEFAULT_BLIP_VQA",
    "DEFAULT_CLIP",
    "SCALARS",
    "BlipVqaScorer",
    "ClipScorer",
    "ClipScores",
    "Estimate",
    "EvalResult",
    "EvalSettings",
    "bootstrap_ci",
    "evaluate_run",
    "load_blip_vqa",
    "load_clip",
    "noun_phrases",
    "phrase_preference",
    "split_phrases",
]
