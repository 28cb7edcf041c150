"""The intervention hook points beyond the latent step: map requests (other resolutions,
self-attention, the previous step's maps), initial-noise optimisation and embedding edits -
each alone and composed with a loss in one run."""

from __future__ import annotations

import pytest
import torch

from attnguide import Callback, ConfigError, Engine, LossPlugin, LossTerm, PluginError, hookimpl, load_pipeline
from attnguide.engine.interventions import restart_seed
from attnguide.engine.requests import MapRequest, unet_grids
from attnguide.testing import analysis_for, tiny_engine

PROMPT = "a red cat and a blue frog"
BINDINGS = {"cat": ["red"], "frog": ["blue"]}
SELF16 = MapRequest("self", 16)
CROSS32 = MapRequest("cross", 32)


def _generate(engine, losses=(), callbacks=(), prompt=PROMPT, steps=3, seed=0, **kwargs):
    analysis = analysis_for(prompt, BINDINGS if prompt == PROMPT else {}, engine.pipe.tokenizer)
    return engine.generate(prompt, [seed], losses=list(losses), callbacks=list(callbacks), analyses=[analysis],
                           steps=steps, height=256, width=256, output_type="latent", progress=False, **kwargs)


# -- map requests ----------------------------------------------------------------------------
class Asking(LossPlugin):
    name = "asking"

    def __init__(self, *requests):
        super().__init__()
        self.requests, self.seen = requests, []

    def map_requests(self):
        return self.requests

    def compute(self, ctx, maps):
        self.seen.append({r: m.detach().clone() for r, m in ctx.extra_maps.items()})
        return LossTerm(maps[2].sum(), step_size=1.0)


def test_a_request_must_name_a_kind_and_where():
    with pytest.raises(ConfigError, match="kind must be 'cross' or 'self'"):
        MapRequest("value", 16)
    with pytest.raises(ConfigError, match="needs a resolution, layer names or every=True"):
        MapRequest("self")


def test_unet_grids_are_the_grids_the_forward_really_has():
    engine = tiny_engine()
    seen = {}

    def spy(name):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            seen[name] = hidden.shape[1]
        return hook

    handles = [module.register_forward_pre_hook(spy(name + ".processor"), with_kwargs=True)
               for name, module in engine.pipe.unet.named_modules() if name.endswith(("attn1", "attn2"))]
    try:
        _generate(engine, steps=1)
    finally:
        for handle in handles:
            handle.remove()
    grids = unet_grids(engine.pipe.unet, (32, 32))
    assert seen and {name: h * w for name, (h, w) in grids.items()} == seen


def test_requested_maps_reach_the_plugin_with_their_shapes_and_normalisation():
    plugin = Asking(SELF16, CROSS32)
    _generate(tiny_engine(), [plugin], steps=2)
    assert len(plugin.seen) == 2  # both steps (the default window is every step)
    self_maps, cross_maps = plugin.seen[0][SELF16], plugin.seen[0][CROSS32]
    assert tuple(self_maps.shape) == (256, 16, 16) and tuple(cross_maps.shape) == (77, 32, 32)
    assert torch.allclose(self_maps.sum(dim=(1, 2)), torch.ones(256), atol=1e-4)  # each query over the keys
    assert torch.allclose(cross_maps.sum(dim=0), torch.ones(32, 32), atol=1e-4)  # each pixel over the tokens


def test_self_attention_is_wrapped_only_while_someone_asks():
    engine = tiny_engine()
    wrapped = []

    class Look(Callback):
        name = "look"

        @hookimpl
        def on_step_start(self, step):
            wrapped.append(sum(type(p).__name__.startswith("Capturing") for n, p in
                               engine.pipe.unet.attn_processors.items() if n.endswith("attn1.processor")))

    _generate(engine, callbacks=[Look()], steps=1)
    _generate(engine, [Asking(SELF16)], callbacks=[Look()], steps=1)
    layers = sum(n.endswith("attn1.processor") for n in engine.pipe.unet.attn_processors)
    assert wrapped == [0, layers] and layers == 7
    assert engine.store.extras == {}  # cleared after the run


def test_a_request_the_model_cannot_serve_names_the_plugin_and_what_exists():
    with pytest.raises(ConfigError, match=r"plugin 'asking' asks for self-attention maps at 7x7: the model has no "
                                          r"self-attention layer at that size .* grids are 32x32, 16x16"):
        _generate(tiny_engine(), [Asking(MapRequest("self", 7))], steps=1)
    with pytest.raises(ConfigError, match=r"no cross-attention layer named 'up_blocks.9.attn2.processor'"):
        _generate(tiny_engine(), [Asking(MapRequest("cross", layers=("up_blocks.9.attn2.processor",)))], steps=1)
    engine = Engine(load_pipeline("tiny-sd3"), parser="manual")
    analysis = analysis_for(PROMPT, BINDINGS, engine.pipe.tokenizer)
    with pytest.raises(ConfigError, match=r"plugin 'asking' asks for self-attention maps at 16x16, but extra map "
                                          r"requests need a UNet .*this is a sd3 model"):
        engine.generate(PROMPT, [0], losses=[Asking(SELF16)], analyses=[analysis], steps=1, output_type="latent",
                        progress=False)


def test_a_request_leaves_the_default_maps_equal_up_to_the_explicit_softmax():
    # The requested layers run an explicit softmax instead of SDPA: the same maths, rounded
    # differently, so the maps downstream agree to float precision, not bit for bit.
    engine = tiny_engine()
    plain = _generate(engine, [{"name": "syngen"}], steps=2)
    asked = _generate(engine, [{"name": "syngen"}, Asking(SELF16)], steps=2, seed=0)
    assert torch.allclose(plain.run.guidance_maps[0][0], asked.run.guidance_maps[0][0], atol=1e-5)


class Previous(LossPlugin):
    name = "previous"
    default_window = (0.0, 1.0)

    def __init__(self):
        super().__init__()
        self.previous = []

    def compute(self, ctx, maps):
        self.previous.append(None if ctx.previous_maps is None else ctx.previous_maps.clone())
        return LossTerm(maps[2].sum(), step_size=1.0)


def test_the_previous_guided_steps_maps_come_with_the_context():
    plugin = Previous()
    result = _generate(tiny_engine(), [plugin], steps=3)
    assert plugin.previous[0] is None
    assert torch.equal(plugin.previous[1], result.run.guidance_maps[0][0])
    assert torch.equal(plugin.previous[2], result.run.guidance_maps[1][0])


# -- initial noise -----------------------------------------------------------------------------
class Restart(Callback):
    """Replaces the initial noise by restart ``k``'s."""

    name = "restart"

    def __init__(self, k=0):
        super().__init__()
        self.k, self.given = k, []

    @hookimpl
    def attnguide_initial_latents(self, ctx, latents):
        self.given.append(latents.clone())
        return ctx.fresh_noise(self.k)


class Sharpen(Callback):
    """A few gradient steps on the initial noise that raise the attention of token 2."""

    name = "sharpen"

    def __init__(self):
        super().__init__()
        self.losses = []

    @hookimpl
    def attnguide_initial_latents(self, ctx, latents):
        z = latents.detach().requires_grad_(True)
        optimiser = torch.optim.Adam([z], lr=0.05)
        for _ in range(4):
            maps, _ = ctx.forward(z)
            loss = 1 - maps[2].max()
            self.losses.append(float(loss))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        return z.detach()


def test_a_noise_plugin_replaces_the_initial_latents_and_restart_noise_is_seeded():
    engine = tiny_engine()
    started = []

    class Start(Callback):
        name = "start"

        @hookimpl
        def on_run_start(self, run):
            started.append(run.latents.clone())

    plain = _generate(engine, callbacks=[Start()], steps=2)
    first = Restart(0)
    _generate(engine, callbacks=[first, Start()], steps=2)
    assert torch.equal(first.given[0], started[0])  # the drawn noise comes in
    generator = torch.Generator().manual_seed(restart_seed(0, 0))
    expected = torch.randn(started[0].shape, generator=generator) * engine.pipe.scheduler.init_noise_sigma
    assert torch.equal(started[1], expected)  # and restart 0's noise goes out
    again = _generate(engine, callbacks=[Restart(0)], steps=2)
    other = _generate(engine, callbacks=[Restart(1)], steps=2)
    assert torch.equal(again.latents, _generate(engine, callbacks=[Restart(0)], steps=2).latents)
    assert not torch.equal(again.latents, other.latents) and not torch.equal(again.latents, plain.latents)


def test_the_noise_forward_is_differentiable_and_noise_plugins_chain_in_run_order():
    sharpen, restart = Sharpen(), Restart(1)
    _generate(tiny_engine(), callbacks=[restart, sharpen], steps=1)
    assert sharpen.losses[-1] < sharpen.losses[0]  # gradient steps through the forward's maps


def test_a_noise_plugin_composes_with_a_loss_in_one_run():
    sharpen = Sharpen()
    result = _generate(tiny_engine(), [{"name": "syngen"}], callbacks=[sharpen], steps=2)
    assert sharpen.losses and [r.plugin for r in result.records[0].losses] == ["syngen"]


def test_a_wrong_shape_from_a_noise_plugin_names_the_plugin():
    class Bad(Callback):
        name = "bad_noise"

        @hookimpl
        def attnguide_initial_latents(self, latents):
            return latents[..., :3]

    with pytest.raises(PluginError, match=r"plugin 'bad_noise' returned \(1, 4, 32, 3\), expected a tensor of shape "
                                          r"\(1, 4, 32, 32\)"):
        _generate(tiny_engine(), callbacks=[Bad()], steps=1)


# -- embedding edits ---------------------------------------------------------------------------
class Replace(Callback):
    """From step ``start`` on, the prompt's embeddings are those of ``text``."""

    name = "replace"

    def __init__(self, text, start=0):
        super().__init__()
        self.text, self.start, self.steps = text, start, []

    @hookimpl
    def attnguide_edit_embeddings(self, ctx, embeds):
        self.steps.append(ctx.step)
        return ctx.encode(self.text) if ctx.step >= self.start else None


def test_replacing_the_embeddings_at_every_step_is_generating_the_other_prompt():
    engine = tiny_engine()
    edited = _generate(engine, callbacks=[Replace("a blue frog")], steps=3)
    other = _generate(engine, prompt="a blue frog", steps=3)
    assert torch.equal(edited.latents, other.latents)  # the unconditional branch is untouched


def test_edits_are_asked_at_every_step_and_may_depend_on_it():
    engine = tiny_engine()
    late = Replace("a blue frog", start=2)
    edited = _generate(engine, callbacks=[late], steps=3)
    assert late.steps == [0, 1, 2]
    assert not torch.equal(edited.latents, _generate(engine, steps=3).latents)
    assert not torch.equal(edited.latents, _generate(engine, prompt="a blue frog", steps=3).latents)


def test_the_guidance_forward_sees_the_edited_embeddings():
    engine = tiny_engine()
    plain = _generate(engine, [{"name": "syngen"}], steps=2)
    edited = _generate(engine, [{"name": "syngen"}], callbacks=[Replace("a yellow star")], steps=2)
    assert not torch.equal(plain.run.guidance_maps[0][0], edited.run.guidance_maps[0][0])
    assert [r.plugin for r in edited.records[0].losses] == ["syngen"]


def test_a_wrong_shape_from_an_edit_names_the_plugin():
    class Bad(Callback):
        name = "bad_edit"

        @hookimpl
        def attnguide_edit_embeddings(self, embeds):
            return embeds[:5]

    with pytest.raises(PluginError, match=r"plugin 'bad_edit' returned \(5, 32\), expected a tensor of shape \(77, 32\)"):
        _generate(tiny_engine(), callbacks=[Bad()], steps=1)


# -- the examples in docs/hooks.md run as written -----------------------------------------------
def _guide_block(section):
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "writing-plugins.md").read_text()
    body = text.split(f"### {section}\n", 1)[1].split("\n### ", 1)[0]
    return re.search(r"```python\n(.*?)```", body, re.S).group(1)


@pytest.mark.parametrize("section,cls", [("Optimise the initial noise", "Restart"),
                                         ("Edit the prompt's embeddings", "SwapAfter"),
                                         ("Change attention inside the forward pass", "Emphasise"),
                                         ("Ask for more maps", "SelfFocus")])
def test_the_intervention_examples_in_the_guide_run(section, cls):
    namespace = {"Callback": Callback, "LossPlugin": LossPlugin, "LossTerm": LossTerm, "MapRequest": MapRequest}
    exec(compile(_guide_block(section), "docs/writing-plugins.md", "exec"), namespace)  # noqa: S102 - docs under test
    engine = tiny_engine()
    plain = _generate(engine, steps=12)
    plugin = namespace[cls]()
    losses, callbacks = ([plugin], []) if isinstance(plugin, LossPlugin) else ([], [plugin])
    result = _generate(engine, losses, callbacks, steps=12)
    assert result.latents.shape == plain.latents.shape and torch.isfinite(result.latents).all()
    assert not torch.equal(result.latents, plain.latents)


class TuneEmbeddings(Callback):
    """At step 0, two gradient steps on the embeddings that raise token 2's attention."""

    name = "tune_embeddings"

    def __init__(self):
        super().__init__()
        self.losses, self.shapes = [], []

    @hookimpl
    def attnguide_edit_embeddings(self, ctx, embeds):
        if ctx.step != 0:
            return None
        e = embeds.detach().clone().requires_grad_(True)
        for _ in range(3):
            prediction, maps = ctx.forward(e)
            self.shapes.append(tuple(prediction.shape))
            loss = 1 - maps[2].max()
            self.losses.append(float(loss))
            (grad,) = torch.autograd.grad(loss, [e])
            e = (e - 50.0 * grad).detach().requires_grad_(True)
        return e.detach()


def test_an_edit_can_optimise_the_embeddings_through_the_steps_forward():
    plugin = TuneEmbeddings()
    result = _generate(tiny_engine(), [{"name": "syngen"}], callbacks=[plugin], steps=2)
    assert plugin.shapes[0] == (1, 4, 32, 32)
    assert plugin.losses[-1] < plugin.losses[0]
    assert [r.plugin for r in result.records[0].losses] == ["syngen"]
