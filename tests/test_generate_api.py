"""Engine.generate's keywords: diffusers' names, a sampling dict, one-seed lists, generators."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from attnguide.engine.engine import Engine
from attnguide.engine.sampling import SamplingConfig
from attnguide.errors import ConfigError
from attnguide.models.schedulers import make_scheduler

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a red cat and a blue frog"
QUICK = {"output_type": "latent", "progress": False}


@pytest.fixture(scope="module")
def engine(tiny_pipe):
    tiny_pipe.scheduler = make_scheduler("ddim", tiny_pipe.scheduler.config)
    return Engine(tiny_pipe)


def test_diffusers_step_and_image_counts_mean_steps_and_images_per_prompt(engine):
    ours = engine.generate(PROMPT, 3, steps=2, images_per_prompt=2, **QUICK)
    theirs = engine.generate(PROMPT, 3, num_inference_steps=2, num_images_per_prompt=2, **QUICK)
    assert theirs.config["steps"] == 2 and theirs.config["images_per_prompt"] == 2
    assert [r.seed for r in theirs.records] == [3, 4]
    assert torch.equal(ours.latents, theirs.latents)


def test_negative_prompt_keyword_sets_the_sampling_negative_prompt(engine):
    plain = engine.generate(PROMPT, 0, num_inference_steps=2, **QUICK)
    negative = engine.generate(PROMPT, 0, num_inference_steps=2, negative_prompt="blurry", **QUICK)
    assert negative.config["negative_prompt"] == "blurry"
    assert not torch.equal(plain.latents, negative.latents)


@pytest.mark.parametrize("given", [{"steps": 2, "num_inference_steps": 2},
                                   {"num_images_per_prompt": 2, "images_per_prompt": 2}])
def test_a_diffusers_name_with_its_attnguide_name_is_an_error_naming_both(engine, given):
    alias, name = sorted(given, key=len, reverse=True)
    with pytest.raises(ConfigError, match=rf"Engine.generate\(\).*'{name}'.*'{alias}'|'{alias}'.*'{name}'"):
        engine.generate(PROMPT, 0, **given, **QUICK)


def test_sampling_may_be_a_dict_of_settings(engine):
    as_model = engine.generate(PROMPT, 1, sampling=SamplingConfig(steps=2, guidance_scale=3.0), **QUICK)
    as_dict = engine.generate(PROMPT, 1, sampling={"steps": 2, "guidance_scale": 3.0}, **QUICK)
    with_alias = engine.generate(PROMPT, 1, sampling={"num_inference_steps": 2, "guidance_scale": 3.0}, **QUICK)
    assert as_dict.config["guidance_scale"] == 3.0
    assert torch.equal(as_model.latents, as_dict.latents) and torch.equal(as_dict.latents, with_alias.latents)
    overridden = engine.generate(PROMPT, 1, sampling={"steps": 5, "guidance_scale": 3.0}, steps=2, **QUICK)
    assert torch.equal(overridden.latents, as_dict.latents)


def test_a_bad_sampling_dict_names_the_key_with_a_suggestion(engine):
    with pytest.raises(ConfigError, match=r"sampling: unknown keyword 'stpes'; did you mean 'steps'\?"):
        engine.generate(PROMPT, 0, sampling={"stpes": 2}, **QUICK)
    with pytest.raises(ConfigError, match=r"sampling must be a SamplingConfig or a dict.*list"):
        engine.generate(PROMPT, 0, sampling=[("steps", 2)], **QUICK)  # type: ignore[arg-type]


@pytest.mark.parametrize("keyword,suggestion", [("stpes", "steps"), ("loss", "losses"),
                                                ("num_inference_step", "num_inference_steps"),
                                                ("generators", "generator")])
def test_an_unknown_keyword_is_named_with_the_closest_known_one(engine, keyword, suggestion):
    with pytest.raises(ConfigError, match=rf"unknown keyword '{keyword}'; did you mean '{suggestion}'\?"):
        engine.generate(PROMPT, 0, **{keyword: 2}, **QUICK)


def test_a_list_of_one_seed_counts_as_that_seed_for_every_image_of_a_prompt(engine):
    as_int = engine.generate(PROMPT, 5, steps=2, images_per_prompt=2, **QUICK)
    as_list = engine.generate(PROMPT, [5], steps=2, images_per_prompt=2, **QUICK)
    assert [r.seed for r in as_list.records] == [5, 6]
    assert torch.equal(as_int.latents, as_list.latents)


def test_a_generator_per_image_draws_its_images_latents(engine):
    seeded = engine.generate(PROMPT, [4, 9], steps=2, images_per_prompt=2, **QUICK)
    generators = [torch.Generator().manual_seed(4), torch.Generator().manual_seed(9)]
    drawn = engine.generate(PROMPT, generator=generators, steps=2, images_per_prompt=2, **QUICK)
    assert torch.equal(seeded.latents, drawn.latents)
    assert [r.seed for r in drawn.records] == [4, 9]
    assert [r.generator for r in drawn.records] == [True, True]
    assert drawn.records[0].to_dict()["generator"] is True
    assert "generator" not in seeded.records[0].to_dict() and not seeded.records[0].generator


def test_one_generator_draws_the_batch_as_the_diffusers_pipeline_does(engine, tiny_pipe):
    kwargs = {"num_inference_steps": 2, "num_images_per_prompt": 2, "negative_prompt": "blurry"}
    expected = tiny_pipe(PROMPT, generator=torch.Generator().manual_seed(12), output_type="latent", **kwargs).images
    result = engine.generate(PROMPT, generator=torch.Generator().manual_seed(12), **kwargs, **QUICK)
    # float rounding of the two encoders' batches only: another draw would differ by O(1)
    assert (result.latents - expected).abs().max().item() <= 1e-4
    assert [r.seed for r in result.records] == [12, 12]
    per_seed = engine.generate(PROMPT, 12, **kwargs, **QUICK)  # generators seeded 12 and 13
    assert (per_seed.latents[1] - result.latents[1]).abs().max().item() > 0.1


def test_generator_errors_name_the_problem(engine):
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ConfigError, match=r"seeds or generator, not both"):
        engine.generate(PROMPT, 0, generator=gen, steps=1, **QUICK)
    with pytest.raises(ConfigError, match=r"generator: 2 generators for 3 images"):
        engine.generate(PROMPT, generator=[gen, gen], steps=1, images_per_prompt=3, **QUICK)
    with pytest.raises(ConfigError, match=r"generator\[1\]: expected a torch.Generator, got int"):
        engine.generate(PROMPT, generator=[gen, 3], steps=1, images_per_prompt=2, **QUICK)


def test_readme_diffusers_keywords_example_runs():
    text = (ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "num_inference_steps" in b)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - documentation under test
    as_diffusers, as_attnguide = namespace["as_diffusers"], namespace["as_attnguide"]
    assert [r.seed for r in as_diffusers.records] == [7, 8]
    assert [r.seed for r in as_attnguide.records] == [7, 8]
    assert torch.equal(as_diffusers.latents, as_attnguide.latents)
    assert as_diffusers.config["steps"] == 4 and as_diffusers.config["negative_prompt"] == "blurry"
