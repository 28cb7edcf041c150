"""What every non-SD-1.x family must do on its embedded tiny model: parity with its diffusers
pipeline without guidance, every method end to end, maps the losses can read, heat maps and the
generate command. Family-specific behaviour: test_sdxl.py, test_sd3.py, test_flux.py."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from attnguide import Engine, load_pipeline
from attnguide.testing import run_plugin

PROMPT = "a red cat and a blue frog"
BINDINGS = {"cat": ["red"], "frog": ["blue"]}
METHODS = ["syngen", "entropy_syngen", "attend_excite", "astar"]


@dataclass(frozen=True)
class Case:
    model: str
    guidance_scale: float  # what the test passes to both the pipeline and the engine
    negative: str | None  # a negative prompt where the pipeline has an unconditional branch
    size: int  # a small size for the guided runs
    maps: tuple[int, int, int]  # [tokens, H, W] the losses read at the native size


CASES = [
    Case("tiny-sdxl", 7.5, "blurry", 256, (77, 16, 16)),
    Case("tiny-sd3", 7.5, "blurry", 256, (77, 16, 16)),
    Case("tiny-flux", 3.5, None, 256, (512, 16, 16)),
]


@pytest.fixture(scope="module", params=CASES, ids=[c.model for c in CASES])
def family(request):
    case = request.param
    pipe = load_pipeline(case.model)
    return case, pipe, Engine(pipe, parser="manual", parser_params={"bindings": BINDINGS})


@pytest.mark.parametrize("prompts,seeds", [([PROMPT], [3]), ([PROMPT, "a yellow star"], [3, 11])])
def test_unguided_latents_equal_the_diffusers_pipelines(family, prompts, seeds):
    case, pipe, engine = family
    negative = case.negative if len(prompts) == 2 else None
    expected = pipe(prompts, generator=[torch.Generator().manual_seed(s) for s in seeds], num_inference_steps=3,
                    guidance_scale=case.guidance_scale, output_type="latent",
                    **({"negative_prompt": [negative] * len(prompts)} if negative else {})).images
    result = engine.generate(prompts, seeds, steps=3, guidance_scale=case.guidance_scale, negative_prompt=negative,
                             output_type="latent", progress=False)
    assert (result.latents - expected).abs().max().item() <= 1e-5


def test_decoded_images_match_the_pipelines(family):
    case, pipe, engine = family
    ref = pipe(PROMPT, generator=[torch.Generator().manual_seed(0)], num_inference_steps=2,
               guidance_scale=case.guidance_scale, output_type="np").images
    ours = engine.generate(PROMPT, [0], steps=2, guidance_scale=case.guidance_scale, progress=False).images
    assert np.abs(np.asarray(ours[0], dtype=np.int16) - np.round(ref[0] * 255).astype(np.int16)).max() <= 1


def test_the_losses_read_maps_that_sum_to_one_per_pixel_over_the_text_tokens(family):
    case, _, engine = family
    result = engine.generate(PROMPT, [0], steps=2, losses=["syngen"], output_type="latent", progress=False)
    maps = result.run.guidance_maps[0][0]
    assert tuple(maps.shape) == case.maps
    assert torch.allclose(maps.sum(0), torch.ones(case.maps[1:]), atol=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_end_to_end_and_moves_the_latents(family, method):
    case, _, engine = family
    records = run_plugin(method, PROMPT, BINDINGS, steps=4, engine=engine)
    assert {r.step for r in records} == {0, 1} and all(r.plugin == method for r in records)
    assert all(np.isfinite(r.value) for r in records)
    kwargs = dict(steps=4, output_type="latent", progress=False, height=case.size, width=case.size)
    plain = engine.generate(PROMPT, [0], **kwargs)
    guided = engine.generate(PROMPT, [0], losses=[method], **kwargs)
    assert (guided.latents - plain.latents).abs().max() > 0


def test_heatmaps_and_the_generate_command(family, tmp_path, capsys):
    case, _, engine = family
    result = engine.generate(PROMPT, [0], steps=2, callbacks=["heatmaps"], progress=False)
    assert set(result.run.artifacts[0]) == {"heatmaps.png", "maps.safetensors"}
    from attnguide.cli.main import main

    rc = main(["generate", "--model", case.model, "--prompt", PROMPT, "--seed", "0", "--steps", "2",
               "--height", str(case.size), "--width", str(case.size), "--method", "syngen", "--parser", "manual",
               "--parser-param", "bindings={cat: [red], frog: [blue]}", "--out", str(tmp_path), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    paths = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    meta = json.loads(open(paths["metadata"]).read())
    assert meta["model"] == case.model and meta["losses"][0]["plugin"] == "syngen"
    assert open(paths["image"], "rb").read(4) == b"\x89PNG"
