"""Flux: the engine drives ``FluxPipeline`` (double- and single-stream joint attention, T5 text
tokens only, guidance-distilled, packed latents) on the embedded ``tiny-flux``."""

from __future__ import annotations

import json

import pytest
import torch

from attnguide import Engine, load_pipeline
from attnguide.models.families import default_attention_layers, family_of
from attnguide.testing import run_plugin

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


@pytest.mark.parametrize("prompts,seeds", [([PROMPT], [3]), ([PROMPT, "a yellow star"], [3, 11])])
def test_unguided_latents_equal_diffusers_flux_pipeline(pipe, engine, prompts, seeds):
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    expected = pipe(prompts, generator=generators, num_inference_steps=3, guidance_scale=3.5,
                    output_type="latent").images
    result = engine.generate(prompts, seeds, steps=3, guidance_scale=3.5, output_type="latent", progress=False)
    assert (result.latents - expected).abs().max().item() <= 1e-5


def test_decoded_images_match_the_flux_pipelines(pipe, engine):
    import numpy as np

    ref = pipe(PROMPT, generator=[torch.Generator().manual_seed(0)], num_inference_steps=2, guidance_scale=3.5,
               output_type="np").images
    ours = engine.generate(PROMPT, [0], steps=2, guidance_scale=3.5, progress=False).images
    assert np.abs(np.asarray(ours[0], dtype=np.int16) - np.round(ref[0] * 255).astype(np.int16)).max() <= 1


def test_one_forward_per_unguided_step(pipe, engine):
    calls = []
    handle = pipe.transformer.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        engine.generate(PROMPT, [0], steps=3, output_type="latent", progress=False)
    finally:
        handle.remove()
    assert len(calls) == 3  # guidance-distilled: no classifier-free-guidance branch


def test_the_losses_see_t5_position_maps_that_sum_to_one_per_pixel(engine):
    result = engine.generate(PROMPT, [0], steps=2, losses=["syngen"], output_type="latent", progress=False)
    maps = result.run.guidance_maps[0][0]
    assert tuple(maps.shape) == (512, 16, 16)
    assert torch.allclose(maps.sum(0), torch.ones(16, 16), atol=1e-5)


@pytest.mark.parametrize("method", ["syngen", "entropy_syngen", "attend_excite", "astar"])
def test_every_method_runs_end_to_end_on_tiny_flux_and_moves_the_latents(engine, method):
    records = run_plugin(method, PROMPT, BINDINGS, steps=4, engine=engine)
    assert {r.step for r in records} == {0, 1} and all(r.plugin == method for r in records)
    assert all(torch.isfinite(torch.tensor(r.value)) for r in records)
    plain = engine.generate(PROMPT, [0], steps=4, output_type="latent", progress=False)
    guided = engine.generate(PROMPT, [0], steps=4, losses=[method], output_type="latent", progress=False)
    assert (guided.latents - plain.latents).abs().max() > 0


def test_single_stream_blocks_can_be_captured_by_name(pipe):
    layers = ["single_transformer_blocks.0.attn.processor", "single_transformer_blocks.1.attn.processor"]
    engine = Engine(pipe, attention_layers=layers, attention_resolution=None, parser="manual",
                    parser_params={"bindings": BINDINGS})
    result = engine.generate(PROMPT, [0], steps=2, losses=["syngen"], output_type="latent", progress=False)
    maps = result.run.guidance_maps[0][0]
    assert tuple(maps.shape) == (512, 16, 16) and torch.allclose(maps.sum(0), torch.ones(16, 16), atol=1e-5)


def test_heatmaps_and_the_generate_command_on_tiny_flux(engine, tmp_path, capsys):
    result = engine.generate(PROMPT, [0], steps=2, callbacks=["heatmaps"], progress=False)
    assert set(result.run.artifacts[0]) == {"heatmaps.png", "maps.safetensors"}
    from attnguide.cli.main import main

    rc = main(["generate", "--model", "tiny-flux", "--prompt", PROMPT, "--seed", "0", "--steps", "2",
               "--method", "syngen", "--parser", "manual", "--parser-param", "bindings={cat: [red], frog: [blue]}",
               "--out", str(tmp_path), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    meta = json.loads(open(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["metadata"]).read())
    assert meta["model"] == "tiny-flux" and meta["losses"][0]["plugin"] == "syngen"


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
