"""``attnguide tune``: the search space, the disjoint splits, the resumable log, the choice, the
report and recipe, and the whole loop on the tiny model (fast) and the toy model (slow).

The commands of docs/tune.md run here, shortened (``test_documented_tune_commands``)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from tune_helpers import CountingEngine, redness, tiny_engine

from attnguide.cli.main import main
from attnguide.errors import ConfigError
from attnguide.tune import Dimension, choose, grid_points, make_splits, parse_param, random_points, read_space_file
from attnguide.tune.log import EvaluationLog
from attnguide.tune.splits import Sample

ROOT = Path(__file__).resolve().parents[1]


# -- the search space ---------------------------------------------------------------------------
def test_param_values_are_a_comma_list_of_yaml_scalars():
    assert parse_param("step_size=1,3,10").values == (1, 3, 10)
    assert parse_param("unrelated_entropy=as_written, diffuse").values == ("as_written", "diffuse")
    assert parse_param("x=1,1,2").values == (1, 2)  # repeats dropped


def test_a_flow_list_gives_list_valued_choices():
    assert parse_param("window=[[0, 0.5], [0, 0.25]]").values == ([0, 0.5], [0, 0.25])


def test_log_and_lin_ranges_by_hand():
    # 0.5 * 40 ** (i / 5): 0.5, 1.046, 2.187, 4.573, 9.564, 20
    assert parse_param("step_size=log:0.5..20:6").values == (0.5, 1.046, 2.187, 4.573, 9.564, 20.0)
    assert parse_param("step_size=log:1..20:6").values == (1, 2, 3, 6, 11, 20)  # whole ends: whole values
    assert parse_param("w=lin:0..1:5").values == (0.0, 0.25, 0.5, 0.75, 1.0)  # rounding would collapse them
    assert parse_param("w=lin:2..8:4").values == (2, 4, 6, 8)
    assert parse_param("w=log:3..30:1").values == (3,)


@pytest.mark.parametrize("item, words", [
    ("step_size", "NAME=VALUES"), ("step_size=", "NAME=VALUES"), ("s=log:0..2:3", "above 0"),
    ("s=log:1..x:3", "log:LOW..HIGH:N"), ("s=lin:1..2", "lin:LOW..HIGH:N"), ("s=lin:1..2:0", "N >= 1"),
])
def test_malformed_params_name_the_item(item, words):
    with pytest.raises(ConfigError, match=re.escape(words)) as err:
        parse_param(item)
    assert repr(item) in str(err.value)


def test_grid_is_every_combination_first_dimension_outermost():
    dims = [Dimension("a", (1, 2), "a"), Dimension("b", ("x", "y", "z"), "b")]
    assert grid_points(dims) == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 1, "b": "z"},
                                 {"a": 2, "b": "x"}, {"a": 2, "b": "y"}, {"a": 2, "b": "z"}]


def test_random_search_draws_distinct_grid_points_in_grid_order_and_is_seeded():
    dims = [Dimension("a", tuple(range(5)), "a"), Dimension("b", tuple(range(4)), "b")]
    grid = grid_points(dims)
    drawn = random_points(dims, 6, seed=3)
    assert len(drawn) == 6 and all(p in grid for p in drawn)
    assert sorted(grid.index(p) for p in drawn) == [grid.index(p) for p in drawn]
    assert len({json.dumps(p) for p in drawn}) == 6
    assert random_points(dims, 6, seed=3) == drawn and random_points(dims, 6, seed=4) != drawn
    assert random_points(dims, 99, seed=0) == grid


def test_space_file_and_command_line_merge(tmp_path):
    from attnguide.tune.space import merge_dimensions

    path = tmp_path / "space.yaml"
    path.write_text("method: syngen\nparams:\n  step_size: [1, 3]\n  window: '[[0, 0.5], [0, 1]]'\n")
    method, dims = read_space_file(path)
    assert method == "syngen"
    assert [(d.name, d.values) for d in dims] == [("step_size", (1, 3)), ("window", ([0, 0.5], [0, 1]))]
    merged = merge_dimensions(dims, [parse_param("step_size=log:1..100:3")])
    assert [(d.name, d.values) for d in merged] == [("step_size", (1, 10, 100)), ("window", ([0, 0.5], [0, 1]))]
    path.write_text("params:\n  step_size: [1]\nmethods: x\n")
    with pytest.raises(ConfigError, match=r"space\.yaml: unknown key 'methods'"):
        read_space_file(path)


# -- checks against the plugin ------------------------------------------------------------------
@pytest.fixture(scope="module")
def registry():
    from attnguide.plugin.manager import make_plugin_manager

    return make_plugin_manager().registry


@pytest.mark.parametrize("item, words", [
    ("stepsize=1,3", "loss plugin 'syngen' has no parameter 'stepsize'; did you mean 'step_size'?"),
    ("step_size=3,-1", "loss plugin 'syngen': parameter 'step_size': Input should be greater than 0 (got -1)"),
    ("window=[[0, 0.5], [0.5, 2]]", "loss plugin 'syngen': window must satisfy 0 <= start <= end <= 1"),
])
def test_unknown_parameters_and_out_of_bounds_values_name_plugin_and_parameter(registry, item, words):
    from attnguide.tune.method import check_space, method_specs

    with pytest.raises(ConfigError, match=re.escape(words)) as err:
        check_space(method_specs("syngen", registry), [parse_param(item)], registry)
    assert str(err.value).startswith(f"--param {item!r}")


def test_methods_are_loss_plugins_or_toy_methods_with_fixed_overrides(registry):
    from attnguide.tune.method import method_specs

    assert method_specs("entropy_syngen_diffuse:step_size=2", registry) == [
        {"name": "entropy_syngen", "unrelated_entropy": "diffuse", "step_size": 2}]
    with pytest.raises(ConfigError, match="'none' runs no loss"):
        method_specs("none", registry)
    with pytest.raises(ConfigError, match="'sygen' is not a loss plugin"):
        method_specs("sygen", registry)


def test_cli_refuses_a_misspelt_parameter_before_loading_weights(tmp_path, capsys):
    code = main(["tune", "--method", "syngen", "--param", "stepsize=1,3", "--out", str(tmp_path / "t")])
    assert code == 2
    assert "loss plugin 'syngen' has no parameter 'stepsize'" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


# -- splits -------------------------------------------------------------------------------------
def test_splits_are_disjoint_in_prompts_and_seeds_and_seeded():
    prompts = [f"prompt {k}" for k in range(30)] + ["prompt 3"]  # a repeat counts once
    calib, held = make_splits(prompts, 10, 15, seed=7)
    assert [s.split for s in calib] == ["calibration"] * 10 and [s.split for s in held] == ["heldout"] * 15
    assert not {s.prompt for s in calib} & {s.prompt for s in held}
    assert not {s.seed for s in calib} & {s.seed for s in held}
    assert [s.seed for s in calib] == list(range(7, 17)) and [s.seed for s in held] == list(range(17, 32))
    assert len({s.prompt for s in calib + held}) == 25
    assert make_splits(prompts, 10, 15, seed=7) == (calib, held)
    with pytest.raises(ConfigError, match="30 distinct prompts cannot make"):
        make_splits(prompts, 20, 11)


def test_toy_prompt_pool_is_distinct_two_object_prompts():
    from attnguide.tune.splits import toy_prompts

    pool = toy_prompts(40, seed=0)
    assert len(pool) >= 40 and len(set(pool)) == len(pool)
    assert all(" and " in p for p in pool)


# -- the log and the choice ---------------------------------------------------------------------
def test_log_drops_a_torn_last_line_and_refuses_other_settings(tmp_path):
    samples = [Sample("calibration", i, f"p{i}", i) for i in range(3)]
    log = EvaluationLog(tmp_path, "s1")
    log.add({"step_size": 1}, samples[:2], [1.0, 0.0])
    path = tmp_path / "evaluations.jsonl"
    path.write_text(path.read_text() + '{"settings": "s1", "split": "calib')  # a crash mid-line
    again = EvaluationLog(tmp_path, "s1")
    assert [again.score({"step_size": 1}, s) for s in samples] == [1.0, 0.0, None]
    again.add({"step_size": 1}, samples[2:], [0.5])
    assert len(path.read_text().splitlines()) == 3
    assert EvaluationLog(tmp_path, "s1").score({"step_size": 1}, samples[2]) == 0.5
    assert EvaluationLog(tmp_path, "s1").score({"step_size": 1}, Sample("calibration", 2, "other", 2)) is None
    with pytest.raises(ConfigError, match=r"evaluations\.jsonl:1: scored with other settings"):
        EvaluationLog(tmp_path, "s2")


def test_choice_is_the_highest_mean_and_the_first_on_a_tie():
    assert choose([[0.0, 1.0], [1.0, 1.0], [0.0, 0.5]]) == 1
    assert choose([[1.0, 0.0], [0.5, 0.5], [1.0]]) == 2
    assert choose([[0.5], [0.5]]) == 0


# -- metrics ------------------------------------------------------------------------------------
def test_toy_binding_metric_reads_rendered_scenes():
    from attnguide.toyworld.render import render
    from attnguide.toyworld.scene import Scene, ToyObject
    from attnguide.tune import toy_binding_metric

    def scene(a, b):
        return render(Scene(objects=(ToyObject(a[0], a[1], "medium", (18.0, 20.0)),
                                     ToyObject(b[0], b[1], "medium", (44.0, 42.0)))))

    right, swapped = scene(("red", "circle"), ("blue", "square")), scene(("blue", "circle"), ("red", "square"))
    prompt = "a red circle and a blue square"
    assert toy_binding_metric().score([right, swapped], [prompt, prompt]) == [1.0, 0.0]


def test_clip_metrics_score_each_image_against_its_prompt():
    from metric_helpers import tiny_clip_scorer
    from PIL import Image

    from attnguide.tune import clip_metric

    images = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    prompts = ["a red cat and a blue dog", "a blue car"]
    scorer = tiny_clip_scorer()
    full = clip_metric(scorer).score(images, prompts)
    least = clip_metric(scorer, min_object=True).score(images, prompts)
    embeddings = scorer.image_embeddings(images)
    assert full == pytest.approx([scorer.score(e, p, []).full for e, p in zip(embeddings, prompts)])
    assert least[0] == pytest.approx(min(scorer.score(embeddings[0], prompts[0], ["a red cat", "a blue dog"]).phrases))
    assert all(-1 <= v <= 1 for v in full + least)


# -- recipes ------------------------------------------------------------------------------------
def test_written_recipe_has_the_chosen_values_and_validates(tmp_path):
    from attnguide.runs.recipe import load_recipe
    from attnguide.tune.report import recipe, write_recipe

    result = {"method": [{"name": "entropy_syngen", "unrelated_entropy": "diffuse"}], "metric": "toy_binding",
              "chosen": {"step_size": 3, "window": [0, 0.5]}, "sampling": {"steps": 20, "guidance_scale": 7.5},
              "splits": {"heldout": [{"prompt": "a red circle and a blue square", "seed": 12}]},
              "heldout": {"chosen": {"n": 1}, "difference": {"mean": 0.25, "n": 1}}}
    path = write_recipe(tmp_path / "tuned.yaml", recipe(result, model="toyworld", parser="spacy", name="tuned"))
    loaded = load_recipe(str(path), [])
    [loss] = loaded.losses  # resolved: the plugin's other defaults filled in
    assert {k: loss[k] for k in ("name", "unrelated_entropy", "step_size", "window")} == {
        "name": "entropy_syngen", "unrelated_entropy": "diffuse", "step_size": 3, "window": [0.0, 0.5]}
    assert loaded.prompts == ["a red circle and a blue square"] and loaded.seeds == [12]
    assert path.read_text().startswith(f"# attnguide run {path}\n")
    assert main(["validate", str(path)]) == 0


# -- the whole loop on the tiny model -----------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    yield from tiny_engine()


class Interrupt(Exception):
    pass


def test_tune_end_to_end_resumes_and_chooses_the_argmax(tiny, tmp_path):
    from attnguide.tune import metric_from_callable, tune

    calib = [Sample("calibration", 0, "a red cat and a blue dog", 0),
             Sample("calibration", 1, "a red cat and a blue dog on grass", 1)]
    held = [Sample("heldout", 0, "a red cat and a blue dog in snow", 2)]
    kwargs = dict(out_dir=tmp_path, batch_size=1, progress=False, steps=2, height=128, width=128)
    calls = []

    def flaky(image, prompt):  # the third image scored ends the first run
        calls.append(prompt)
        if len(calls) == 3:
            raise Interrupt
        return redness(image, prompt)

    engine = CountingEngine(tiny)
    with pytest.raises(Interrupt):
        tune(engine, "syngen", {"step_size": [1, 40]}, metric_from_callable(flaky, "redness"), calib, held,
             **kwargs)
    assert engine.images == 3 and len((tmp_path / "evaluations.jsonl").read_text().splitlines()) == 2
    assert not (tmp_path / ".attnguide.lock").exists()  # released on the error

    engine.images = 0
    result = tune(engine, "syngen", {"step_size": [1, 40]}, redness, calib, held, **kwargs)
    assert engine.images == 2 + 2  # the rest of the calibration, then chosen and none on held-out

    records = [json.loads(line) for line in (tmp_path / "evaluations.jsonl").read_text().splitlines()]
    assert len(records) == 6
    means = {}
    for r in records:
        if r["split"] == "calibration":
            means.setdefault(r["point"]["step_size"], []).append(r["score"])
    assert {k: len(v) for k, v in means.items()} == {1: 2, 40: 2}
    assert means[1] != means[40]  # the step size changed the images
    best = max(means, key=lambda k: np.mean(means[k]))
    assert result["chosen"] == {"step_size": best}
    assert json.loads((tmp_path / "tune.json").read_text())["chosen"] == {"step_size": best}
    assert [row["mean"] for row in result["calibration"]] == pytest.approx(
        [np.mean(means[1]), np.mean(means[40])], abs=1e-6)
    held_scores = {json.dumps(r["point"]): r["score"] for r in records if r["split"] == "heldout"}
    diff = result["heldout"]["difference"]
    assert diff["mean"] == pytest.approx(held_scores[json.dumps({"step_size": best})] - held_scores["null"], abs=1e-6)
    assert diff["n"] == 1

    engine.images = 0
    assert tune(engine, "syngen", {"step_size": [1, 40]}, redness, calib, held, **kwargs) == result
    assert engine.images == 0  # everything was done


# -- documented commands ------------------------------------------------------------------------
def _documented():
    """``(bash commands, yaml blocks, python blocks)`` of docs/tune.md, continuation lines joined."""
    text = (ROOT / "docs" / "tune.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                commands.append(" ".join(line.split()))
    return commands, re.findall(r"```yaml\n(.*?)```", text, re.S), re.findall(r"```python\n(.*?)```", text, re.S)


def _shorten(words: list[str], tiny_clip: str) -> list[str]:
    """Two samples per split, two steps, two values per range, two trials; a hub model becomes the
    tiny model, scored with a tiny local CLIP."""
    caps = {"--calibration": "2", "--heldout": "2", "--trials": "2"}
    out = []
    for i, word in enumerate(words):
        previous = words[i - 1] if i else ""
        if previous in caps:
            word = caps[previous]
        elif previous == "--param":
            word = re.sub(r"(log|lin):(.*):\d+$", r"\1:\2:2", word)
        elif previous == "--model" and not word.startswith("toyworld"):  # toy models stay
            word = "tiny"
        out.append(word)
    if out[:2] == ["attnguide", "tune"]:
        out += [word for flag in ("--calibration", "--heldout") if flag not in out for word in (flag, "2")]
        out += ["--steps", "2", "--quiet"] + (["--clip-model", tiny_clip] if "--model" in out else [])
    if out[:2] == ["attnguide", "run"]:
        out += ["sampling.steps=2", "--quiet"]
    return out


def test_every_documented_command_is_a_tune_validate_or_run_command():
    commands, yamls, pythons = _documented()
    assert commands and len(yamls) == 2 and len(pythons) == 1
    assert all(c.split()[:2] in (["attnguide", "tune"], ["attnguide", "validate"], ["attnguide", "run"])
               for c in commands), commands
    assert _shorten(shlex.split(commands[0]), "C") == [
        "attnguide", "tune", "--method", "syngen", "--param", "step_size=log:0.5..20:2", "--calibration", "2",
        "--heldout", "2", "--out", "runs/tune-syngen", "--write-recipe", "syngen_toy.yaml", "--steps", "2", "--quiet"]
    assert _shorten(shlex.split(commands[3]), "C")[8:16] == [
        "--trials", "2", "--out", "runs/tune-entropy", "--calibration", "2", "--heldout", "2"]
    assert _shorten(shlex.split(commands[4]), "C")[2:6] == ["--ablation", "toyworld", "--model", "toyworld-v1"]
    assert _shorten(shlex.split(commands[-1]), "C")[2:6] == ["--model", "tiny", "--method", "syngen"]
    assert _shorten(shlex.split(commands[-1]), "C")[-2:] == ["--clip-model", "C"]


def test_the_documented_ablation_file_reads_and_its_spaces_are_valid(tmp_path):
    from attnguide.plugin.manager import make_plugin_manager
    from attnguide.tune.ablation import read_ablation
    from attnguide.tune.method import check_space, method_specs

    path = tmp_path / "ablation.yaml"
    path.write_text(_documented()[1][1])
    registry = make_plugin_manager().registry
    entries = read_ablation(str(path))
    assert [e.label for e in entries] == ["syngen", "attend_excite", "divide_bind:attribute_resolutions=[]"]
    for entry in entries:
        check_space(method_specs(entry.label, registry), list(entry.dimensions), registry)


@pytest.mark.slow
def test_documented_tune_commands(tmp_path, monkeypatch):
    """docs/tune.md's commands in order in one folder: on the toy model with the judge metric, the
    real-model one on the tiny model with a tiny CLIP; then its Python example."""
    from metric_helpers import tiny_clip_parts

    monkeypatch.chdir(tmp_path)
    model, processor = tiny_clip_parts()
    model.save_pretrained(tmp_path / "tiny_clip")
    processor.save_pretrained(tmp_path / "tiny_clip")
    commands, yamls, pythons = _documented()
    (tmp_path / "space.yaml").write_text(yamls[0])
    for command in commands:
        assert main(_shorten(shlex.split(command), str(tmp_path / "tiny_clip"))[1:]) == 0, command
    result = json.loads((tmp_path / "runs" / "tune-syngen" / "tune.json").read_text())
    assert result["metric"] == "toy_binding"
    assert result["heldout"]["chosen"]["n"] == 2 and len(result["calibration"]) == 2
    calib = [row["mean"] for row in result["calibration"]]
    assert result["chosen"] == result["calibration"][calib.index(max(calib))]["params"]
    assert list((tmp_path / "outputs" / "syngen_toy").rglob("*.png"))
    assert len(json.loads((tmp_path / "runs" / "tune-entropy" / "tune.json").read_text())["calibration"]) == 2
    assert json.loads((tmp_path / "runs" / "tune-sd14" / "tune.json").read_text())["metric"] == "clip_min_object"
    ablation = json.loads((tmp_path / "runs" / "ablation" / "ablation.json").read_text())
    assert len(ablation["methods"]) == 9 and ablation["none"]["n"] == 2
    namespace: dict = {}
    exec(compile(pythons[0], "docs/tune.md", "exec"), namespace)  # noqa: S102 - documentation under test
    assert namespace["result"]["chosen"] in ({"step_size": 1}, {"step_size": 3})
