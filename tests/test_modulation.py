"""Attention modulation inside the forward pass: probabilities and per-phrase value states on the
layers a plugin names, in every forward of the run, alone and with a loss."""

from __future__ import annotations

import pytest
import torch

from attnguide import Callback, ConfigError, Engine, PluginError, hookimpl, load_pipeline
from attnguide.engine.requests import MapRequest
from attnguide.testing import analysis_for, tiny_engine
from attnguide.types import AttentionEdit

PROMPT = "a red cat and a blue frog"
BINDINGS = {"cat": ["red"], "frog": ["blue"]}


def _generate(engine, losses=(), callbacks=(), steps=2, **kwargs):
    analysis = analysis_for(PROMPT, BINDINGS, engine.pipe.tokenizer)
    return engine.generate(PROMPT, [0], losses=list(losses), callbacks=list(callbacks), analyses=[analysis],
                           steps=steps, height=256, width=256, output_type="latent", progress=False, **kwargs)


class Modulate(Callback):
    name = "modulate"

    def __init__(self, edit=lambda ctx, probs: None, where=MapRequest("cross", every=True)):
        super().__init__()
        self.edit, self.where, self.calls = edit, where, []

    def modulated_layers(self):
        return (self.where,) if self.where else ()

    @hookimpl
    def attnguide_modulate_attention(self, ctx, probs):
        self.calls.append((ctx.layer, ctx.step, tuple(ctx.rows), tuple(probs.shape)))
        return self.edit(ctx, probs)


def test_every_forward_reaches_the_hook_with_its_rows_and_step():
    plugin = Modulate()
    _generate(tiny_engine(), [{"name": "syngen", "window": [0, 0.5]}], [plugin])
    layers = {c[0] for c in plugin.calls}
    assert len(layers) == 7 and all(name.endswith("attn2.processor") for name in layers)
    rows_by_step = {(c[1], c[2]) for c in plugin.calls}
    # step 0: the guidance forward (cond only), then the CFG forward; step 1: CFG only
    assert rows_by_step == {(0, ((0, "cond"),)), (0, ((0, "uncond"), (0, "cond"))), (1, ((0, "uncond"), (0, "cond")))}


def test_returning_nothing_or_the_same_values_leaves_the_result_to_float_precision():
    engine = tiny_engine()
    plain = _generate(engine)
    untouched = _generate(engine, callbacks=[Modulate()])
    same_values = _generate(engine, callbacks=[Modulate(lambda ctx, p: AttentionEdit(values=[ctx.context, ctx.context]))])
    # explicit softmax instead of SDPA in 7 layers: the same maths, rounded differently
    assert (untouched.latents - plain.latents).abs().max() < 1e-4
    assert (same_values.latents - untouched.latents).abs().max() < 1e-5


def test_edited_probabilities_are_what_the_layer_and_the_losses_use():
    def all_on_token_5(ctx, probs):
        out = torch.zeros_like(probs)
        out[..., 5] = 1.0
        return out

    engine = tiny_engine()
    result = _generate(engine, [{"name": "syngen"}], [Modulate(all_on_token_5, MapRequest("cross", 16))])
    maps = result.run.guidance_maps[0][0]
    assert torch.allclose(maps[5], torch.ones_like(maps[5]))
    assert not torch.allclose(result.latents, _generate(engine, [{"name": "syngen"}]).latents, atol=1e-3)


def test_value_states_are_averaged_through_the_layers_value_projection():
    engine = tiny_engine()
    zeros = _generate(engine, callbacks=[Modulate(lambda ctx, p: AttentionEdit(values=[torch.zeros_like(ctx.context)]))])
    half = _generate(engine, callbacks=[Modulate(
        lambda ctx, p: AttentionEdit(values=[torch.zeros_like(ctx.context), ctx.context]))])
    plain = _generate(engine, callbacks=[Modulate()])
    assert not torch.allclose(zeros.latents, plain.latents, atol=1e-4)
    assert not torch.allclose(half.latents, plain.latents, atol=1e-4) and not torch.allclose(half.latents, zeros.latents, atol=1e-4)


def test_a_single_layer_is_the_only_one_leaving_the_fast_kernel():
    name = "up_blocks.0.attentions.0.transformer_blocks.0.attn2.processor"
    plugin = Modulate(where=MapRequest("cross", layers=(name,)))
    _generate(tiny_engine(), callbacks=[plugin], steps=1)
    assert {c[0] for c in plugin.calls} == {name}


def test_mistakes_name_the_plugin():
    with pytest.raises(PluginError, match=r"plugin 'modulate' returned attention probabilities \(2, 1\) at "):
        _generate(tiny_engine(), callbacks=[Modulate(lambda ctx, p: p[:, 0, 0, :1])], steps=1)
    with pytest.raises(ConfigError, match=r"plugin 'modulate' modulates attention but names no layers"):
        _generate(tiny_engine(), callbacks=[Modulate(where=None)], steps=1)
    engine = Engine(load_pipeline("tiny-sd3"), parser="manual")
    analysis = analysis_for(PROMPT, BINDINGS, engine.pipe.tokenizer)
    with pytest.raises(ConfigError, match=r"plugin 'modulate' asks for every cross-attention layer, but .*need a UNet"):
        engine.generate(PROMPT, [0], callbacks=[Modulate()], analyses=[analysis], steps=1, output_type="latent",
                        progress=False)
