"""Batched guidance (issue 18): one guidance forward and backward for all images of a call.

Each image's loss depends only on its own latents, so the batched gradients are the per-image
ones; results match the one-image-at-a-time path (pinned bit for bit in
test_pinned_outputs.py) within float rounding, per-image refinement stopping and per-image logs
included.
"""

from __future__ import annotations

import pytest
import torch

from attnguide import Engine, load_pipeline
from attnguide.engine.guidance import guide_batch
from attnguide.engine.state import ImageRecord
from attnguide.engine.update import Descent, descend
from attnguide.plugin.hookspecs import hookimpl
from attnguide.plugin.manager import run_plugin_manager
from attnguide.types import LossTerm

PROMPTS = ["a pink sunflower and a yellow flamingo", "a red dog and a blue frog", "a green cat and a white bowl"]
# every guidance method at its defaults, cut to what the tiny model has and to a CPU budget
METHODS = {
    "syngen": {},
    "entropy_syngen": {},
    "attend_excite": {},
    "astar": {},
    "predicated": {},
    "conform": {},
    "divide_bind": {"attribute_resolutions": [32]},
    "initno": {"noise_rounds": 1, "noise_steps": 2, "noise_final_steps": 2},
    # ToMe's semantic binding takes steps of 1e4 on the embeddings: a 1e-5 difference in a loss
    # becomes 1e-2 after one of them (on either path), so it is compared without binding here
    "tome": {"binding_iterations": 0},
}
# Relative tolerance on the final latents. Long refinement chains at step size 20 amplify the
# rounding of batched kernels; measured on 3 images x 6 steps (max |diff| / max |latents|):
# InitNO 4e-4 (20 refinement passes a step), ToMe 1.7e-3 (entropy refinement); others < 1e-4.
TOLERANCE = {"initno": 1e-3, "tome": 5e-3}


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("tiny", scheduler="ddim")


@pytest.fixture(scope="module")
def engines(pipe):
    return {together: Engine(pipe, parser="spacy", batch_guidance=together) for together in (True, False)}


def generate(engine, losses, steps=6, prompts=PROMPTS):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return engine.generate(prompts, list(range(len(prompts))), steps=steps, losses=losses, height=256,
                               width=256, output_type="latent", progress=False)
    finally:
        torch.set_num_threads(threads)


def assert_float_close(batched, single, tolerance=1e-4):
    """Batched kernels round differently; the step sizes (up to 20) amplify it a little."""
    scale = single.abs().max().item()
    difference = (batched - single).abs().max().item()
    assert difference <= tolerance * scale, f"max |diff| {difference:.3g} for latents up to {scale:.3g}"


def count_forwards(engine):
    calls = []
    handle = engine.denoiser.register_forward_pre_hook(lambda module, args, kwargs: calls.append(1),
                                                       with_kwargs=True)
    return calls, handle


@pytest.mark.parametrize("method", sorted(METHODS))
def test_batched_guidance_matches_one_image_at_a_time(engines, method):
    losses = [{"name": method, **METHODS[method]}]
    batched, single = generate(engines[True], losses), generate(engines[False], losses)
    plain = generate(engines[True], [])
    assert not torch.equal(batched.latents, plain.latents)  # guidance acted
    assert_float_close(batched.latents, single.latents, TOLERANCE.get(method, 1e-4))
    for mine, theirs in zip(batched.records, single.records):
        # per-image logs: the same evaluations (steps, refinement passes) in the same order
        assert [(r.step, r.refinement, r.plugin) for r in mine.losses] == [
            (r.step, r.refinement, r.plugin) for r in theirs.losses]
        assert mine.refinement_iterations == theirs.refinement_iterations
        # the first evaluation sees the same latents on both paths: only the forward's rounding differs
        assert mine.losses[0].value == pytest.approx(theirs.losses[0].value, rel=1e-5, abs=1e-6)
        assert mine.losses[0].logs == pytest.approx(theirs.losses[0].logs, rel=1e-4, abs=1e-6)


def test_one_guidance_forward_serves_the_whole_batch(engines):
    steps, counts = 6, {}
    for together, engine in engines.items():
        calls, handle = count_forwards(engine)
        try:
            result = generate(engine, ["syngen"], steps=steps)
        finally:
            handle.remove()
        counts[together] = len(calls)
    guided = len({r.step for r in result.records[0].losses})  # syngen's window: the first half of the steps
    assert 0 < guided < steps
    assert counts[True] == guided + steps  # one guidance forward + one CFG forward per step
    assert counts[False] == len(PROMPTS) * guided + steps


def test_refinement_stops_per_image_and_finished_images_leave_the_batch(pipe):
    # refine above loss 0.3: at step 0 of 2, image 1 (loss 0.22) does not refine, images 0 and 2 (0.31, 0.35) do
    engine = Engine(pipe, parser="spacy")
    rows = []
    original = engine._forward_maps

    def spy(z, t, text, images, run, step=None):
        rows.append(list(images))
        return original(z, t, text, images, run, step)

    engine._forward_maps = spy
    result = generate(engine, [{"name": "attend_excite", "thresholds": {0: 0.7}, "max_refinement_steps": 5,
                                "window": [0, 1]}], steps=2)
    iterations = [r.refinement_iterations.get(0, 0) for r in result.records]
    assert iterations[1] == 0 and iterations[0] > 0 and iterations[2] > 0, iterations
    # step 0: the first forward has every image; each refinement forward only those still refining
    step0 = rows[: 1 + max(iterations)]
    assert step0[0] == [0, 1, 2]
    for k in range(1, len(step0)):
        assert step0[k] == [b for b in range(3) if iterations[b] >= k], (k, rows, iterations)
    assert rows[len(step0)] == [0, 1, 2]  # step 1 starts with the whole batch again
    single = generate(Engine(pipe, parser="spacy", batch_guidance=False),
                      [{"name": "attend_excite", "thresholds": {0: 0.7}, "max_refinement_steps": 5,
                        "window": [0, 1]}], steps=2)
    assert iterations == [r.refinement_iterations.get(0, 0) for r in single.records]
    assert_float_close(result.latents, single.latents)


class _HalfStep:
    """Replaces the latent update (so guidance must go one image at a time)."""

    name = "half_step"

    @hookimpl
    def attnguide_update_latents(self, latents, terms):
        (grad,) = torch.autograd.grad(sum(t.value for _, _, t in terms), [latents])
        return latents - 0.5 * grad


def test_a_plugin_replacing_the_update_is_called_per_image(engines):
    from attnguide.plugin.callbacks import Callback

    seen = []

    class HalfStep(Callback):
        name = "half_step_callback"

        def attnguide_update_latents(self, latents, terms):
            seen.append(latents.shape[0])
            (grad,) = torch.autograd.grad(sum(t.value for _, _, t in terms), [latents])
            return latents - 0.5 * grad

    engines[True].generate(PROMPTS[:2], [0, 1], steps=2, losses=["syngen"], callbacks=[HalfStep()], height=256,
                           width=256, output_type="latent", progress=False)
    assert seen == [1, 1]  # syngen guides step 0 of 2: two images, one at a time


def test_descend_takes_each_images_own_gradient_step():
    # two images, objective_b = c_b * sum(z_b ** 2): gradient 2 c_b z_b, step z_b - s_b * 2 c_b z_b
    leaf = torch.tensor([[[[1.0, -2.0]]], [[[3.0, 0.5]]]], requires_grad=True)
    value0 = 2.0 * (leaf[0] ** 2).sum()
    value1 = 3.0 * (leaf[1] ** 2).sum()
    one = [("a", 0.5, LossTerm(value0, step_size=4.0))]  # one term: scaled by weight * step size = 2
    two = [("a", 1.0, LossTerm(value1, step_size=1.0)), ("b", 2.0, LossTerm(leaf[1].sum(), step_size=0.5))]
    z0, z1 = descend([Descent(leaf, 0, one), Descent(leaf, 1, two)])
    # image 0: z - 2 * (4 z) = -7 z
    assert torch.equal(z0, torch.tensor([[[[-7.0, 14.0]]]]))
    # image 1: z - (6 z + 2 * 0.5 * 1) = -5 z - 1
    assert torch.equal(z1, torch.tensor([[[[-16.0, -3.5]]]]))
    assert not z0.requires_grad and not z1.requires_grad


def test_descend_leaves_an_image_without_a_graph_unchanged():
    leaf = torch.tensor([[[[1.0]]], [[[2.0]]]], requires_grad=True)
    constant = [("a", 1.0, LossTerm(torch.tensor(3.0), step_size=1.0))]
    moving = [("a", 1.0, LossTerm((leaf[1] ** 2).sum(), step_size=0.25))]
    z0, z1 = descend([Descent(leaf, 0, constant), Descent(leaf, 1, moving)])
    assert torch.equal(z0, torch.tensor([[[[1.0]]]]))
    assert torch.equal(z1, torch.tensor([[[[1.0]]]]))  # 2 - 0.25 * 4


def test_guide_batch_refuses_several_images_when_the_update_is_replaced():
    pm = run_plugin_manager([("half_step", _HalfStep())])
    records = [ImageRecord(0, "p", 0), ImageRecord(1, "p", 1)]
    with pytest.raises(ValueError, match="one image at a time"):
        guide_batch(pm, [object(), object()], torch.zeros(2, 1, 1, 1), lambda z, i: [], {}, records)
