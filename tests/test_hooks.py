"""Every run hook fires in Lightning's order, and the update hook can be overridden."""

from __future__ import annotations

import pytest
import torch

from attnguide.plugin.callbacks import Callback
from attnguide.engine.engine import Engine
from attnguide.plugin.hookspecs import hookimpl
from attnguide.plugin.losses import LossPlugin
from attnguide.types import LossTerm
from engine_helpers import analysis_for

PROMPT = "a red cat and a blue frog"


class Recorder(Callback):
    name = "recorder"

    def __init__(self, params=None):
        super().__init__(params)
        self.events = []

    @hookimpl
    def on_run_start(self, run):
        self.events.append(("on_run_start", run.latents.shape[0]))

    @hookimpl
    def on_step_start(self, step, timestep):
        self.events.append(("on_step_start", step))

    @hookimpl
    def on_step_end(self, step, latents):
        self.events.append(("on_step_end", step))

    @hookimpl
    def on_run_end(self, run, images):
        self.events.append(("on_run_end", len(images)))


class Mass(LossPlugin):
    name = "mass"

    def compute(self, ctx, maps):
        return LossTerm(maps[list(ctx.analysis.entities[0].tokens)].sum(), step_size=1.0)


class SignOnly:
    """An update-hook override: a signed-gradient step."""

    def __init__(self):
        self.calls = 0

    @hookimpl(tryfirst=True)
    def attnguide_update_latents(self, latents, terms):
        self.calls += 1
        (grad,) = torch.autograd.grad(sum(t.value for _, _, t in terms), [latents])
        return (latents - 0.01 * grad.sign()).detach()


@pytest.fixture(scope="module")
def engine(tiny_pipe):
    return Engine(tiny_pipe)


@pytest.fixture(scope="module")
def analysis(tiny_pipe):
    return analysis_for(tiny_pipe.tokenizer, PROMPT, [("cat", ["red"]), ("frog", ["blue"])])


def test_run_hooks_fire_in_order(engine, analysis):
    rec = Recorder()
    engine.generate(PROMPT, [0], steps=2, callbacks=[rec], analyses=[analysis], progress=False)
    names = [e[0] for e in rec.events]
    assert names[0] == "on_run_start" and names[-1] == "on_run_end"
    starts = [s for n, s in rec.events if n == "on_step_start"]
    ends = [s for n, s in rec.events if n == "on_step_end"]
    assert starts == ends == list(range(len(starts)))
    assert rec.events[-1] == ("on_run_end", 1)


def test_attnguide_update_latents_override_wins(engine, analysis, monkeypatch):
    import attnguide.plugin.manager as pmod

    override = SignOnly()
    real = pmod.run_plugin_manager
    monkeypatch.setattr(
        "attnguide.engine.engine.run_plugin_manager",
        lambda plugins: real([*plugins, ("sign-only", override)]),
    )
    default = engine.generate(PROMPT, [0], steps=2, losses=[Mass()], analyses=[analysis],
                              output_type="latent", progress=False)
    assert override.calls > 0
    monkeypatch.setattr("attnguide.engine.engine.run_plugin_manager", real)
    plain = engine.generate(PROMPT, [0], steps=2, losses=[Mass()], analyses=[analysis],
                            output_type="latent", progress=False)
    assert not torch.equal(default.latents, plain.latents)


def test_attnguide_loss_hook_receives_token_axis_maps(engine, analysis):
    seen = {}

    class Probe(LossPlugin):
        name = "probe"

        def compute(self, ctx, maps):
            seen["shape"] = tuple(maps.shape)
            seen["grad"] = maps.requires_grad
            return None

    engine.generate(PROMPT, [0], steps=1, losses=[Probe()], analyses=[analysis], output_type="latent", progress=False)
    assert seen == {"shape": (77, 16, 16), "grad": True}
