"""One plugin-spec model and one KEY=VALUE parser: the same mistake gets the same message from
``Engine.generate``, ``attnguide generate``, a recipe and a toy-world method label."""

from __future__ import annotations

import pytest
import yaml

from attnguide import ConfigError, PluginError
from attnguide.keyvalue import parse_key_value, parse_key_values
from attnguide.plugin.manager import make_plugin_manager
from attnguide.plugin.specs import PluginSpec, build_plugin, flat_spec, spec_problems, to_spec
from attnguide.testing import tiny_engine

REGISTRY = make_plugin_manager(autoload=False).registry
TYPO = "syngen has no parameter 'step_sise'"
TYPO_MESSAGE = "loss plugin 'syngen' has no parameter 'step_sise'; did you mean 'step_size'?"
VALUE_MESSAGE = "loss plugin 'syngen': parameter 'step_size': Input should be greater than 0 (got -1)"


def test_to_spec_reads_names_mappings_nested_params_and_none():
    assert to_spec("loss", "none", "x") is None
    assert to_spec("loss", {"name": "none"}, "x") is None
    assert to_spec("loss", "syngen", "x") == PluginSpec("loss", "syngen")
    spec = to_spec("loss", {"name": "syngen", "weight": 0.5, "window": [0, 0.3], "params": {"step_size": 1},
                            "negatives": "other_bindings"}, "x")
    assert spec == PluginSpec("loss", "syngen", {"step_size": 1, "negatives": "other_bindings"}, 0.5, [0, 0.3])
    callback = to_spec("callback", {"name": "heatmaps", "count": 2}, "x")
    assert callback == PluginSpec("callback", "heatmaps", {"count": 2})
    with pytest.raises(ConfigError, match=r"losses\[1\]: loss spec \{'step_size': 1\} has no 'name'"):
        to_spec("loss", {"step_size": 1}, "losses[1]")
    with pytest.raises(ConfigError, match=r"losses\[0\]: a loss is a registered name, a mapping"):
        to_spec("loss", 3, "losses[0]")


def test_spec_problems_lists_every_problem_by_key():
    spec = PluginSpec("loss", "syngen", {"step_sise": 5, "negativs": "all_tokens"}, window=[0.5, 0.2])
    keys = [key for key, _ in spec_problems(spec, REGISTRY)]
    assert keys == ["step_sise", "negativs", "window"]
    assert spec_problems(PluginSpec("loss", "syngem"), REGISTRY)[0][0] == "name"
    assert spec_problems(PluginSpec("loss", "syngen", {"step_size": 3}), REGISTRY) == []


def test_flat_spec_of_a_built_plugin_fills_every_parameter():
    plugin = build_plugin(PluginSpec("loss", "syngen", {"step_size": 3}, 0.5), REGISTRY)
    assert flat_spec(plugin) == {"name": "syngen", "weight": 0.5, "window": [0.0, 0.5], "step_size": 3.0,
                                 "entities_only": False, "negatives": "all_tokens",
                                 "include_entities": False}


def _engine_error(losses):
    with pytest.raises((ConfigError, PluginError)) as info:
        tiny_engine().generate("a red cat", [0], steps=1, losses=losses, output_type="latent", progress=False)
    return str(info.value)


def _cli_error(capsys, *args):
    from attnguide.cli.main import main

    assert main(["generate", "--prompt", "a red cat", "--out", "/tmp/attnguide-never-written", *args]) == 2
    return capsys.readouterr().err


def _recipe_error(tmp_path, losses):
    from attnguide.runs.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"name": "r", "model": {"id": "tiny"}, "prompts": ["a red cat"],
                                    "seeds": [0], "losses": losses, "output_dir": str(tmp_path / "out")}))
    with pytest.raises(ConfigError) as info:
        load_recipe(str(path), registry=REGISTRY)
    return str(info.value)


def _label_error(label):
    from attnguide.toyworld.evaluate import resolve_methods

    with pytest.raises(ConfigError) as info:
        resolve_methods([label], REGISTRY.names("loss"), REGISTRY)
    return str(info.value)


def test_a_misspelt_parameter_gets_one_message_everywhere(capsys, tmp_path):
    engine = _engine_error([{"name": "syngen", "step_sise": 5}])
    cli = _cli_error(capsys, "--method", "syngen", "--param", "step_sise=5")
    recipe = _recipe_error(tmp_path, [{"name": "syngen", "step_sise": 5}])
    label = _label_error("syngen:step_sise=5")
    for text, where in ((engine, "losses[0].step_sise: "), (cli, "--param step_sise: "),
                        (recipe, "losses.0.step_sise: "), (label, "method 'syngen:step_sise=5'.step_sise: ")):
        assert where + TYPO_MESSAGE in text


def test_a_bad_value_gets_one_message_everywhere(capsys, tmp_path):
    texts = [_engine_error([{"name": "syngen", "step_size": -1}]),
             _cli_error(capsys, "--method", "syngen", "--param", "step_size=-1"),
             _recipe_error(tmp_path, [{"name": "syngen", "step_size": -1}]),
             _label_error("syngen:step_size=-1")]
    for text in texts:
        assert VALUE_MESSAGE in text


def test_an_unknown_plugin_gets_one_message_everywhere(capsys, tmp_path):
    expected = "unknown loss plugin 'syngem'. Did you mean 'syngen'?"
    assert expected in _engine_error(["syngem"])
    assert expected in _cli_error(capsys, "--method", "syngem")
    assert expected in _recipe_error(tmp_path, ["syngem"])


def test_a_bad_window_gets_one_message_everywhere(tmp_path):
    expected = "loss plugin 'syngen': window must satisfy 0 <= start <= end <= 1, got [0.5, 0.2]"
    assert expected in _engine_error([{"name": "syngen", "window": [0.5, 0.2]}])
    assert expected in _recipe_error(tmp_path, [{"name": "syngen", "window": [0.5, 0.2]}])


# -- KEY=VALUE --------------------------------------------------------------------------------
def test_parse_key_value_reads_yaml_values():
    assert parse_key_value("a=[1, 2]", "--param") == ("a", [1, 2])
    assert parse_key_value(" b = true", "--param") == ("b", True)
    assert parse_key_value("c=", "--param") == ("c", "")
    assert parse_key_values(["x=1", "x=2", "y=z"], "--param") == {"x": 2, "y": "z"}


@pytest.mark.parametrize("item", ["novalue", "=3"])
def test_malformed_key_value_is_one_message_naming_its_source(item):
    with pytest.raises(ConfigError, match=rf"--param '{item}' must look like KEY=VALUE, e.g. a=1"):
        parse_key_value(item, "--param", "a=1")


def test_every_surface_uses_the_one_key_value_parser(capsys, tmp_path):
    from attnguide.runs.recipe import parse_overrides
    from attnguide.toyworld.evaluate import parse_method

    with pytest.raises(ConfigError, match="override 'steps' must look like KEY=VALUE"):
        parse_overrides(["steps"])
    with pytest.raises(ConfigError, match=r"method 'syngen:step_size':.*'step_size' must look like KEY=VALUE"):
        parse_method("syngen:step_size")
    assert "--param 'step_size' must look like KEY=VALUE" in _cli_error(capsys, "--method", "syngen", "--param", "step_size")
    with pytest.raises(ConfigError, match=r"the value is not valid YAML"):
        parse_key_value("a=[1,", "--param")


def test_a_misspelt_parameter_in_a_dotted_override_gets_the_same_message(tmp_path):
    from attnguide.runs.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"name": "r", "model": {"id": "tiny"}, "prompts": ["a red cat"], "seeds": [0],
                                    "losses": ["syngen"], "output_dir": str(tmp_path / "out")}))
    with pytest.raises(ConfigError) as info:
        load_recipe(str(path), ["losses.0.step_sise=5"], registry=REGISTRY)
    assert "losses.0.step_sise: " + TYPO_MESSAGE in str(info.value)


def test_a_loss_given_by_bare_name_takes_dotted_parameter_overrides(tmp_path):
    from attnguide.runs.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"name": "r", "model": {"id": "tiny"}, "prompts": ["a red cat"], "seeds": [0],
                                    "losses": ["syngen"], "output_dir": str(tmp_path / "out")}))
    loaded = load_recipe(str(path), ["losses.0.step_size=5"], registry=REGISTRY)
    assert loaded.cells[0].losses[0]["step_size"] == 5.0
