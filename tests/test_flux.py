"""Flux: the engine drives ``FluxPipeline`` (double- and single-stream joint attention, T5 text
tokens only, guidance-distilled, packed latents) on the embedded ``tiny-flux``."""

from __future__ import annotations


import pytest
import torch

from attnguide import Engine, load_pipeline
from attnguide.models.families import default_attention_layers, family_of

PROMPT = "a red cat and a blue frog"
BINDINGS = {"cat": ["red"], "frog": ["blue"]}


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("tiny-flux")


@pytest.fixture(scope="module")
def engine(pipe):
    return Engine(pipe, parser="manual", parser_params={"bindings": BINDINGS})


def test_tiny_flux_has_double_and_single_stream_blocks_and_t5_text(pipe, engine):
    assert family_of(pipe) == "flux"
    names = sorted(pipe.transformer.attn_processors)
    assert [n for n in names if n.startswith("single_")] == ["single_transformer_blocks.0.attn.processor",
                                                              "single_transformer_blocks.1.attn.processor"]
    assert engine.store.layers == frozenset(default_attention_layers(pipe)) == {
        "transformer_blocks.0.attn.processor", "transformer_blocks.1.attn.processor"}
    assert pipe.transformer.config.guidance_embeds
    # the analysis is aligned to T5: positions from 0, no start token
    analysis = engine.analyse(PROMPT)
    assert analysis.tokens.prompt_positions[0] == 0 and analysis.tokens.pieces[-1] == "</s>"


def test_one_forward_per_unguided_step(pipe, engine):
    calls = []
    handle = pipe.transformer.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        engine.generate(PROMPT, [0], steps=3, output_type="latent", progress=False)
    finally:
        handle.remove()
    assert len(calls) == 3  # guidance-distilled: no classifier-free-guidance branch


def test_single_stream_blocks_can_be_captured_by_name(pipe):
    layers = ["single_transformer_blocks.0.attn.processor", "single_transformer_blocks.1.attn.processor"]
    engine = Engine(pipe, attention_layers=layers, attention_resolution=None, parser="manual",
                    parser_params={"bindings": BINDINGS})
    result = engine.generate(PROMPT, [0], steps=2, losses=["syngen"], output_type="latent", progress=False)
    maps = result.run.guidance_maps[0][0]
    assert tuple(maps.shape) == (512, 16, 16) and torch.allclose(maps.sum(0), torch.ones(16, 16), atol=1e-5)


def test_a_schnell_like_flux_without_guidance_embedding_matches_its_pipeline_in_few_steps():
    from attnguide.models.tiny_flux import tiny_flux_pipeline

    pipe = tiny_flux_pipeline(schnell=True)
    assert not pipe.transformer.config.guidance_embeds
    expected = pipe(PROMPT, generator=[torch.Generator().manual_seed(1)], num_inference_steps=2,
                    output_type="latent").images
    engine = Engine(pipe, parser="manual", parser_params={"bindings": BINDINGS})
    result = engine.generate(PROMPT, [1], steps=2, output_type="latent", progress=False)
    assert (result.latents - expected).abs().max().item() <= 1e-5
    guided = engine.generate(PROMPT, [1], steps=2, losses=["syngen"], output_type="latent", progress=False)
    assert (guided.latents - result.latents).abs().max() > 0


def test_a_negative_prompt_on_flux_is_a_clear_error_not_silently_ignored(engine):
    from attnguide import ConfigError

    with pytest.raises(ConfigError, match="negative_prompt on a FluxPipeline: Flux is guidance-distilled"):
        engine.generate(PROMPT, [0], steps=1, negative_prompt="blurry", output_type="latent", progress=False)
