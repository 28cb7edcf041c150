"""How a recipe resolves: overrides, prompt sources, seeds, sweep cells, content hashes."""

from __future__ import annotations

import json

import pytest

from attnguide.runs.jobs import content_hash, merge_results, plan_jobs, shard
from attnguide.runs.recipe import load_recipe
from recipe_helpers import registry, skip_unless_registered, tiny_recipe, write_recipe


def load(path, *overrides):
    return load_recipe(str(path), list(overrides), registry=registry())


# -- overrides ----------------------------------------------------------------------------
def test_dotted_overrides_are_yaml_values_set_at_their_key(tmp_path):
    path = write_recipe(tmp_path, tiny_recipe(tmp_path))
    loaded = load(path, "sampling.steps=20", "prompts=[a cat, a dog]", "seeds={start: 3, count: 2}")
    assert loaded.recipe.sampling.steps == 20
    assert loaded.recipe.sampling.height == 128  # untouched neighbours stay
    assert loaded.prompts == ["a cat", "a dog"]
    assert loaded.seeds == [3, 4]


def test_model_shorthand_sets_the_model_id_and_keeps_the_rest(tmp_path):
    data = {**tiny_recipe(tmp_path), "model": {"id": "some/model", "scheduler": "ddim"}}
    loaded = load(write_recipe(tmp_path, data), "model=tiny")
    assert loaded.recipe.model.id == "tiny" and loaded.recipe.model.scheduler == "ddim"


def test_a_mapping_override_merges_into_a_section(tmp_path):
    loaded = load(write_recipe(tmp_path, tiny_recipe(tmp_path)), "sampling={steps: 7}")
    assert loaded.recipe.sampling.steps == 7 and loaded.recipe.sampling.width == 128


def test_a_prompts_or_seeds_override_replaces_the_whole_source(tmp_path):
    (tmp_path / "p.txt").write_text("a red cube\n")
    data = {**tiny_recipe(tmp_path), "prompts": {"file": "p.txt"}, "seeds": {"start": 5, "count": 2}}
    loaded = load(write_recipe(tmp_path, data), "prompts={set: cc-500, limit: 1}", "seeds={count: 1}")
    assert len(loaded.prompts) == 1 and loaded.prompts != ["a red cube"] and loaded.seeds == [0]


def test_loss_parameter_override_reaches_the_plugin(tmp_path):
    skip_unless_registered({("loss", "syngen"), ("parser", "spacy")})
    data = {**tiny_recipe(tmp_path), "losses": [{"name": "syngen"}]}
    loaded = load(write_recipe(tmp_path, data), "losses.0.step_size=10")
    (loss,) = loaded.cells[0].losses
    assert loss["name"] == "syngen" and loss["step_size"] == 10
    assert loss["window"] == [0.0, 0.5]  # the plugin's default, filled in


def test_override_inside_a_sweep_value(tmp_path):
    skip_unless_registered({("loss", "syngen"), ("parser", "spacy")})
    sweep = {"method": {"none": {"losses": []}, "syngen": {"losses": [{"name": "syngen"}]}}}
    path = write_recipe(tmp_path, {**tiny_recipe(tmp_path), "sweep": sweep})
    loaded = load(path, "sweep.method.syngen.losses.0.step_size=5")
    assert loaded.cells[1].losses[0]["step_size"] == 5


def test_sweep_null_override_runs_the_base_recipe_alone(tmp_path):
    path = write_recipe(tmp_path, {**tiny_recipe(tmp_path), "sweep": {"sampling.steps": [1, 2]}})
    assert [c.name for c in load(path, "sweep=null").cells] == ["default"]


# -- prompts and seeds --------------------------------------------------------------------
def test_prompt_files_txt_csv_jsonl_relative_to_the_recipe(tmp_path):
    folder = tmp_path / "recipes"
    folder.mkdir()
    (folder / "p.txt").write_text("# comment\na red cube\n\na blue ball\n")
    (folder / "p.csv").write_text("id,prompt\n1,a red cube\n2,a blue ball\n")
    (folder / "p.jsonl").write_text('{"prompt": "a red cube"}\n{"prompt": "a blue ball", "x": 1}\n')
    for name in ("p.txt", "p.csv", "p.jsonl"):
        path = write_recipe(folder, {**tiny_recipe(tmp_path), "prompts": {"file": name}})
        assert load(path).prompts == ["a red cube", "a blue ball"], name
    path = write_recipe(folder, {**tiny_recipe(tmp_path), "prompts": {"file": "p.txt", "limit": 1}})
    assert load(path).prompts == ["a red cube"]


def test_a_named_prompt_set_is_loaded_with_its_limit_and_seed(tmp_path):
    path = write_recipe(tmp_path, {**tiny_recipe(tmp_path), "prompts": {"set": "cc-500", "limit": 3, "seed": 1}})
    prompts = load(path).prompts
    assert len(prompts) == 3 and all(isinstance(p, str) and p for p in prompts)
    assert load(path).prompts == prompts  # the seed fixes the draw


def test_csv_without_a_prompt_column_is_an_error(tmp_path):
    from attnguide.runs.recipe import RecipeError

    (tmp_path / "p.csv").write_text("text\na red cube\n")
    path = write_recipe(tmp_path, {**tiny_recipe(tmp_path), "prompts": {"file": "p.csv"}})
    with pytest.raises(RecipeError, match="no 'prompt' column"):
        load(path)


def test_seed_forms(tmp_path):
    for seeds, expected in ((7, [7]), ([3, 1], [3, 1]), ({"start": 2, "count": 3}, [2, 3, 4]), ({"count": 2}, [0, 1])):
        path = write_recipe(tmp_path, {**tiny_recipe(tmp_path), "seeds": seeds})
        assert load(path).seeds == expected


# -- sweeps ---------------------------------------------------------------------------------
def test_sweep_axes_expand_as_a_grid_first_axis_outermost(tmp_path):
    sweep = {"sampling.steps": [1, 2], "sampling.guidance_scale": {"low": 1.0, "high": 7.5}}
    loaded = load(write_recipe(tmp_path, {**tiny_recipe(tmp_path), "sweep": sweep}))
    assert [c.name for c in loaded.cells] == [
        "steps-1__guidance_scale-low", "steps-1__guidance_scale-high",
        "steps-2__guidance_scale-low", "steps-2__guidance_scale-high",
    ]
    assert [(c.recipe.sampling.steps, c.recipe.sampling.guidance_scale) for c in loaded.cells] == [
        (1, 1.0), (1, 7.5), (2, 1.0), (2, 7.5)]


def test_zip_pairs_axes_value_by_value(tmp_path):
    sweep = {"sampling.steps": [1, 2], "sampling.guidance_scale": [1.0, 7.5], "sampling.eta": [0.0, 1.0],
             "zip": ["sampling.steps", "sampling.guidance_scale"]}
    loaded = load(write_recipe(tmp_path, {**tiny_recipe(tmp_path), "sweep": sweep}))
    assert [(c.recipe.sampling.steps, c.recipe.sampling.guidance_scale, c.recipe.sampling.eta)
            for c in loaded.cells] == [(1, 1.0, 0.0), (1, 1.0, 1.0), (2, 7.5, 0.0), (2, 7.5, 1.0)]


def test_named_axis_values_patch_the_recipe(tmp_path):
    skip_unless_registered({("loss", "syngen"), ("loss", "attend_excite"), ("parser", "spacy")})
    sweep = {"method": {"none": {"losses": []}, "both": {"losses": ["syngen", "attend_excite"], "sampling.steps": 3}}}
    loaded = load(write_recipe(tmp_path, {**tiny_recipe(tmp_path), "sweep": sweep}))
    none, both = loaded.cells
    assert (none.name, none.losses, none.recipe.sampling.steps) == ("method-none", [], 2)
    assert both.name == "method-both" and [l["name"] for l in both.losses] == ["syngen", "attend_excite"]
    assert both.recipe.sampling.steps == 3


def test_each_cell_resolves_to_a_stand_alone_recipe(tmp_path):
    path = write_recipe(tmp_path, {**tiny_recipe(tmp_path), "sweep": {"sampling.steps": [1, 3]}})
    loaded = load(path)
    cell = loaded.cells[1].resolved(loaded.prompts, loaded.seeds, loaded.name)
    assert cell["sweep"] is None and cell["sampling"]["steps"] == 3 and cell["prompts"] == ["a red cube"]
    again = write_recipe(tmp_path, cell, "cell.yaml")
    assert load(again).cells[0].hashed_config() == loaded.cells[1].hashed_config()


# -- jobs -----------------------------------------------------------------------------------
def test_content_hash_covers_pixels_not_placement(tmp_path):
    path = write_recipe(tmp_path, {**tiny_recipe(tmp_path), "seeds": [0, 1]})
    base = plan_jobs(load(path))
    moved = plan_jobs(load(path, f"output_dir={tmp_path / 'elsewhere'}", "runtime.devices=2", "name=other"))
    changed = plan_jobs(load(path, "sampling.guidance_scale=3.0"))
    assert [j.content_hash for j in base] == [j.content_hash for j in moved]
    assert all(a.content_hash != b.content_hash for a, b in zip(base, changed))
    assert base[0].content_hash != base[1].content_hash  # seeds differ
    assert content_hash({"a": 1}, "p", 0) == content_hash({"a": 1}, "p", 0)


def test_shards_partition_the_jobs_deterministically(tmp_path):
    path = write_recipe(tmp_path, {**tiny_recipe(tmp_path), "seeds": {"count": 7}, "sweep": {"sampling.steps": [1, 2]}})
    jobs = plan_jobs(load(path))
    shards = [shard(jobs, rank, 3) for rank in range(3)]
    assert sorted(j.index for s in shards for j in s) == list(range(len(jobs)))
    assert [j.index for j in shards[1]] == [j.index for j in shard(plan_jobs(load(path)), 1, 3)]


def test_merge_results_keeps_the_latest_row_per_image_and_removes_rank_files(tmp_path):
    path = write_recipe(tmp_path, {**tiny_recipe(tmp_path), "seeds": [0, 1]})
    jobs = plan_jobs(load(path))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    row = lambda job, status: {"cell": job.cell.name, "prompt": job.prompt, "seed": job.seed, "status": status,
                                "content_hash": job.content_hash}
    (run_dir / "results.jsonl").write_text(json.dumps(row(jobs[0], "failed")) + "\n")
    (run_dir / "results.rank0.jsonl").write_text(json.dumps(row(jobs[0], "ok")) + "\n")
    (run_dir / "results.rank1.jsonl").write_text(json.dumps(row(jobs[1], "ok")) + "\n{\"cell\": \"trunc")
    rows = merge_results(run_dir, jobs)
    assert [(r["seed"], r["status"]) for r in rows] == [(0, "ok"), (1, "ok")]
    assert sorted(p.name for p in run_dir.iterdir()) == ["results.jsonl"]


def test_comparison_grid_has_a_tile_per_seed_and_cell_with_room_for_labels():
    from PIL import Image

    from attnguide.results.grids import comparison_grid

    tile = Image.new("RGB", (64, 64), (255, 0, 0))
    grid = comparison_grid("a prompt", ["method=none", "method=syngen"], ["seed 0", "seed 1", "seed 2"],
                           [[tile, None], [tile, tile], [None, tile]], tile=64)
    assert grid.width > 2 * 64 and grid.height > 3 * 64
    assert grid.getpixel((grid.width - 32, grid.height - 32)) == (255, 0, 0)


def test_grid_labels_wrap_inside_their_column_even_within_one_long_word():
    from PIL import Image, ImageDraw

    from attnguide.results.grids import _font, _wrap

    draw, font = ImageDraw.Draw(Image.new("RGB", (1, 1))), _font(13)
    lines = _wrap(draw, "method=entropy_syngen_diffuse seed=3", font, 52)
    assert len(lines) > 2 and "".join(lines).replace(" ", "") == "method=entropy_syngen_diffuseseed=3"
    assert all(draw.textlength(line, font=font) <= 52 for line in lines)
    assert _wrap(draw, "a b\nc", font, 200) == ["a b", "c"]


def test_comparison_grid_enlarges_small_images_with_sharp_pixels():
    from PIL import Image

    from attnguide.results.grids import comparison_grid

    small = Image.new("RGB", (64, 64), (0, 0, 255))
    small.putpixel((63, 63), (255, 0, 0))
    grid = comparison_grid("p", ["a"], ["s"], [[small]], tile=256)
    # the tile fills the bottom-right 256x256 corner; the last source pixel becomes a 4x4 block
    for dx in range(1, 5):
        assert grid.getpixel((grid.width - dx, grid.height - dx)) == (255, 0, 0)
    assert grid.getpixel((grid.width - 5, grid.height - 5)) == (0, 0, 255)
    assert grid.getpixel((grid.width - 250, grid.height - 250)) == (0, 0, 255)
