"""SDXL: the engine drives ``StableDiffusionXLPipeline`` (two text encoders, added conditioning)
on the embedded ``tiny-sdxl``: parity without guidance, every method and the heat-map callback."""

from __future__ import annotations


import pytest

from attnguide import ConfigError, Engine, load_pipeline
from attnguide.models.families import default_attention_resolution, family_of

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
