"""The shipped recipes run end to end on the tiny model (their settings, few steps, small)."""

from __future__ import annotations

import json

import pytest
import yaml

from attnguide.runs.recipe import check_output_dir, load_recipe, shipped_recipes
from attnguide.runs.runner import run_recipe
from recipe_helpers import plugins_in, registry, skip_unless_registered

SD14 = sorted(name for name in shipped_recipes() if name.endswith("_sd14"))
TINY_OVERRIDES = ["model=tiny", "sampling.steps=4", "sampling.height=256", "sampling.width=256"]
# what the tiny model lacks at 256 px: Divide & Bind's 64x64 attribute layers (it has 32 and 16)
FOR_TINY = {"divide_bind_sd14": ["losses.0.attribute_resolutions=[32]"]}


def run_shipped(name, tmp_path, *overrides):
    raw = yaml.safe_load(shipped_recipes()[name].read_text())
    skip_unless_registered(plugins_in(raw))
    loaded = load_recipe(name, [*overrides, f"output_dir={tmp_path}"], registry=registry())
    check_output_dir(loaded, create=True)
    summary = run_recipe(loaded, progress=False, report=lambda *_: None)
    return loaded, summary


@pytest.mark.parametrize("name", SD14)
def test_sd14_recipe_runs_on_the_tiny_model_with_guidance(name, tmp_path):
    loaded, summary = run_shipped(name, tmp_path, *TINY_OVERRIDES, *FOR_TINY.get(name, []), "seeds=[0]",
                                  f"prompts=[{yaml.safe_load(shipped_recipes()[name].read_text())['prompts'][0]}]")
    assert (summary.written, summary.failed) == (1, 0), summary.failures
    (meta_path,) = (loaded.run_dir / "default").glob("*.json")
    meta = json.loads(meta_path.read_text())
    assert meta["analysis"]["bindings"], "the parser found no bindings"
    if not loaded.cells[0].losses:  # an intervention without a loss (structure_diffusion): no loss terms
        assert loaded.cells[0].callbacks and not meta["losses"]
        return
    assert meta["config"]["losses"][0]["name"] == loaded.cells[0].losses[0]["name"]
    assert any(term["step"] == 0 for term in meta["losses"]), "guidance did not run at step 0"


def test_quickstart_runs_both_cells_with_heat_maps_on_the_toy_model(tmp_path):
    loaded, summary = run_shipped("quickstart", tmp_path, "sampling.steps=2", "seeds=[0]",
                                  "prompts=[a red circle and a blue square]")
    assert loaded.recipe.model.id == "toyworld"
    assert (summary.written, summary.failed) == (2, 0), summary.failures
    assert [c.name for c in loaded.cells] == ["method-none", "method-syngen"]
    for cell in loaded.cells:
        meta = json.loads((loaded.run_dir / cell.name / "a_red_circle_and_a_blue_square_s0.json").read_text())
        extra = set(meta["files"]) - {"image", "metadata"}
        assert extra, f"no heat-map files next to the {cell.name} image"
        assert all((loaded.run_dir / cell.name / name).is_file() for name in meta["files"].values())
    assert (loaded.run_dir / "grids" / "a_red_circle_and_a_blue_square.png").is_file()


def test_toyworld_binding_recipe_runs_every_method_on_the_toy_model(tmp_path):
    loaded, summary = run_shipped("toyworld_binding", tmp_path, "sampling.steps=2", "seeds=[0]",
                                  "prompts=[an orange cross and a white heart]")
    assert (summary.written, summary.failed) == (7, 0), summary.failures
    assert loaded.recipe.model.id == "toyworld"


NEW_FAMILIES = sorted(name for name in shipped_recipes() if name.endswith(("_sdxl", "_sd3", "_flux")))


@pytest.mark.parametrize("name", NEW_FAMILIES)
def test_sdxl_and_sd3_recipes_run_on_their_tiny_model_as_their_header_says(name, tmp_path):
    header = [line for line in shipped_recipes()[name].read_text().splitlines() if line.startswith("#   attnguide run")]
    overrides = header[0].split()[4:]  # the command the header gives, after "attnguide run NAME"
    assert any(o.startswith("model=tiny-") for o in overrides)
    prompt = yaml.safe_load(shipped_recipes()[name].read_text())["prompts"][0]
    loaded, summary = run_shipped(name, tmp_path, *overrides, "seeds=[0]", f"prompts=[{prompt}]")
    assert (summary.written, summary.failed) == (1, 0), summary.failures
    (meta_path,) = (loaded.run_dir / "default").glob("*.json")
    meta = json.loads(meta_path.read_text())
    assert meta["analysis"]["bindings"] and any(term["step"] == 0 for term in meta["losses"])


@pytest.mark.slow  # 12 images on four tiny models: about two minutes on two CPU cores
def test_ablation_models_runs_every_family_and_method_on_the_tiny_models_as_its_header_says(tmp_path):
    text = shipped_recipes()["ablation_models"].read_text()
    header = [line for line in text.splitlines() if line.startswith("#   attnguide run")][0]
    overrides = header.split()[4:]
    loaded, summary = run_shipped("ablation_models", tmp_path, *overrides, "prompts=[a cat and a frog]")
    assert (summary.written, summary.failed) == (12, 0), summary.failures
    assert {cell.recipe.model.id for cell in loaded.cells} == {"tiny", "tiny-sdxl", "tiny-sd3", "tiny-flux"}
    assert len(list(loaded.run_dir.glob("family-*/*.png"))) == 12
    assert len(list((loaded.run_dir / "grids").glob("*.png"))) == 1
