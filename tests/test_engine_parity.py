"""With no guidance, the engine's output equals the diffusers pipeline's."""

from __future__ import annotations

import pytest
import torch

from attnguide.engine.engine import Engine
from attnguide.models.schedulers import make_scheduler


@pytest.fixture(scope="module")
def engine(tiny_pipe):
    return Engine(tiny_pipe)


def _reference(pipe, prompts, seeds, **kwargs):
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    return pipe(prompts, generator=generators, output_type="latent", **kwargs).images


@pytest.mark.parametrize("scheduler", ["ddim", "pndm"])
@pytest.mark.parametrize("prompts,seeds", [(["a cat"], [3]), (["a cat", "a red dog and a frog"], [3, 11])])
def test_unguided_latents_equal_diffusers_pipeline(engine, tiny_pipe, scheduler, prompts, seeds):
    tiny_pipe.scheduler = make_scheduler(scheduler, tiny_pipe.scheduler.config)
    expected = _reference(tiny_pipe, prompts, seeds, num_inference_steps=4)
    result = engine.generate(prompts, seeds, steps=4, output_type="latent", progress=False)
    assert (result.latents - expected).abs().max().item() <= 1e-5


def test_negative_prompt_and_images_per_prompt_match_diffusers(engine, tiny_pipe):
    tiny_pipe.scheduler = make_scheduler("ddim", tiny_pipe.scheduler.config)
    expected = _reference(
        tiny_pipe, ["a blue bird"], [5, 6], num_inference_steps=3, negative_prompt=["blurry"], num_images_per_prompt=2
    )
    result = engine.generate(
        "a blue bird", [5, 6], steps=3, negative_prompt="blurry", images_per_prompt=2, output_type="latent",
        progress=False,
    )
    assert (result.latents - expected).abs().max().item() <= 1e-5


def test_same_seed_gives_same_image_whatever_the_batch(engine, tiny_pipe):
    import numpy as np

    tiny_pipe.scheduler = make_scheduler("ddim", tiny_pipe.scheduler.config)
    alone = engine.generate("a cat", [7], steps=3, progress=False)
    batched = engine.generate(["a dog", "a cat"], [1, 7], steps=3, progress=False)
    # identical initial noise; batched convolutions differ only in float rounding
    assert torch.allclose(alone.latents[0], batched.latents[1], rtol=1e-4, atol=1e-4)
    a = np.asarray(alone.images[0], dtype=np.int16)
    b = np.asarray(batched.images[1], dtype=np.int16)
    assert np.abs(a - b).max() <= 1


def test_decoded_images_match_pipeline_images(engine, tiny_pipe):
    tiny_pipe.scheduler = make_scheduler("ddim", tiny_pipe.scheduler.config)
    ref = tiny_pipe("a cat", generator=[torch.Generator().manual_seed(0)], num_inference_steps=2, output_type="np").images
    images = engine.generate("a cat", [0], steps=2, progress=False).images
    import numpy as np

    got = np.asarray(images[0], dtype=np.float32) / 255.0
    assert got.shape == ref[0].shape
    assert np.abs(got - ref[0]).max() <= 1 / 255 + 1e-6


def test_attention_processors_are_restored_after_run_and_after_error(engine, tiny_pipe):
    before = {k: type(v) for k, v in tiny_pipe.unet.attn_processors.items()}
    engine.generate("a cat", [0], steps=1, output_type="latent", progress=False)
    assert {k: type(v) for k, v in tiny_pipe.unet.attn_processors.items()} == before

    from attnguide.plugin.callbacks import Callback
    from attnguide.errors import PluginError
    from attnguide.plugin.hookspecs import hookimpl

    class Boom(Callback):
        name = "boom"

        @hookimpl
        def on_step_start(self, step):
            raise RuntimeError("kaput")

    with pytest.raises(PluginError, match="'boom'.*on_step_start.*kaput"):
        engine.generate("a cat", [0], steps=1, callbacks=[Boom()], output_type="latent", progress=False)
    assert {k: type(v) for k, v in tiny_pipe.unet.attn_processors.items()} == before


def test_unknown_or_invalid_sampling_keywords_are_config_errors(engine):
    from attnguide.errors import ConfigError

    with pytest.raises(ConfigError, match="stepz"):
        engine.generate("a cat", 0, stepz=3, progress=False)
    with pytest.raises(ConfigError, match="height"):
        engine.generate("a cat", 0, height=100, progress=False)
