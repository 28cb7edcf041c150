"""What a family can run, known before weights where possible: capabilities a plugin requires,
per-family parameter defaults, layer names checked at validation, the family of a model name,
folder or single file."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import save_file

from attnguide import ConfigError, Engine, LossPlugin, LossTerm, load_pipeline
from attnguide.errors import RecipeError
from attnguide.models.families import FAMILY_CAPABILITIES, missing_capabilities
from attnguide.models.identify import denoiser_layers, model_family, single_file_family
from attnguide.plugin.manager import make_plugin_manager
from attnguide.runs.recipe import load_recipe
from attnguide.testing import analysis_for

PROMPT = "a red cat and a blue frog"
BINDINGS = {"cat": ["red"], "frog": ["blue"]}


class NeedsCFG(LossPlugin):
    """Stands for a method that edits the unconditional branch."""

    name = "needs_cfg"
    requires = frozenset({"cfg"})

    def compute(self, ctx, maps):
        return LossTerm(maps[2].sum(), step_size=1.0)


class Registrar:
    def attnguide_register_losses(self):
        return [NeedsCFG]


def test_flux_alone_has_no_cfg_branch_and_no_start_token():
    assert missing_capabilities("flux", {"cfg", "start_token", "joint_attention"}) == ["cfg", "start_token"]
    assert [f for f, caps in FAMILY_CAPABILITIES.items() if "cfg" not in caps] == ["flux"]
    assert missing_capabilities("sdxl", {"unet", "cross_attention"}) == []
    assert missing_capabilities("sd3", {"unet"}) == ["unet"]


def test_the_engine_refuses_a_plugin_the_family_cannot_run_naming_both():
    engine = Engine(load_pipeline("tiny-flux"), parser="manual")
    with pytest.raises(ConfigError, match=r"losses\[0\]: loss plugin 'needs_cfg' cannot run on flux models "
                                          r"\(FluxPipeline\): it needs a classifier-free-guidance"):
        engine.generate(PROMPT, [0], losses=[NeedsCFG()], steps=2, output_type="latent", progress=False)


def test_validation_refuses_it_before_any_weights_load(tmp_path, monkeypatch):
    import attnguide.models.loading as loading

    monkeypatch.setattr(loading, "load_pipeline", lambda *a, **k: pytest.fail("validation loaded a model"))
    registry = make_plugin_manager(autoload=False, extra=[("needs_cfg_registrar", Registrar())]).registry
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": "tiny-flux", "parser": "manual", "prompts": [PROMPT], "seeds": [0],
                                      "losses": ["needs_cfg"]}))
    with pytest.raises(RecipeError, match=r"losses\.0\.name: loss plugin 'needs_cfg' cannot run on flux models"):
        load_recipe(str(recipe), registry=registry)
    load_recipe(str(recipe), ["model=tiny-sd3"], registry=registry)  # SD3 has the branch


def test_a_sweep_over_models_checks_each_cell_against_its_own_family(tmp_path):
    registry = make_plugin_manager(autoload=False, extra=[("needs_cfg_registrar", Registrar())]).registry
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": "tiny", "parser": "manual", "prompts": [PROMPT], "seeds": [0],
                                      "losses": ["needs_cfg"], "sweep": {"model": ["tiny-sdxl", "tiny-flux"]}}))
    with pytest.raises(RecipeError, match=r"sweep cell model-tiny-flux.*needs_cfg' cannot run on flux") as info:
        load_recipe(str(recipe), registry=registry)
    assert "tiny-sdxl" not in str(info.value)


def test_every_family_default_is_a_valid_parameter_value():
    registry = make_plugin_manager().registry
    for kind in ("loss", "callback"):
        for name, cls in registry.classes[kind].items():
            for family, values in cls.family_defaults.items():
                assert family in FAMILY_CAPABILITIES, (name, family)
                cls.Params(**values)  # raises on a bad default


def test_attend_excite_on_flux_softmaxes_over_the_prompt_tokens_unless_told_otherwise():
    engine = Engine(load_pipeline("tiny-flux"), parser="manual")
    analysis = analysis_for(PROMPT, BINDINGS, engine.pipe.tokenizer_2)
    kwargs = dict(analyses=[analysis], steps=4, output_type="latent", progress=False)
    default = engine.generate(PROMPT, [0], losses=["attend_excite"], **kwargs)
    assert default.config["losses"][0]["params"]["token_slice"] == "prompt"
    explicit = engine.generate(PROMPT, [0], losses=[{"name": "attend_excite", "token_slice": "sd1"}], **kwargs)
    assert explicit.config["losses"][0]["params"]["token_slice"] == "sd1"
    # Over 511 mostly-padding T5 positions the excited maxima drown: the loss sits near 1.
    assert min(r.value for r in explicit.records[0].losses) > 0.99
    assert max(r.value for r in default.records[0].losses) < 0.95


def test_a_recipe_resolves_the_family_default_from_the_model_name(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": "tiny-flux", "parser": "manual", "prompts": [PROMPT], "seeds": [0],
                                      "losses": ["attend_excite", "astar"]}))
    assert [spec["token_slice"] for spec in load_recipe(str(recipe)).losses] == ["prompt", "prompt"]
    assert [spec["token_slice"] for spec in load_recipe(str(recipe), ["model=tiny"]).losses] == ["sd1", "sd1"]


def test_a_layer_name_the_model_lacks_is_a_validation_error_with_the_closest_name(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": "tiny-flux", "parser": "manual", "prompts": [PROMPT], "seeds": [0],
                                      "losses": ["syngen"],
                                      "attention": {"layers": ["transformer_block.0.attn.processor"]}}))
    with pytest.raises(RecipeError, match=r"attention\.layers: model 'tiny-flux' has no capturable attention layer "
                                          r"'transformer_block.0.attn.processor' \(did you mean "
                                          r"'transformer_blocks.0.attn.processor'\?\)"):
        load_recipe(str(recipe))
    load_recipe(str(recipe), ["attention.layers=[transformer_blocks.0.attn.processor]"])


def test_families_of_embedded_names_folders_and_unknown_hub_ids(tmp_path):
    assert [model_family(m) for m in ("tiny", "toyworld", "tiny-sdxl", "tiny-sd3", "tiny-flux")] == \
        ["sd", "sd", "sdxl", "sd3", "flux"]
    assert model_family("someone/not-in-the-cache") is None
    assert model_family(str(tmp_path / "missing.ckpt")) is None
    folder = tmp_path / "flux-like"
    (folder / "transformer").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    pipe = load_pipeline("tiny-flux")
    (folder / "transformer" / "config.json").write_text(json.dumps(dict(pipe.transformer.config)))
    assert model_family(str(folder)) == "flux"
    assert denoiser_layers(str(folder)) == list(pipe.transformer.attn_processors)


@pytest.mark.parametrize("name,family", [
    ("model.diffusion_model.double_blocks.0.img_attn.norm.key_norm.scale", "flux"),
    ("double_blocks.0.img_attn.norm.key_norm.scale", "flux"),
    ("model.diffusion_model.joint_blocks.0.context_block.adaLN_modulation.1.bias", "sd3"),
    ("conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias", "sdxl"),
    ("model.diffusion_model.input_blocks.0.0.weight", "sd"),
])
def test_a_single_files_family_comes_from_its_tensor_names(tmp_path, name, family):
    path = tmp_path / "model.safetensors"
    save_file({name: torch.zeros(1), "first_stage_model.decoder.conv_in.bias": torch.zeros(1)}, str(path))
    assert single_file_family(path) == family
    assert model_family(str(path)) == family


def test_a_single_file_loads_with_its_familys_pipeline_class(tmp_path, monkeypatch):
    import diffusers

    path = tmp_path / "flux1-dev.safetensors"
    save_file({"double_blocks.0.img_attn.norm.key_norm.scale": torch.zeros(1)}, str(path))
    calls = []

    def fake(model, **kwargs):
        calls.append((model, kwargs))
        raise OSError("no weights in this test")

    monkeypatch.setattr(diffusers.FluxPipeline, "from_single_file", staticmethod(fake))
    with pytest.raises(Exception, match="cannot load model .*flux1-dev.safetensors.*no weights in this test"):
        load_pipeline(str(path), config="black-forest-labs/FLUX.1-dev")
    assert calls and calls[0][1]["config"] == "black-forest-labs/FLUX.1-dev"
    assert "safety_checker" not in calls[0][1]
