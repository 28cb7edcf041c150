"""SDXL: the engine drives ``StableDiffusionXLPipeline`` (two text encoders, added conditioning)
on the embedded ``tiny-sdxl``: parity without guidance, every method and the heat-map callback."""

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
    return load_pipeline("tiny-sdxl")


@pytest.fixture(scope="module")
def engine(pipe):
    return Engine(pipe, parser="manual", parser_params={"bindings": BINDINGS})


def test_tiny_sdxl_has_sdxls_block_layout_and_captures_its_lowest_resolution(pipe, engine):
    assert family_of(pipe) == "sdxl"
    cross = sorted({n.split(".attentions")[0] for n in pipe.unet.attn_processors if n.endswith("attn2.processor")})
    assert cross == ["down_blocks.1", "down_blocks.2", "mid_block", "up_blocks.0", "up_blocks.1"]
    assert pipe.unet.config.addition_embed_type == "text_time"
    # 512 px -> 64x64 latents -> the down_blocks.2 / mid / up_blocks.0 layers are 16x16
    assert default_attention_resolution(pipe) == engine.store.resolution == 16
    assert pipe.tokenizer_2.pad_token == "!"


@pytest.mark.parametrize("prompts,seeds,negative", [
    ([PROMPT], [3], None),
    ([PROMPT, "a yellow star"], [3, 11], "blurry"),
])
def test_unguided_latents_equal_diffusers_sdxl_pipeline(pipe, engine, prompts, seeds, negative):
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    expected = pipe(prompts, generator=generators, num_inference_steps=3, guidance_scale=7.5,
                    negative_prompt=[negative] * len(prompts) if negative else None, output_type="latent").images
    result = engine.generate(prompts, seeds, steps=3, negative_prompt=negative, output_type="latent", progress=False)
    assert (result.latents - expected).abs().max().item() <= 1e-5


def test_decoded_images_match_the_sdxl_pipelines(pipe, engine):
    import numpy as np

    ref = pipe(PROMPT, generator=[torch.Generator().manual_seed(0)], num_inference_steps=2, guidance_scale=7.5,
               output_type="np").images
    ours = engine.generate(PROMPT, [0], steps=2, progress=False).images
    assert np.abs(np.asarray(ours[0], dtype=np.int16) - np.round(ref[0] * 255).astype(np.int16)).max() <= 1


@pytest.mark.parametrize("method", ["syngen", "entropy_syngen", "attend_excite", "astar"])
def test_every_method_runs_end_to_end_on_tiny_sdxl_and_moves_the_latents(engine, method):
    records = run_plugin(method, PROMPT, BINDINGS, steps=4, engine=engine)
    assert {r.step for r in records} == {0, 1} and all(r.plugin == method for r in records)
    assert all(torch.isfinite(torch.tensor(r.value)) for r in records)
    plain = engine.generate(PROMPT, [0], steps=4, output_type="latent", progress=False, height=256, width=256)
    guided = engine.generate(PROMPT, [0], steps=4, losses=[method], output_type="latent", progress=False,
                             height=256, width=256)
    assert (guided.latents - plain.latents).abs().max() > 0


def test_guidance_sees_token_maps_of_the_captured_grid(engine):
    result = engine.generate(PROMPT, [0], steps=2, losses=["syngen"], output_type="latent", progress=False)
    maps = result.run.guidance_maps[0][0]
    assert tuple(maps.shape) == (77, 16, 16)
    assert torch.allclose(maps.sum(0), torch.ones(16, 16), atol=1e-4)


def test_heatmaps_callback_runs_on_tiny_sdxl(engine):
    result = engine.generate(PROMPT, [0], steps=2, callbacks=["heatmaps"], progress=False)
    assert result.images[0].size == (512, 512)
    assert set(result.run.artifacts[0]) == {"heatmaps.png", "maps.safetensors"}


def test_generate_command_on_tiny_sdxl_writes_image_metadata_and_losses(tmp_path, capsys):
    from attnguide.cli.main import main

    rc = main(["generate", "--model", "tiny-sdxl", "--prompt", PROMPT, "--seed", "0", "--steps", "2",
               "--height", "256", "--width", "256", "--method", "syngen", "--parser", "manual",
               "--parser-param", "bindings={cat: [red], frog: [blue]}", "--out", str(tmp_path), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    paths = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    meta = json.loads(open(paths["metadata"]).read())
    assert meta["model"] == "tiny-sdxl" and meta["losses"][0]["plugin"] == "syngen"
    assert open(paths["image"], "rb").read(4) == b"\x89PNG"


def test_an_unsupported_pipeline_is_a_clear_error_naming_it():
    class PixArtAlphaPipeline:
        pass

    with pytest.raises(ConfigError, match="cannot drive a PixArtAlphaPipeline: supported pipelines are StableDiffusionPipeline.*FluxPipeline"):
        family_of(PixArtAlphaPipeline())


def test_the_command_in_docs_models_runs_as_written(tmp_path, capsys, monkeypatch):
    import re
    import shlex
    from pathlib import Path

    from attnguide.cli.main import main

    text = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text()
    command = re.search(r"```bash\n(.*?)```", text, re.S).group(1).replace("\\\n", " ")
    argv = shlex.split(command)
    assert argv[0] == "attnguide"
    monkeypatch.chdir(tmp_path)  # its --out is relative: write under the test's folder
    assert main(argv[1:]) == 0, capsys.readouterr().err
    assert list((tmp_path / "outputs" / "sdxl").glob("*.png"))


def test_a_layer_name_that_does_not_exist_is_a_clear_error_naming_model_and_layer(pipe):
    wrong = "up_blocks.0.attentions.1.transformer_blocks.1.attn2.processr"
    with pytest.raises(ConfigError, match=r"StableDiffusionXLPipeline has no capturable attention layer "
                                          r"'up_blocks.0.attentions.1.transformer_blocks.1.attn2.processr' "
                                          r"\(did you mean 'up_blocks.0.attentions.1.transformer_blocks.1.attn2.processor'\?\)"):
        Engine(pipe, attention_layers=[wrong])
    engine = Engine(pipe, attention_layers=["up_blocks.0.attentions.1.transformer_blocks.1.attn2.processor"],
                    attention_resolution=None, parser="manual", parser_params={"bindings": BINDINGS})
    result = engine.generate(PROMPT, [0], steps=2, losses=["syngen"], output_type="latent", progress=False)
    assert tuple(result.run.guidance_maps[0][0].shape) == (77, 16, 16)
