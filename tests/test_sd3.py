"""SD3: the engine drives ``StableDiffusion3Pipeline`` (MMDiT joint attention, CLIP + T5 text,
flow matching) on the embedded ``tiny-sd3``: parity without guidance, every method, heat maps."""

from __future__ import annotations

import json

import pytest
import torch

from attnguide import ConfigError, Engine, load_pipeline
from attnguide.models.families import default_attention_resolution, family_of
from attnguide.testing import run_plugin

PROMPT = "a red cat and a blue frog"
BINDINGS = {"cat": ["red"], "frog": ["blue"]}


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("tiny-sd3")


@pytest.fixture(scope="module")
def engine(pipe):
    return Engine(pipe, parser="manual", parser_params={"bindings": BINDINGS})


def test_tiny_sd3_is_an_mmdit_with_clip_and_t5_text(pipe, engine):
    assert family_of(pipe) == "sd3"
    assert sorted(pipe.transformer.attn_processors) == ["transformer_blocks.0.attn.processor",
                                                       "transformer_blocks.1.attn.processor"]
    assert pipe.tokenizer_3.bos_token is None and pipe.tokenizer_3.eos_token == "</s>"
    assert type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert default_attention_resolution(pipe) is None and engine.store.resolution is None


@pytest.mark.parametrize("prompts,seeds,negative", [
    ([PROMPT], [3], None),
    ([PROMPT, "a yellow star"], [3, 11], "blurry"),
])
def test_unguided_latents_equal_diffusers_sd3_pipeline(pipe, engine, prompts, seeds, negative):
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    expected = pipe(prompts, generator=generators, num_inference_steps=3, guidance_scale=7.5,
                    negative_prompt=[negative] * len(prompts) if negative else None, output_type="latent").images
    result = engine.generate(prompts, seeds, steps=3, negative_prompt=negative, output_type="latent", progress=False)
    assert (result.latents - expected).abs().max().item() <= 1e-5


def test_decoded_images_match_the_sd3_pipelines(pipe, engine):
    import numpy as np

    ref = pipe(PROMPT, generator=[torch.Generator().manual_seed(0)], num_inference_steps=2, guidance_scale=7.5,
               output_type="np").images
    ours = engine.generate(PROMPT, [0], steps=2, progress=False).images
    assert np.abs(np.asarray(ours[0], dtype=np.int16) - np.round(ref[0] * 255).astype(np.int16)).max() <= 1


def test_the_losses_see_clip_position_maps_that_sum_to_one_per_pixel(engine):
    result = engine.generate(PROMPT, [0], steps=2, losses=["syngen"], output_type="latent", progress=False)
    maps = result.run.guidance_maps[0][0]
    assert tuple(maps.shape) == (77, 16, 16)
    assert torch.allclose(maps.sum(0), torch.ones(16, 16), atol=1e-5)


@pytest.mark.parametrize("method", ["syngen", "entropy_syngen", "attend_excite", "astar"])
def test_every_method_runs_end_to_end_on_tiny_sd3_and_moves_the_latents(engine, method):
    records = run_plugin(method, PROMPT, BINDINGS, steps=4, engine=engine)
    assert {r.step for r in records} == {0, 1} and all(r.plugin == method for r in records)
    assert all(torch.isfinite(torch.tensor(r.value)) for r in records)
    plain = engine.generate(PROMPT, [0], steps=4, output_type="latent", progress=False)
    guided = engine.generate(PROMPT, [0], steps=4, losses=[method], output_type="latent", progress=False)
    assert (guided.latents - plain.latents).abs().max() > 0


def test_a_guided_update_lowers_the_loss_within_its_step(engine):
    # an unreachable refinement target makes the engine re-evaluate right after each update
    spec = {"name": "attend_excite", "thresholds": {0: 0.999}, "max_refinement_steps": 2, "scale_factor": 5.0}
    records = run_plugin(spec, PROMPT, BINDINGS, steps=4, engine=engine)
    step0 = [r.value for r in records if r.step == 0]
    assert len(step0) >= 2 and step0[1] < step0[0]


@pytest.mark.parametrize("mode", ["clip", "t5"])
def test_text_maps_setting_changes_what_the_losses_see(pipe, mode):
    averaged = Engine(pipe, parser="manual", parser_params={"bindings": BINDINGS})
    other = Engine(pipe, parser="manual", parser_params={"bindings": BINDINGS}, text_maps=mode)
    kwargs = dict(steps=2, losses=["syngen"], output_type="latent", progress=False)
    a = averaged.generate(PROMPT, [0], **kwargs).run.guidance_maps[0][0]
    b = other.generate(PROMPT, [0], **kwargs).run.guidance_maps[0][0]
    assert not torch.allclose(a, b)


def test_heatmaps_callback_runs_on_tiny_sd3(engine):
    result = engine.generate(PROMPT, [0], steps=2, callbacks=["heatmaps"], progress=False)
    assert result.images[0].size == (256, 256)
    assert set(result.run.artifacts[0]) == {"heatmaps.png", "maps.safetensors"}


def test_generate_command_on_tiny_sd3_writes_image_metadata_and_losses(tmp_path, capsys):
    from attnguide.cli.main import main

    rc = main(["generate", "--model", "tiny-sd3", "--prompt", PROMPT, "--seed", "0", "--steps", "2",
               "--method", "syngen", "--parser", "manual", "--parser-param", "bindings={cat: [red], frog: [blue]}",
               "--out", str(tmp_path), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    paths = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    meta = json.loads(open(paths["metadata"]).read())
    assert meta["model"] == "tiny-sd3" and meta["losses"][0]["plugin"] == "syngen"


def test_reference_style_is_refused_on_sd3_naming_the_reason(pipe):
    with pytest.raises(ConfigError, match="StableDiffusion3Pipeline.s joint attention"):
        Engine(pipe, reference_style=True)
