"""The guidance phase through the engine on the tiny pipeline, with small test plugins."""

from __future__ import annotations

import logging

import pytest
import torch

from attnguide.engine.engine import Engine
from attnguide.errors import PluginError
from attnguide.plugin.losses import LossParams, LossPlugin
from attnguide.types import LossTerm
from engine_helpers import analysis_for

PROMPT = "a red cat and a blue frog"


class Concentrate(LossPlugin):
    """Entropy of each entity's map over pixels; refines once per step when asked."""

    name = "concentrate"

    class Params(LossParams):
        refine: bool = False
        step_size: float = 50.0

    def compute(self, ctx, maps):
        total = 0.0
        for ent in ctx.analysis.entities:
            p = maps[list(ent.tokens)].mean(0).flatten()
            p = p / p.sum()
            total = total + -(p * p.clamp_min(1e-12).log()).sum()
        ctx.state["calls"] = ctx.state.get("calls", 0) + 1
        refine = -1.0 if self.params.refine else None
        return LossTerm(total, step_size=self.params.step_size, refine_below=refine, max_refinement=1)


class Broken(LossPlugin):
    name = "broken"

    def compute(self, ctx, maps):
        raise ValueError("bad maps")


class NotANumber(LossPlugin):
    name = "nan"

    def compute(self, ctx, maps):
        return LossTerm(maps.sum() * float("nan"), step_size=1.0)


@pytest.fixture(scope="module")
def engine():
    from attnguide.models.loading import load_pipeline

    return Engine(load_pipeline("tiny", scheduler="ddim"))


@pytest.fixture(scope="module")
def analysis(tiny_pipe):
    return analysis_for(tiny_pipe.tokenizer, PROMPT, [("cat", ["red"]), ("frog", ["blue"])])


def _run(engine, analysis, losses, steps=3, **kw):
    return engine.generate(PROMPT, [0], losses=losses, analyses=[analysis], steps=steps,
                           output_type="latent", progress=False, **kw)


def test_loss_decreases_after_an_update_on_the_same_step(engine, analysis):
    result = _run(engine, analysis, [Concentrate({"refine": True})], steps=2)
    rows = [r for r in result.records[0].losses if r["step"] == 0]
    before = next(r["value"] for r in rows if r["refinement"] == 0)
    after = next(r["value"] for r in rows if r["refinement"] == 1)
    assert after < before


def test_guidance_changes_latents_and_is_deterministic_for_a_seed(engine, analysis):
    plain = _run(engine, analysis, [])
    guided = _run(engine, analysis, [Concentrate()])
    again = _run(engine, analysis, [Concentrate()])
    assert (plain.latents - guided.latents).abs().max() > 1e-4
    assert torch.equal(guided.latents, again.latents)


def test_loss_outside_its_window_is_not_evaluated(engine, analysis):
    result = _run(engine, analysis, [Concentrate(window=(0.0, 0.5))], steps=4)
    assert sorted({r["step"] for r in result.records[0].losses}) == [0, 1]


class ConcentrateB(Concentrate):
    name = "concentrate_b"


def test_each_plugin_keeps_its_own_state_per_image(engine, analysis):
    result = _run(engine, analysis, [Concentrate(), ConcentrateB()], steps=2)
    states = result.run.plugin_state[0]
    assert states["concentrate"] == {"calls": 2}
    assert states["concentrate_b"] == {"calls": 2}


def test_weights_scale_the_update(engine, analysis):
    plain = _run(engine, analysis, [], steps=1)
    half = _run(engine, analysis, [Concentrate(weight=0.5)], steps=1)
    full = _run(engine, analysis, [Concentrate(weight=1.0)], steps=1)
    assert (half.latents - plain.latents).abs().max() < (full.latents - plain.latents).abs().max()


def test_plugin_raising_names_plugin_and_hook(engine, analysis):
    with pytest.raises(PluginError, match="'broken'.*attnguide_loss.*bad maps"):
        _run(engine, analysis, [Broken()])


def test_non_finite_loss_skips_update_warns_and_continues(engine, analysis, caplog):
    plain = _run(engine, analysis, [], steps=2)
    with caplog.at_level(logging.WARNING):
        result = _run(engine, analysis, [NotANumber()], steps=2)
    assert "nan" in caplog.text and "step 0" in caplog.text
    assert [s["step"] for s in result.records[0].skipped] == [0, 1]
    assert torch.equal(result.latents, plain.latents)


def test_pndm_window_counts_requested_steps_not_its_extra_timestep(analysis):
    from attnguide.models.loading import load_pipeline

    engine = Engine(load_pipeline("tiny", scheduler="pndm"))
    result = _run(engine, analysis, [Concentrate(window=(0.0, 0.5))], steps=4)
    assert len(result.run.timesteps) == 5
    assert sorted({r["step"] for r in result.records[0].losses}) == [0, 1]


def test_guidance_maps_are_kept_per_step_with_token_axis(engine, analysis):
    result = _run(engine, analysis, [Concentrate()], steps=2)
    maps = result.run.guidance_maps[0][0]
    assert maps.shape == (77, 16, 16)
    assert torch.allclose(maps.sum(0), torch.ones(16, 16), atol=1e-4)


def test_no_guidance_forward_runs_outside_every_window(engine, analysis):
    calls = []
    hook = engine.pipe.unet.register_forward_pre_hook(lambda mod, args, kwargs: calls.append(args[0].shape[0]),
                                                      with_kwargs=True)
    try:
        _run(engine, analysis, [Concentrate(window=(0.0, 0.25))], steps=4)
    finally:
        hook.remove()
    # 4 CFG forwards (batch 2) and one guidance forward (batch 1) for the single guided step
    assert sorted(calls) == [1, 2, 2, 2, 2]
