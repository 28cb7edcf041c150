"""``attnguide.toyworld.evaluate``: prompts, method resolution, the summary's arithmetic, the
resumable sample log, and the loop itself on stand-in engines whose pictures are known."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from attnguide.errors import ConfigError
from attnguide.toyworld import COLOURS, SHAPES, Scene, ToyObject, binding_outcome, parse_caption, render
from attnguide.toyworld.evaluate import (
    METHODS,
    Sample,
    SampleLog,
    evaluate,
    markdown_table,
    parse_method,
    resolve_methods,
    single_object_prompts,
    summarise,
    two_object_prompts,
)


def test_two_object_prompts_are_seeded_distinct_and_parse_back():
    prompts = two_object_prompts(50, seed=3)
    assert prompts == two_object_prompts(50, seed=3)
    assert prompts != two_object_prompts(50, seed=4)
    for text, pairs in prompts:
        (c1, s1), (c2, s2) = pairs
        a1, a2 = ("an" if c == "orange" else "a" for c in (c1, c2))
        assert text == f"{a1} {c1} {s1} and {a2} {c2} {s2}"
        assert c1 != c2 and s1 != s2
        assert parse_caption(text) == pairs


def test_single_object_prompts_cycle_through_all_48_pairs():
    prompts = single_object_prompts(96, seed=0)
    first = {tuple(p[0]) for _, p in prompts[:48]}
    assert first == {(c, s) for c in COLOURS for s in SHAPES}
    assert [p for _, p in prompts[48:]] == [p for _, p in prompts[:48]]


def test_resolve_methods_accepts_presets_and_plugins_and_suggests_on_typos():
    specs = resolve_methods(["none", "entropy_syngen_diffuse", "focus"], loss_plugins=["syngen", "focus"])
    assert specs["none"] == []
    assert specs["entropy_syngen_diffuse"] == [{"name": "entropy_syngen", "unrelated_entropy": "diffuse"}]
    assert specs["focus"] == [{"name": "focus"}]
    with pytest.raises(ConfigError, match=r"unknown method 'syngn' \(did you mean 'syngen'\?\)"):
        resolve_methods(["syngn"], loss_plugins=[])


def test_method_labels_carry_parameter_overrides_checked_against_the_plugins_parameters():
    from attnguide.plugin.manager import make_plugin_manager

    parameters = make_plugin_manager(autoload=False).registry
    specs = resolve_methods(["syngen:step_size=5", "entropy_syngen_diffuse:step_size=2.5:weight=0.5", "syngen"],
                            loss_plugins=["syngen", "entropy_syngen"], registry=parameters)
    assert specs["syngen:step_size=5"] == [{"name": "syngen", "step_size": 5}]
    assert specs["entropy_syngen_diffuse:step_size=2.5:weight=0.5"] == [
        {"name": "entropy_syngen", "unrelated_entropy": "diffuse", "step_size": 2.5, "weight": 0.5}]
    assert specs["syngen"] == [{"name": "syngen"}]
    assert parse_method("astar:flag=true:mode=diffuse") == ("astar", {"flag": True, "mode": "diffuse"})
    with pytest.raises(ConfigError, match=r"'syngen:stepsize=5'.*no parameter 'stepsize'; did you mean 'step_size'"):
        resolve_methods(["syngen:stepsize=5"], loss_plugins=["syngen"], registry=parameters)
    with pytest.raises(ConfigError, match=r"method 'syngen:step_size':.*'step_size' must look like KEY=VALUE"):
        resolve_methods(["syngen:step_size"], loss_plugins=["syngen"])
    with pytest.raises(ConfigError, match="'none' runs no loss"):
        resolve_methods(["none:step_size=1"], loss_plugins=[])


def test_evaluate_cli_rejects_a_bad_override_value_before_loading_weights(capsys):
    from attnguide.cli.main import main

    rc = main(["toyworld", "evaluate", "--model", "/nonexistent", "--methods", "syngen:step_size=fast", "--samples", "1"])
    assert rc != 0
    err = capsys.readouterr().err
    assert "syngen" in err and "step_size" in err and "/nonexistent" not in err


ASKED = [["red", "circle"], ["blue", "square"]]
DRAWN = {  # what the judge saw for "a red circle and a blue square", by outcome
    "correct": [["red", "circle"], ["blue", "square"]],
    "neglect": [["red", "circle"]],  # the square is missing in every colour
    "swap": [["blue", "circle"], ["red", "square"]],  # a swap is also a leak
    "leak": [["red", "circle"], ["red", "square"]],  # the square took the circle's colour
    "wrong": [["green", "circle"], ["blue", "square"]],  # a colour nobody asked for: no leak
}


def _sample(method, kind, index, outcome="wrong"):
    """A judged sample whose detections give ``outcome`` (single-object samples: right or not)."""
    if kind == "single":
        asked, drawn = [["red", "circle"]], [["red" if outcome == "correct" else "blue", "circle"]]
    else:
        asked, drawn = ASKED, DRAWN[outcome]
    return Sample(method, kind, index, "p", index, asked, drawn, binding_outcome(asked, drawn))


def test_binding_outcome_leak_by_hand():
    assert [binding_outcome(ASKED, DRAWN[k])["leak"] for k in DRAWN] == [False, False, True, True, False]
    assert [binding_outcome(ASKED, DRAWN[k])["swap"] for k in DRAWN] == [False, False, True, False, False]
    # both objects are drawn as asked: an extra circle in the square's colour is not a leak
    assert binding_outcome(ASKED, [["red", "circle"], ["blue", "circle"], ["blue", "square"]])["leak"] is False


def test_summarise_counts_rates_by_hand():
    samples = [
        _sample("none", "two", 0, "correct"),
        _sample("none", "two", 1, "neglect"),
        _sample("none", "two", 2, "swap"),
        _sample("none", "two", 3, "neglect"),
        _sample("none", "two", 4, "leak"),
        _sample("none", "single", 0, "correct"),
        _sample("none", "single", 1, "wrong"),
        _sample("syngen", "two", 0, "correct"),
    ]
    out = summarise(samples, ["none", "syngen"])
    none = out["none"]
    assert none["binding_accuracy"] == 0.2 and none["neglect_rate"] == 0.4 and none["swap_rate"] == 0.2
    assert none["leak_rate"] == 0.4 and none["both_present_rate"] == 0.6
    assert none["n"] == 5 and none["single_object_accuracy"] == 0.5 and none["single_object_n"] == 2
    for key in ("ci95", "neglect_ci95", "leak_ci95", "both_present_ci95", "swap_ci95"):
        lo, hi = none[key]
        assert 0.0 <= lo <= hi <= 1.0 and lo < hi, key
    syngen = out["syngen"]
    assert syngen["binding_accuracy"] == 1.0 and syngen["ci95"] == [1.0, 1.0] and syngen["n"] == 1
    assert syngen["leak_rate"] == 0.0 and syngen["leak_ci95"] == [0.0, 0.0]
    assert syngen["single_object_accuracy"] is None and syngen["single_object_n"] == 0
    table = markdown_table(out)
    assert "| none | 20.0 |" in table and "| syngen | 100.0 |" in table
    assert "| 60.0 (" in table and "| 40.0 (" in table and "both present %" in table and "leak %" in table
    # paired on the one sample both have (index 0, right for both): no difference
    assert out["syngen"]["vs_none"] == {"difference": 0.0, "ci95": [0.0, 0.0], "wins": 0, "losses": 0, "n": 1}
    assert "vs_none" not in out["none"]


def test_summarise_rescores_old_logs_without_a_leak_field():
    old = Sample("none", "two", 0, "p", 0, ASKED, DRAWN["leak"], {"correct": False, "neglect": False, "swap": False})
    assert summarise([old], ["none"])["none"]["leak_rate"] == 1.0


def test_paired_difference_counts_wins_and_losses_on_shared_samples_by_hand():
    right = {True: "correct", False: "wrong"}
    samples = [_sample("none", "two", i, right[c]) for i, c in enumerate([True, False, False, True])]
    samples += [_sample("focus", "two", i, right[c]) for i, c in enumerate([True, True, True, False, True])]
    row = summarise(samples, ["none", "focus"])["focus"]["vs_none"]
    # shared indices 0-3: differences 0, +1, +1, -1 -> mean +0.25; index 4 has no baseline
    assert row["difference"] == 0.25 and row["n"] == 4 and (row["wins"], row["losses"]) == (2, 1)
    assert row["ci95"][0] < 0.25 < row["ci95"][1]
    assert "+25.0 (" in markdown_table(summarise(samples, ["none", "focus"]))


class PictureEngine:
    """Stands in for ``Engine``: draws each prompt's objects side by side, optionally with the
    two colours swapped, and counts its calls."""

    def __init__(self, swap: bool = False) -> None:
        self.swap, self.calls = swap, []

    def generate(self, prompts, seeds, *, losses, progress, **sampling):
        self.calls.append((list(prompts), list(seeds), losses, sampling))
        images = []
        for text in prompts:
            pairs = parse_caption(text)
            if self.swap and len(pairs) == 2:
                (c1, s1), (c2, s2) = pairs
                pairs = [(c2, s1), (c1, s2)]
            objects = tuple(ToyObject(c, s, "medium", (16.0 + 30.0 * k, 32.0)) for k, (c, s) in enumerate(pairs))
            images.append(render(Scene(objects=objects)))
        return SimpleNamespace(images=images)


def test_evaluate_scores_a_faithful_engine_as_always_right(tmp_path):
    engine = PictureEngine()
    out = evaluate(engine, ["none", "syngen"], samples=5, single_samples=3, batch_size=2, out_dir=tmp_path,
                   steps=7, loss_plugins=["syngen"])
    assert out["none"]["binding_accuracy"] == 1.0 and out["none"]["single_object_accuracy"] == 1.0
    assert out["syngen"]["binding_accuracy"] == 1.0 and out["syngen"]["single_object_n"] == 0
    assert out["none"]["neglect_rate"] == 0.0 and out["none"]["swap_rate"] == 0.0
    # same prompts and seeds for every method; seeds are seed + index; sampling passed through
    two = [c for c in engine.calls if len(parse_caption(c[0][0])) == 2]
    by_method = {}
    for prompts, seeds, losses, sampling in two:
        by_method.setdefault(json.dumps(losses), []).append((prompts, seeds))
        assert sampling == {"steps": 7}
    assert len(by_method) == 2 and len(set(json.dumps(v) for v in by_method.values())) == 1
    assert [s for _, seeds in next(iter(by_method.values())) for s in seeds] == [0, 1, 2, 3, 4]
    assert (tmp_path / "none-two-0.png").is_file() and (tmp_path / "none-single-0.png").is_file()


def test_evaluate_sees_swaps(tmp_path):
    out = evaluate(PictureEngine(swap=True), ["none"], samples=4, single_samples=0)
    assert out["none"]["binding_accuracy"] == 0.0 and out["none"]["swap_rate"] == 1.0
    assert out["none"]["neglect_rate"] == 0.0


def test_evaluate_resumes_from_its_sample_log(tmp_path):
    evaluate(PictureEngine(), ["none"], samples=4, single_samples=2, out_dir=tmp_path)
    lines = (tmp_path / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 6
    # drop the last two lines: a rerun generates only those
    (tmp_path / "samples.jsonl").write_text("\n".join(lines[:4]) + "\n")
    again = PictureEngine()
    out = evaluate(again, ["none"], samples=4, single_samples=2, out_dir=tmp_path, batch_size=8)
    assert [c[0] for c in again.calls] == [[json.loads(line)["prompt"] for line in lines[4:]]]
    assert out["none"]["n"] == 4 and out["none"]["single_object_n"] == 2


def test_sample_log_names_the_file_and_line_of_a_bad_record(tmp_path):
    (tmp_path / "samples.jsonl").write_text('{"method": "none"}\n')
    with pytest.raises(ConfigError, match=r"samples.jsonl:1: not a sample record"):
        SampleLog(tmp_path)


def test_every_preset_names_a_registered_loss():
    from attnguide.plugin.manager import make_plugin_manager
    from attnguide.plugin.specs import build_losses

    registry = make_plugin_manager().registry
    for name, losses in METHODS.items():
        assert len(build_losses(losses, registry)) == len(losses), name
