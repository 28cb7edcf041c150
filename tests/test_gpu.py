"""CUDA checks: parity with diffusers on the GPU and guidance under mixed precision."""

from __future__ import annotations

import pytest
import torch

from attnguide.engine.engine import Engine
from attnguide.models.loading import load_pipeline
from attnguide.engine.runtime import RuntimeConfig
from engine_helpers import analysis_for

pytestmark = pytest.mark.gpu
PROMPT = "a pink sunflower and a yellow flamingo"


def test_unguided_cuda_latents_equal_diffusers_pipeline():
    pipe = load_pipeline("tiny", scheduler="ddim")
    engine = Engine(pipe, runtime=RuntimeConfig(accelerator="cuda", precision="32-true"))
    assert engine.device.type == "cuda"
    expected = pipe(PROMPT, generator=[torch.Generator().manual_seed(0)], num_inference_steps=4,
                    output_type="latent").images
    got = engine.generate(PROMPT, [0], steps=4, output_type="latent", progress=False).latents
    assert (got - expected.cpu()).abs().max().item() <= 1e-4


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
@pytest.mark.parametrize("method", ["syngen", "attend_excite", "astar", "entropy_syngen"])
def test_guidance_runs_under_mixed_precision_with_finite_losses(precision, method):
    pipe = load_pipeline("tiny", scheduler="ddim")
    engine = Engine(pipe, runtime=RuntimeConfig(accelerator="cuda", precision=precision))
    analysis = analysis_for(pipe.tokenizer, PROMPT, [("sunflower", ["pink"]), ("flamingo", ["yellow"])])
    plain = engine.generate(PROMPT, [0], steps=4, analyses=[analysis], output_type="latent", progress=False)
    guided = engine.generate(PROMPT, [0], steps=4, losses=[method], analyses=[analysis],
                             output_type="latent", progress=False)
    values = [r["value"] for r in guided.records[0].losses]
    assert values and all(torch.isfinite(torch.tensor(values)))
    assert not guided.records[0].skipped
    assert torch.isfinite(guided.latents).all()
    assert (guided.latents - plain.latents).abs().max() > 0


def test_batched_guidance_on_cuda_matches_one_image_at_a_time():
    pipe = load_pipeline("tiny", scheduler="ddim")
    prompts = [PROMPT, "a red dog and a blue frog"]
    runs = {}
    for together in (True, False):
        engine = Engine(pipe, runtime=RuntimeConfig(accelerator="cuda", precision="32-true"), batch_guidance=together)
        runs[together] = engine.generate(prompts, [0, 1], steps=4, losses=["syngen"], output_type="latent",
                                         progress=False).latents
    scale = runs[False].abs().max()
    assert (runs[True] - runs[False]).abs().max() <= 1e-3 * scale


def test_compiled_channels_last_unguided_run_matches_eager_on_cuda():
    pipe = load_pipeline("tiny", scheduler="ddim")
    eager = Engine(pipe, runtime=RuntimeConfig(accelerator="cuda", precision="32-true"))
    expected = eager.generate(PROMPT, [0], steps=4, output_type="latent", progress=False).latents
    fast = Engine(load_pipeline("tiny", scheduler="ddim"),
                  runtime=RuntimeConfig(accelerator="cuda", precision="32-true", compile=True, channels_last=True))
    got = fast.generate(PROMPT, [0], steps=4, output_type="latent", progress=False).latents
    assert (got - expected).abs().max() <= 1e-3 * expected.abs().max()
