"""The methods added with the intervention hooks, each from the command line and from a recipe,
alone and composed with SynGen in one run (their formulas and Python-API runs: each method's own
test file). Settings are cut down for the tiny model: fewer refinement iterations, its grids."""

from __future__ import annotations

import json

import pytest

from attnguide.cli.main import main
from recipe_helpers import tiny_recipe, write_recipe

BINDINGS = "bindings={cat: [red], frog: [blue]}"
PROMPT = "a red cat and a blue frog"
# method -> (kind, parameters for the tiny model at 128 px: 16x16 and 8x8 cross-attention grids)
METHODS = {
    "predicated": ("loss", {"refinement_iterations": 1}),
    "conform": ("loss", {"refinement_iterations": 1}),
    "divide_bind": ("loss", {"attribute_resolutions": [16], "max_refinement_steps": 1,
                             "max_refinement_steps_first": 1}),
    "structure_diffusion": ("callback", {"parser": "spacy"}),
    "initno": ("loss", {"noise_rounds": 1, "noise_steps": 1, "noise_final_steps": 0, "max_refinement_steps": 1,
                        "self_resolution": 16}),
    "tome": ("loss", {"binding_iterations": 1, "refinement_steps": [1, 1]}),
}


def _label(name, params):
    return ":".join([name, *(f"{k}={json.dumps(v)}" for k, v in params.items())])


INTERVENTIONS = {"attnguide_loss", "attnguide_initial_latents", "attnguide_edit_embeddings",
                 "attnguide_modulate_attention"}


def test_plugins_json_lists_the_methods_with_their_parameters_and_hooks(capsys):
    assert main(["plugins", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out) if row["kind"] != "parser"}
    for method, (_, params) in METHODS.items():
        assert set(params) <= set(rows[method]["params"]), method
        assert INTERVENTIONS & set(rows[method]["hooks"]), method
    methods = [name for name, row in rows.items() if INTERVENTIONS & set(row["hooks"])]
    assert set(methods) == {"syngen", "entropy_syngen", "attend_excite", "astar", *METHODS}
    assert len(methods) == 10
    assert "heatmaps" not in methods  # a callback that only reads


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_runs_from_the_command_line_alone_and_with_syngen(tmp_path, method):
    kind, params = METHODS[method]
    for extra in ([], ["--method", "syngen"]):
        out = tmp_path / ("with" if extra else "alone")
        code = main(["generate", "--model", "tiny", "--scheduler", "ddim", "--prompt", PROMPT, "--steps", "2",
                     "--height", "128", "--width", "128", "--parser", "manual", "--parser-param", BINDINGS,
                     "--method", _label(method, params), *extra, "--out", str(out), "--quiet"])
        assert code == 0
        (meta_path,) = out.glob("*.json")
        meta = json.loads(meta_path.read_text())
        names = [method, *(["syngen"] if extra else [])]
        assert meta["method"] == "+".join(names if kind == "loss" else names[::-1])  # losses, then callbacks
        if kind == "loss":
            assert [spec["name"] for spec in meta["method_params"]] == [method, *(["syngen"] if extra else [])]
            assert {r["plugin"] for r in meta["losses"]} == {method, *(["syngen"] if extra else [])}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_runs_from_a_recipe_with_syngen(tmp_path, capsys, method):
    kind, params = METHODS[method]
    entry = {"name": method, **params}
    keys = {"losses": [entry, "syngen"]} if kind == "loss" else {"losses": ["syngen"], "callbacks": [entry]}
    path = write_recipe(tmp_path, tiny_recipe(tmp_path / "out", parser={"name": "manual", "bindings": {
        "cat": ["red"], "frog": ["blue"]}}, prompts=[PROMPT], **keys))
    assert main(["run", str(path), "--quiet"]) == 0
    assert "1 written, 0 skipped, 0 failed" in capsys.readouterr().out


def test_toyworld_evaluate_runs_an_intervention_callback_as_a_method(capsys):
    code = main(["toyworld", "evaluate", "--methods", "none,structure_diffusion", "--samples", "1",
                 "--single-samples", "0", "--steps", "2", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["structure_diffusion"]["n"] == 1
