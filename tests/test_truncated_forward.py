"""The truncated guidance forward gives the full forward's loss and gradient."""

from __future__ import annotations

import pytest
import torch

from attnguide.engine.attention import AttentionStore, capture_attention
from attnguide.engine.engine import Engine
from attnguide.models.loading import load_pipeline
from engine_helpers import analysis_for

PROMPT = "a pink sunflower and a yellow flamingo"


def _loss_and_grad(pipe, store, truncate, calls):
    cond = pipe.encode_prompt(PROMPT, "cpu", 1, False)[0]
    z = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    with store.capture(truncate=truncate):
        pipe.unet(z, 500, encoder_hidden_states=cond)
    maps = store.maps()[0]
    p = maps[3].flatten() / maps[3].sum()
    q = maps[7].flatten() / maps[7].sum()
    loss = (p * (p.log() - q.log())).sum()
    (grad,) = torch.autograd.grad(loss, [z])
    return loss.detach(), grad, list(calls)


def test_truncated_forward_matches_full_loss_and_gradient_and_skips_later_blocks(tiny_pipe):
    store = AttentionStore(16)
    calls: list[str] = []
    hook = tiny_pipe.unet.up_blocks[1].register_forward_hook(lambda *a: calls.append("up_blocks.1"))
    try:
        with capture_attention(tiny_pipe.unet, store):
            full_loss, full_grad, full_calls = _loss_and_grad(tiny_pipe, store, False, calls)
            calls.clear()
            cut_loss, cut_grad, cut_calls = _loss_and_grad(tiny_pipe, store, True, calls)
    finally:
        hook.remove()
    assert full_calls == ["up_blocks.1"] and cut_calls == []
    assert torch.allclose(cut_loss, full_loss, rtol=1e-6, atol=0)
    assert torch.allclose(cut_grad, full_grad, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("method", ["syngen", "attend_excite"])
def test_reference_style_and_optimised_engines_give_the_same_latents(method):
    pipe = load_pipeline("tiny", scheduler="ddim")
    analysis = analysis_for(pipe.tokenizer, PROMPT, [("sunflower", ["pink"]), ("flamingo", ["yellow"])])
    out = {}
    for ref in (False, True):
        engine = Engine(pipe, reference_style=ref)
        out[ref] = engine.generate(PROMPT, [0], steps=4, losses=[method], analyses=[analysis],
                                   output_type="latent", progress=False).latents
    assert (out[True] - out[False]).abs().max().item() < 1e-4
