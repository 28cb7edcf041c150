"""``attnguide tune --ablation``: several methods tuned on one calibration split and reported on
one held-out split against one shared ``none`` baseline (attnguide.tune.ablation)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tune_helpers import CountingEngine, redness, tiny_engine

from attnguide.cli.main import main
from attnguide.errors import ConfigError
from attnguide.plugin.manager import make_plugin_manager
from attnguide.tune.ablation import ablation_table, read_ablation, run_ablation, shipped_ablations
from attnguide.tune.method import check_space, method_specs
from attnguide.tune.splits import Sample


def test_the_shipped_toyworld_ablation_is_accepted_by_every_plugin_and_includes_paper_values():
    assert "toyworld" in shipped_ablations()
    entries = read_ablation("toyworld")
    registry = make_plugin_manager().registry
    labels = [e.label for e in entries]
    assert {"syngen", "entropy_syngen", "attend_excite", "astar"} <= set(labels)  # the four of version 1
    for entry in entries:
        specs = method_specs(entry.label, registry)
        check_space(specs, list(entry.dimensions), registry)
        dim = entry.dimensions[0]
        paper = registry.classes["loss"][specs[0]["name"]].Params.model_fields[dim.name].default
        assert paper in dim.values, (entry.label, dim.name, paper, dim.values)  # the paper setting is searched
    assert len({e.folder for e in entries}) == len(entries)


@pytest.mark.parametrize("text, words", [
    ("{}", "expected 'methods:"),
    ("methods: {syngen: {step_size: '1,2'}}\nextra: 1", "unknown key 'extra'"),
    ("methods: {syngen: {}}", "methods.syngen: expected {PARAM: VALUES"),
    ("methods: {syngen: {step_size: 'log:1..20'}}", "methods.syngen.step_size"),
    ("methods: {'a b': {x: '1'}, 'a_b': {x: '2'}}", "share the folder 'a_b'"),
    ("methods: [", "not valid YAML"),
])
def test_bad_ablation_files_name_the_file_and_key(tmp_path, text, words):
    path = tmp_path / "abl.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_ablation(str(path))
    assert words in str(info.value) and str(path) in str(info.value)


def test_an_unknown_ablation_name_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="not a shipped ablation.*toyworld"):
        read_ablation("toyworl")


@pytest.mark.parametrize("argv, words", [
    (["tune", "--out", "x"], "give --method NAME (one method) or --ablation FILE"),
    (["tune", "--method", "syngen", "--ablation", "toyworld", "--out", "x"], "not both or neither"),
    (["tune", "--ablation", "toyworld", "--param", "step_size=1,2", "--out", "x"], "--param tunes one method"),
    (["tune", "--ablation", "toyworld", "--write-recipe", "r.yaml", "--out", "x"], "--write-recipe tunes one"),
    (["tune", "--ablation", "toyworld", "--search", "random", "--trials", "2", "--out", "x"], "whole grid"),
])
def test_cli_refuses_mixed_or_missing_method_flags(tmp_path, monkeypatch, capsys, argv, words):
    monkeypatch.chdir(tmp_path)
    assert main(argv) != 0
    assert words in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_checks_every_method_space_before_loading_weights(tmp_path, capsys):
    path = tmp_path / "abl.yaml"
    path.write_text("methods:\n  syngen: {step_size: '1,3'}\n  attend_excite: {scale_fator: '2,20'}\n")
    assert main(["tune", "--ablation", str(path), "--model", "/nonexistent", "--out", str(tmp_path / "o")]) != 0
    err = capsys.readouterr().err
    assert "attend_excite" in err and "scale_fator" in err and "/nonexistent" not in err


@pytest.fixture(scope="module")
def tiny():
    yield from tiny_engine()


def test_ablation_end_to_end_shares_one_baseline_and_resumes(tiny, tmp_path):
    path = tmp_path / "abl.yaml"
    path.write_text("methods:\n  syngen: {step_size: [1, 40]}\n  'entropy_syngen:lambda_entropy=0.5': "
                    "{step_size: [1, 40]}\n")
    entries = read_ablation(str(path))
    calib = [Sample("calibration", 0, "a red cat and a blue dog", 0),
             Sample("calibration", 1, "a red cat and a blue dog on grass", 1)]
    held = [Sample("heldout", 0, "a red cat and a blue dog in snow", 2),
            Sample("heldout", 1, "a red cat and a blue dog at night", 3)]
    engine = CountingEngine(tiny)
    kwargs = dict(out_dir=tmp_path / "out", batch_size=2, progress=False, steps=2, height=128, width=128)
    result = run_ablation(engine, entries, redness, calib, held, **kwargs)
    assert engine.images == 2 + 2 * (2 * 2 + 2)  # none once; per method 2 points x 2 calibration + 2 held-out
    out = tmp_path / "out"
    assert json.loads((out / "ablation.json").read_text()) == json.loads(json.dumps(result))
    assert sorted(p.name for p in out.iterdir()) == [
        "ablation.json", "ablation.md", "entropy_syngen_lambda_entropy=0.5", "none", "syngen"]
    none_scores = [json.loads(line)["score"] for line in (out / "none" / "evaluations.jsonl").read_text().splitlines()]
    assert result["none"]["mean"] == pytest.approx(np.mean(none_scores), abs=1e-6)
    for label, tuned in result["methods"].items():
        assert tuned["heldout"]["none"] == result["none"]  # the same baseline for every method
        held_chosen = [json.loads(line) for line in
                       (out / entries[list(result["methods"]).index(label)].folder / "evaluations.jsonl")
                       .read_text().splitlines() if json.loads(line)["split"] == "heldout"]
        assert [r["point"] for r in held_chosen] == [tuned["chosen"]] * 2  # none is not generated again
        diffs = [r["score"] - s for r, s in zip(held_chosen, none_scores)]
        assert tuned["heldout"]["difference"]["mean"] == pytest.approx(np.mean(diffs), abs=1e-6)
    table = (out / "ablation.md").read_text()
    assert table.startswith("| method | searched | chosen |") and "| syngen | step_size 1, 40 | step_size=" in table
    assert "| none | — | — | — |" in table and "held-out samples: 2" in table

    engine.images = 0
    assert run_ablation(engine, entries, redness, calib, held, **kwargs) == result
    assert engine.images == 0  # everything was logged


def test_ablation_table_by_hand():
    est = {"mean": 0.25, "ci95": [0.0, 0.5], "n": 4}
    tuned = {"search": {"dimensions": [{"name": "step_size", "values": [1, 20]}]},
             "chosen": {"step_size": 1},
             "calibration": [{"params": {"step_size": 1}, "mean": 0.5, "ci95": [0, 1], "n": 2},
                             {"params": {"step_size": 20}, "mean": 0.0, "ci95": [0, 0], "n": 2}],
             "heldout": {"chosen": est, "none": est,
                         "difference": {"mean": -0.25, "ci95": [-0.5, 0.0], "n": 4, "wins": 0, "losses": 1}}}
    table = ablation_table({"none": est, "methods": {"syngen": tuned}})
    assert "| none | — | — | — | 25.0 (0.0 to 50.0) | — | — |" in table
    assert "| syngen | step_size 1, 20 | step_size=1 | 50.0 (2) | 25.0 (0.0 to 50.0) | -25.0 (-50.0 to +0.0) | 0/1 |" \
        in table


def test_only_selects_methods_by_label_or_plugin_name_in_file_order():
    from attnguide.tune.ablation import select_entries

    entries = read_ablation("toyworld")
    chosen = select_entries(entries, "astar, divide_bind,syngen", "toyworld")
    assert [e.label for e in chosen] == ["syngen", "astar", "divide_bind:attribute_resolutions=[]"]
    with pytest.raises(ConfigError, match="'synegn' is not a method of ablation 'toyworld'"):
        select_entries(entries, "syngen,synegn", "toyworld")
    with pytest.raises(ConfigError, match="no method named"):
        select_entries(entries, " , ", "toyworld")


def test_only_needs_an_ablation(capsys):
    assert main(["tune", "--method", "syngen", "--param", "step_size=1,2", "--only", "syngen", "--out", "x"]) != 0
    assert "--only chooses methods of an --ablation file" in capsys.readouterr().err
