"""SD3: the engine drives ``StableDiffusion3Pipeline`` (MMDiT joint attention, CLIP + T5 text,
flow matching) on the embedded ``tiny-sd3``: parity without guidance, every method, heat maps."""

from __future__ import annotations


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


def test_reference_style_is_refused_on_sd3_naming_the_reason(pipe):
    with pytest.raises(ConfigError, match="StableDiffusion3Pipeline.s joint attention"):
        Engine(pipe, reference_style=True)
