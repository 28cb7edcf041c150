"""Every run hook fires in Lightning's order (the update override: test_dispatch.py)."""

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
