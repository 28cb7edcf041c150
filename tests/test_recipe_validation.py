"""Recipes are validated before anything heavy loads, and every bad input says where and what."""

from __future__ import annotations

import pytest
import yaml

from attnguide.cli.main import main
from attnguide.errors import ConfigError
from attnguide.runs.recipe import RecipeError, load_recipe, shipped_recipes
from recipe_helpers import plugins_in, registry, skip_unless_registered, tiny_recipe, write_recipe

SHIPPED = sorted(shipped_recipes())


@pytest.fixture()
def no_weights(monkeypatch):
    """Fail the test if anything tries to load a model."""
    import attnguide.models.loading as loading

    def refuse(*args, **kwargs):
        raise AssertionError("validation loaded weights")

    monkeypatch.setattr(loading, "load_pipeline", refuse)


def load(path, *overrides):
    return load_recipe(str(path), list(overrides), registry=registry())


# -- shipped recipes ----------------------------------------------------------------------
def test_the_shipped_recipes_are_the_documented_set():
    assert {"quickstart", "syngen_sd14", "entropy_syngen_sd14", "attend_excite_sd14", "astar_sd14",
            "ablation_methods", "ablation_entropy"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_recipe_validates_without_loading_weights(name, no_weights):
    raw = yaml.safe_load(shipped_recipes()[name].read_text())
    skip_unless_registered(plugins_in(raw))
    loaded = load_recipe(name, registry=registry())
    assert loaded.name == name
    assert loaded.prompts and loaded.seeds and loaded.cells


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_recipe_opens_with_the_command_that_runs_it(name):
    first = shipped_recipes()[name].read_text().splitlines()[0]
    assert first.strip() == f"# attnguide run {name}"


def test_sd14_recipes_use_the_papers_sampling_settings():
    # ToMe's official demo always adds its negative prompt; the others use none
    for name in [n for n in SHIPPED if n.endswith("_sd14")]:
        raw = yaml.safe_load(shipped_recipes()[name].read_text())
        assert raw["model"]["id"] == "CompVis/stable-diffusion-v1-4"
        sampling = {k: v for k, v in raw["sampling"].items() if not (name == "tome_sd14" and k == "negative_prompt")}
        assert sampling == {"steps": 50, "guidance_scale": 7.5, "height": 512, "width": 512}, name


def test_recipes_command_prints_one_shipped_name_per_line(capsys):
    assert main(["recipes"]) == 0
    assert capsys.readouterr().out.split() == SHIPPED


def test_recipes_json_gives_file_description_and_command(capsys):
    import json

    assert main(["recipes", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["quickstart"]["command"] == "attnguide run quickstart"
    assert rows["quickstart"]["file"].endswith("quickstart.yaml")


def test_validate_command_checks_several_recipes_and_exits_2_on_any_error(tmp_path, capsys):
    good = write_recipe(tmp_path, tiny_recipe(tmp_path / "out"), "good.yaml")
    bad = write_recipe(tmp_path, {**tiny_recipe(tmp_path / "out"), "sampling": {"steps": "ten"}}, "bad.yaml")
    assert main(["validate", str(good)]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(["validate", str(good), str(bad)]) == 2
    captured = capsys.readouterr()
    assert "ok" in captured.out and "bad.yaml" in captured.err and "sampling.steps" in captured.err
    assert not (tmp_path / "out").exists()


def test_a_bare_name_is_a_shipped_recipe_and_an_unknown_name_suggests_one():
    with pytest.raises(ConfigError, match="Did you mean 'quickstart'"):
        load_recipe("quikstart", registry=registry())


# -- bad inputs: file, dotted key, what was expected ---------------------------------------
def error_of(path, *overrides) -> str:
    with pytest.raises(RecipeError) as info:
        load(path, *overrides)
    message = str(info.value)
    assert str(path) in message  # every message names the recipe file
    return message


def test_unknown_key_suggests_the_closest_valid_key(tmp_path):
    path = write_recipe(tmp_path, {**tiny_recipe(tmp_path), "sampling": {"step": 3}})
    assert "sampling.step: unknown key; did you mean 'sampling.steps'?" in error_of(path)
    path = write_recipe(tmp_path, {**tiny_recipe(tmp_path), "promts": ["x"]})
    assert "did you mean 'prompts'" in error_of(path)


def test_wrong_type_names_the_key_and_the_expected_type(tmp_path):
    path = write_recipe(tmp_path, {**tiny_recipe(tmp_path), "sampling": {"steps": "ten"}})
    message = error_of(path)
    assert "sampling.steps" in message and "valid integer" in message and "'ten'" in message


def test_seeds_and_prompts_give_item_keys(tmp_path):
    path = write_recipe(tmp_path, {**tiny_recipe(tmp_path), "seeds": [0, "x"], "prompts": ["ok", ""]})
    message = error_of(path)
    assert "seeds.1" in message


def test_missing_prompts_file_is_resolved_against_the_recipe_directory(tmp_path):
    path = write_recipe(tmp_path, {**tiny_recipe(tmp_path), "prompts": {"file": "prompts.txt"}})
    message = error_of(path)
    assert "prompts.file" in message and str(tmp_path / "prompts.txt") in message


def test_unknown_prompt_set_is_a_clear_error(tmp_path):
    path = write_recipe(tmp_path, {**tiny_recipe(tmp_path), "prompts": {"set": "no_such_set", "limit": 3}})
    message = error_of(path)
    assert "prompts.set" in message and "unknown prompt set 'no_such_set'" in message


def test_unknown_loss_plugin_names_the_entry_and_lists_registered_plugins(tmp_path):
    path = write_recipe(tmp_path, {**tiny_recipe(tmp_path), "losses": [{"name": "no_such_loss"}]})
    message = error_of(path)
    assert "losses.0.name" in message and "unknown loss plugin 'no_such_loss'" in message


def test_unknown_callback_plugin_names_the_entry(tmp_path):
    path = write_recipe(tmp_path, {**tiny_recipe(tmp_path), "callbacks": ["no_such_callback"]})
    assert "callbacks.0.name" in error_of(path)


def test_unknown_loss_parameter_suggests_the_closest_one(tmp_path):
    skip_unless_registered({("loss", "syngen"), ("parser", "spacy")})
    path = write_recipe(tmp_path, {**tiny_recipe(tmp_path), "losses": [{"name": "syngen", "step_sise": 5}]})
    assert "losses.0.step_sise: loss plugin 'syngen' has no parameter 'step_sise'; did you mean 'step_size'?" in error_of(path)


def test_bad_loss_parameter_value_and_window_name_their_key(tmp_path):
    skip_unless_registered({("loss", "syngen"), ("parser", "spacy")})
    path = write_recipe(tmp_path, {**tiny_recipe(tmp_path), "losses": [{"name": "syngen", "step_size": -1}]})
    assert "losses.0.step_size" in error_of(path)
    path = write_recipe(tmp_path, {**tiny_recipe(tmp_path), "losses": [{"name": "syngen", "window": [0.8, 0.2]}]})
    assert "losses.0.window" in error_of(path)


def test_unknown_parser_is_reported_when_losses_need_one(tmp_path):
    skip_unless_registered({("loss", "syngen")})
    data = {**tiny_recipe(tmp_path), "parser": "no_such_parser", "losses": ["syngen"]}
    assert "parser.name" in error_of(write_recipe(tmp_path, data))


def test_empty_sweep_axis_is_an_error(tmp_path):
    for empty in ([], {}):
        path = write_recipe(tmp_path, {**tiny_recipe(tmp_path), "sweep": {"sampling.steps": empty}})
        assert "sweep.sampling.steps: empty axis" in error_of(path)


def test_sweep_over_a_misspelled_key_suggests_the_right_one(tmp_path):
    path = write_recipe(tmp_path, {**tiny_recipe(tmp_path), "sweep": {"sampling.step": [1, 2]}})
    assert "did you mean 'steps'" in error_of(path)


def test_keys_that_cannot_vary_between_cells_cannot_be_swept(tmp_path):
    path = write_recipe(tmp_path, {**tiny_recipe(tmp_path), "sweep": {"runtime.devices": [1, 2]}})
    assert "'runtime' cannot vary between cells" in error_of(path)


def test_zipped_axes_need_equal_lengths(tmp_path):
    sweep = {"sampling.steps": [1, 2], "sampling.guidance_scale": [1.0, 2.0, 3.0], "zip": True}
    path = write_recipe(tmp_path, {**tiny_recipe(tmp_path), "sweep": sweep})
    assert "sweep.zip" in error_of(path)


def test_override_of_a_key_that_does_not_exist_is_an_error(tmp_path):
    path = write_recipe(tmp_path, tiny_recipe(tmp_path))
    assert "sampling.stepz: unknown key 'stepz'; did you mean 'steps'?" in error_of(path, "sampling.stepz=3")
    assert "losses.0.step_size" in error_of(path, "losses.0.step_size=10")  # no losses to index
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load(path, "sampling.steps")


def test_unwritable_output_dir_exits_2_and_writes_nothing(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    path = write_recipe(tmp_path, tiny_recipe(blocker / "out"))
    assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "output_dir" in err
    assert main(["validate", str(path)]) == 2
    assert "output_dir" in capsys.readouterr().err
    assert blocker.read_text() == "not a directory"


def test_bad_recipe_exits_2_with_one_line_and_nothing_written(tmp_path, capsys):
    path = write_recipe(tmp_path, {**tiny_recipe(tmp_path / "out"), "sampling": {"step": 2}})
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("attnguide: error: recipe ")
    assert not (tmp_path / "out").exists()


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write_recipe(tmp_path, "prompts: [a, b\nseeds: 1\n")
    assert "not valid YAML at line" in error_of(path)
