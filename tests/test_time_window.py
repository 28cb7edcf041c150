"""Guidance windows in the scheduler's own time (``time_window``), next to step windows."""

from __future__ import annotations

import pytest

from attnguide import ConfigError, LossPlugin, LossTerm, load_pipeline
from attnguide.engine.engine import Engine
from attnguide.plugin.losses import time_window_contains
from attnguide.plugin.manager import make_plugin_manager
from attnguide.plugin.specs import PluginSpec, build_plugin, flat_spec, spec_problems
from attnguide.testing import analysis_for, run_plugin
from attnguide.types import GuidanceContext

PROMPT = "a red cat and a blue frog"
BINDINGS = {"cat": ["red"], "frog": ["blue"]}


class Recording(LossPlugin):
    name = "recording"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.times = []

    def compute(self, ctx, maps):
        self.times.append((ctx.step, ctx.time))
        return LossTerm(maps[2].sum(), step_size=1.0)


def test_a_time_window_is_closed_at_both_ends():
    assert time_window_contains((0.5, 1.0), 1.0) and time_window_contains((0.5, 1.0), 0.5)
    assert not time_window_contains((0.5, 1.0), 0.499)


def test_a_time_window_replaces_the_step_window_and_needs_the_time():
    loss = Recording(time_window=(0.5, 1.0))
    assert loss.active_at(40, 50, time=0.9) and not loss.active_at(0, 50, time=0.2)
    with pytest.raises(ConfigError, match="'recording' has a time_window but step 3 has no scheduler time"):
        loss.active_at(3, 50)
    ctx = GuidanceContext(0, 50, 100, 0, analysis_for(PROMPT, BINDINGS), {}, time=0.1)
    assert not loss.in_window(ctx)  # step 0 of 50, but late in the scheduler's time


def test_window_and_time_window_together_or_out_of_range_are_clear_errors():
    with pytest.raises(ConfigError, match="'recording': give window .steps. or time_window .scheduler time., not both"):
        Recording(window=(0, 0.5), time_window=(0.5, 1))
    with pytest.raises(ConfigError, match=r"'recording': time_window must satisfy 0 <= start <= end <= 1, got \(0.2, 1.5\)"):
        Recording(time_window=(0.2, 1.5))
    registry = make_plugin_manager().registry
    problems = spec_problems(PluginSpec("loss", "syngen", {}, window=[0, 0.5], time_window=[0.5, 2]), registry)
    assert [key for key, _ in problems] == ["time_window", "time_window"]


def test_the_time_window_is_recorded_only_when_set():
    registry = make_plugin_manager().registry
    plain = flat_spec(build_plugin(PluginSpec("loss", "syngen"), registry))
    assert "time_window" not in plain  # image metadata and content hashes of step-window runs unchanged
    timed = flat_spec(build_plugin(PluginSpec("loss", "syngen", time_window=[0.6, 1.0]), registry))
    assert timed["time_window"] == [0.6, 1.0]


def test_on_ddim_the_time_is_the_timestep_over_1000():
    # tiny: DDIM, 4 of 1000 training steps, steps_offset 1 -> timesteps 751, 501, 251, 1
    loss = Recording(time_window=(0.3, 0.8))
    run_plugin(loss, PROMPT, BINDINGS, steps=4)
    assert loss.times == [(0, 0.751), (1, 0.501)]


@pytest.mark.parametrize("model", ["tiny-sd3", "tiny-flux"])
def test_on_flow_matching_the_same_noise_levels_are_guided_whatever_the_step_count(model):
    engine = Engine(load_pipeline(model), parser="manual")
    guided = {}
    for steps in (4, 8):
        loss = Recording(time_window=(0.5, 1.0))
        result = engine.generate(PROMPT, [0], losses=[loss], analyses=[_analysis(engine)], steps=steps,
                                 output_type="latent", progress=False)
        sigmas = [t / 1000 for t in result.run.timesteps]
        assert [s for _, s in loss.times] == pytest.approx([s for s in sigmas if s >= 0.5])
        assert sigmas[0] == pytest.approx(1.0) and min(sigmas) < 0.5  # the window cuts the schedule
        guided[steps] = len(loss.times)
    assert guided[8] > guided[4]  # more steps inside the same noise range, not the first half of the steps


def _analysis(engine):
    from attnguide.models.families import text_tokenizer

    return analysis_for(PROMPT, BINDINGS, text_tokenizer(engine.pipe))


def test_a_recipe_takes_a_time_window_and_names_a_bad_one(tmp_path):
    from attnguide.errors import RecipeError
    from attnguide.runs.recipe import load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: tiny\nparser: manual\nprompts: [a red cat]\nseeds: [0]\n"
                      "losses:\n  - {name: syngen, time_window: [0.5, 1.0]}\n")
    loaded = load_recipe(str(recipe))
    assert loaded.losses[0]["time_window"] == [0.5, 1.0]
    recipe.write_text(recipe.read_text().replace("[0.5, 1.0]", "[0.5, 3]"))
    with pytest.raises(RecipeError, match=r"losses\.0\.time_window.*time_window must satisfy"):
        load_recipe(str(recipe))

