"""Input checks: seeds in the generator's range, weights 0 or more, ``toyworld evaluate
--samples 0``, and a prompt set's ``limit`` counting distinct prompts - each refused or honoured
before any weights load, with an error that names the input."""

from __future__ import annotations

import pytest

from attnguide.cli.main import main
from attnguide.engine.sampling import MAX_SEED, expand_prompts
from attnguide.errors import ConfigError, RecipeError
from attnguide.runs.recipe import load_recipe
from recipe_helpers import registry, tiny_recipe, write_recipe

MISSING_MODEL = "/no/such/model"  # a run that got as far as loading would fail on this instead


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and MISSING_MODEL not in err
    return err


def recipe_error(tmp_path, **keys) -> str:
    path = write_recipe(tmp_path, tiny_recipe(tmp_path, **keys))
    with pytest.raises(RecipeError) as info:
        load_recipe(str(path), [], registry=registry())
    return str(info.value)


# -- seeds --------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", ["-1", str(10**23), str(2**64)])
def test_generate_refuses_a_seed_outside_the_generator_range_in_one_line(tmp_path, capsys, seed):
    err = one_line_error(capsys, ["generate", "--model", MISSING_MODEL, "--prompt", "a cat", "--seed", seed,
                                  "--out", str(tmp_path)])
    assert f"--seed {seed} is out of range [0, 2**64-1]" in err


def test_generate_refuses_a_first_seed_whose_later_images_overflow(tmp_path, capsys):
    err = one_line_error(capsys, ["generate", "--model", MISSING_MODEL, "--prompt", "a cat", "--seed", str(MAX_SEED),
                                  "--images-per-prompt", "2", "--out", str(tmp_path)])
    assert f"seed {MAX_SEED + 1} is out of range" in err


def test_expand_prompts_accepts_the_whole_seed_range_and_names_a_seed_outside_it():
    assert expand_prompts("a cat", [0], 1)[1] == [0]
    assert expand_prompts("a cat", MAX_SEED - 1, 2)[1] == [MAX_SEED - 1, MAX_SEED]
    for seeds, bad in (([-1], "seed -1 "), (MAX_SEED, f"seed {MAX_SEED + 1} "), ([10**23], f"seed {10**23} "),
                       (-5, "seed -5 ")):
        with pytest.raises(ConfigError, match=f"{bad}is out of range"):
            expand_prompts("a cat", seeds, 2 if seeds == MAX_SEED else 1)
    with pytest.raises(ConfigError, match="seed 1.5 is not a whole number"):
        expand_prompts("a cat", [1.5], 1)  # type: ignore[list-item]


@pytest.mark.parametrize("seeds,key,text", [
    ([0, -1], "seeds.1", "seed -1 is out of range [0, 2**64-1]"),
    ([10**23], "seeds.0", f"seed {10**23} is out of range"),
    ({"start": -3, "count": 2}, "seeds.start", "seed -3 is out of range"),
    ({"start": MAX_SEED - 1, "count": 3}, "seeds", f"end at {MAX_SEED + 1}, out of range"),
])
def test_recipe_seeds_outside_the_range_are_errors_naming_the_key(tmp_path, seeds, key, text):
    message = recipe_error(tmp_path, seeds=seeds)
    assert f"{key}: " in message and text in message


def test_toyworld_sample_and_evaluate_refuse_a_negative_seed(tmp_path, capsys):
    err = one_line_error(capsys, ["toyworld", "sample", "--seed", "-1", "--out", str(tmp_path)])
    assert "--seed -1 is out of range" in err
    err = one_line_error(capsys, ["toyworld", "evaluate", "--model", MISSING_MODEL, "--seed", "-1", "--samples", "1"])
    assert "--seed -1 is out of range" in err


# -- loss weights -------------------------------------------------------------------------
@pytest.mark.parametrize("weight", ["-1", ".nan", ".inf"])
def test_generate_refuses_a_negative_or_non_finite_weight_naming_the_plugin(tmp_path, capsys, weight):
    err = one_line_error(capsys, ["generate", "--model", MISSING_MODEL, "--prompt", "a cat",
                                  "--method", f"syngen:weight={weight}", "--out", str(tmp_path)])
    assert "weight" in err and "loss plugin 'syngen'" in err and "0 or more" in err


def test_recipe_negative_weight_names_the_key_and_the_plugin(tmp_path):
    message = recipe_error(tmp_path, losses=[{"name": "syngen", "weight": -0.5}])
    assert "losses.0.weight: loss plugin 'syngen': weight must be a finite number 0 or more, got -0.5" in message


def test_engine_specs_and_plugin_instances_refuse_a_negative_weight():
    from attnguide.plugin.manager import make_plugin_manager
    from attnguide.plugin.specs import build_losses

    reg = make_plugin_manager().registry
    with pytest.raises(ConfigError, match=r"losses\[0\]\.weight: loss plugin 'syngen'"):
        build_losses([{"name": "syngen", "weight": -1}], reg)
    with pytest.raises(ConfigError, match="loss plugin 'syngen': weight must be"):
        reg.get("loss", "syngen")(weight=-1)
    assert build_losses([{"name": "syngen", "weight": 0}], reg)[0].weight == 0.0


# -- toyworld evaluate --samples 0 --------------------------------------------------------
def test_evaluate_with_nothing_to_generate_is_refused_before_loading_weights(capsys):
    err = one_line_error(capsys, ["toyworld", "evaluate", "--model", MISSING_MODEL, "--samples", "0",
                                  "--single-samples", "0"])
    assert "nothing to evaluate" in err
    err = one_line_error(capsys, ["toyworld", "evaluate", "--model", MISSING_MODEL, "--samples", "0",
                                  "--methods", "syngen", "--single-methods", "none"])
    assert "nothing to evaluate" in err


def test_samples_0_makes_no_two_object_samples_and_single_samples_follow_their_flag(tmp_path):
    from attnguide.toyworld.evaluate import evaluate
    from test_toyworld_evaluate import PictureEngine

    engine = PictureEngine()
    out = evaluate(engine, ["none"], samples=0, single_samples=3)
    assert out["none"]["n"] == 0 and out["none"]["binding_accuracy"] is None
    assert out["none"]["single_object_n"] == 3
    assert all(" and " not in prompt for prompts, *_ in engine.calls for prompt in prompts)


def test_a_resumed_log_counts_only_the_samples_asked_for(tmp_path):
    from attnguide.toyworld.evaluate import evaluate
    from test_toyworld_evaluate import PictureEngine

    evaluate(PictureEngine(), ["none"], samples=4, single_samples=2, out_dir=tmp_path)
    out = evaluate(PictureEngine(), ["none"], samples=0, single_samples=2, out_dir=tmp_path)
    assert out["none"]["n"] == 0 and out["none"]["single_object_n"] == 2
    assert evaluate(PictureEngine(), ["none"], samples=2, single_samples=0, out_dir=tmp_path)["none"]["n"] == 2
    # another --seed asks for other prompts and seeds under the same indices: generated anew
    again = PictureEngine()
    out = evaluate(again, ["none"], samples=2, single_samples=0, seed=5, out_dir=tmp_path)
    assert [s for _, seeds, *_ in again.calls for s in seeds] == [5, 6] and out["none"]["n"] == 2


# -- prompt sets: limit counts distinct prompts -------------------------------------------
def test_a_prompt_set_limit_counts_distinct_prompts(tmp_path):
    from attnguide.datasets import load_prompt_set

    assert len(load_prompt_set("cc-500", limit=50)) == 50
    assert len(set(load_prompt_set("cc-500", limit=50))) < 50  # the set repeats prompts early on
    for source in ({"set": "cc-500", "limit": 50}, {"set": "cc-500", "limit": 50, "seed": 3}):
        path = write_recipe(tmp_path, tiny_recipe(tmp_path, prompts=source))
        prompts = load_recipe(str(path), [], registry=registry()).prompts
        assert len(prompts) == 50 == len(set(prompts))
    inline = {"inline": ["a", "a", "b", "c"], "limit": 2}
    path = write_recipe(tmp_path, tiny_recipe(tmp_path, prompts=inline), name="inline.yaml")
    assert load_recipe(str(path), [], registry=registry()).prompts == ["a", "b"]
