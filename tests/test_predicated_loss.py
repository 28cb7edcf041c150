"""Predicated Diffusion: L = 0.1 mean(L_exist) + mean(L_corr) + 0.3 mean(L_leak), fuzzy logic on maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from loss_helpers import binding, make_context, word

from attnguide import Callback
from attnguide.errors import ConfigError
from attnguide.plugins.predicated import PredicatedLoss, leak_pairs, minmax
from attnguide.testing import analysis_for, context_for, peaked_maps, run_plugin, tiny_engine

PROMPT = "a red cat and a blue frog"
BINDINGS = {"cat": ["red"], "frog": ["blue"]}
EPS = 1e-6          # PredicatedParams.eps default
EXIST_EPS = 1e-4    # PredicatedParams.exist_eps default

CORR_ONLY = {"exist_weight": 0.0, "leak_weight": 0.0}
LEAK_ONLY = {"exist_weight": 0.0, "corr_weight": 0.0}


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def red_cat_blue_dog(red, cat, blue, dog) -> torch.Tensor:
    """``[9, 2, 2]`` for "a red cat and a blue dog": a=1 red=2 cat=3 and=4 a=5 blue=6 dog=7."""
    maps = torch.zeros(9, 2, 2, dtype=torch.float64)
    maps[2], maps[3], maps[6], maps[7] = t(red), t(cat), t(blue), t(dog)
    return maps


def two_bindings_context(**kwargs):
    return make_context([binding(word("cat", 3), word("red", 2)), binding(word("dog", 7), word("blue", 6))],
                        7, **kwargs)


# --- normalisation -------------------------------------------------------------------------------


def test_minmax_rescales_each_token_map_to_zero_one_on_its_own():
    maps = torch.stack([t([[0.1, 0.3], [0.2, 0.5]]), t([[4.0, 2.0], [3.0, 2.0]])])
    out = minmax(maps)
    # (x - 0.1) / 0.4 and (x - 2) / 2
    assert out[0].flatten().tolist() == pytest.approx([0.0, 0.5, 0.25, 1.0], rel=1e-12)
    assert out[1].flatten().tolist() == pytest.approx([1.0, 0.0, 0.5, 0.0], rel=1e-12)


def test_minmax_of_a_constant_map_is_zero_not_nan():
    out = minmax(torch.full((1, 2, 2), 0.3, dtype=torch.float64))
    assert out.tolist() == [[[0.0, 0.0], [0.0, 0.0]]]


def test_pair_terms_ignore_each_maps_offset_and_scale():
    maps = torch.rand(9, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    scale = t([1.0, 1.0, 3.0, 0.01, 1.0, 1.0, 7.0, 0.5, 1.0])[:, None, None]
    moved = maps * scale + 0.2
    loss = PredicatedLoss({"exist_weight": 0.0})
    a = loss.compute(two_bindings_context(), maps)
    b = loss.compute(two_bindings_context(), moved)
    assert a.logs["corr"] == pytest.approx(b.logs["corr"], rel=1e-10)
    assert a.logs["leak"] == pytest.approx(b.logs["leak"], rel=1e-10)


# --- each term by hand ---------------------------------------------------------------------------


def test_correspondence_is_the_implication_both_ways_by_hand():
    # "a red cat": a=1 red=2 cat=3. Normalised: red m = [[0, .5], [.25, 1]], cat n = [[.5, .5], [0, 1]].
    maps = torch.zeros(5, 2, 2, dtype=torch.float64)
    maps[2] = t([[0.1, 0.3], [0.2, 0.5]])
    maps[3] = t([[0.4, 0.4], [0.0, 0.8]])
    ctx = make_context([binding(word("cat", 3), word("red", 2))], 3)
    # 1 - n(1-m) per pixel: .5, .75, 1, 1;  1 - m(1-n): 1, .75, .75, 1.
    expected = -(math.log(0.5 + EPS) + 3 * math.log(0.75 + EPS) + 4 * math.log(1 + EPS)) / 4  # ~0.3890
    term = PredicatedLoss(CORR_ONLY).compute(ctx, maps)
    assert term.value.item() == pytest.approx(expected, rel=1e-12)
    assert term.logs["corr"] == pytest.approx(expected, rel=1e-12)
    assert (term.logs["n_exist"], term.logs["n_corr"], term.logs["n_leak"]) == (1.0, 1.0, 0.0)


def test_leak_keeps_each_modifier_off_the_other_entities_and_is_finite_at_one_by_hand():
    # Maps already span [0, 1], so normalisation leaves them as they are.
    maps = red_cat_blue_dog(red=[[1.0, 0.0], [0.5, 0.0]], cat=[[0.0, 0.5], [1.0, 0.0]],
                            blue=[[0.0, 1.0], [0.0, 0.5]], dog=[[1.0, 0.5], [0.0, 0.0]])
    # (dog, red): products 1, 0, 0, 0 -> a pixel where both are 1: log(0 + eps) = -13.8, finite.
    dog_red = -(math.log(0.0 + EPS) + 3 * math.log(1 + EPS)) / 4                          # ~3.4539
    # (cat, blue): products 0, .5, 0, 0.
    cat_blue = -(math.log(0.5 + EPS) + 3 * math.log(1 + EPS)) / 4                         # ~0.1733
    leak = (dog_red + cat_blue) / 2
    term = PredicatedLoss(LEAK_ONLY).compute(two_bindings_context(), maps)
    assert term.logs["leak"] == pytest.approx(leak, rel=1e-12)
    assert term.value.item() == pytest.approx(0.3 * leak, rel=1e-12)
    assert term.logs["n_leak"] == 2.0


def test_existence_is_a_normalised_product_or_over_pixels_of_the_ae_maps_by_hand():
    # "a cat and a dog": a=1 cat=2 and=3 a=4 dog=5, end at 6; [1:-1] keeps positions 1..5.
    maps = torch.zeros(7, 2, 2, dtype=torch.float64)
    maps[2] = t([[1.0, 0.0], [0.0, 0.0]])
    ctx = make_context([binding(word("cat", 2)), binding(word("dog", 5))], 5)
    # softmax(100 x) over the 5 kept tokens: at (0,0) cat gets e^100 / (e^100 + 4), dog 1 / (e^100 + 4);
    # at the other pixels all 5 tokens are equal: 1/5 each.
    cat_e = [math.exp(100) / (math.exp(100) + 4), 0.2, 0.2, 0.2]
    dog_e = [1 / (math.exp(100) + 4), 0.2, 0.2, 0.2]

    def exist(values):
        mean_log = sum(math.log(1 - e / (1 + EXIST_EPS)) for e in values) / 4
        return -math.log(1 - math.exp(mean_log) + EPS)

    expected = (exist(cat_e) + exist(dog_e)) / 2  # (0.0884 + 1.8702) / 2
    term = PredicatedLoss().compute(ctx, maps)
    assert term.logs["exist"] == pytest.approx(expected, rel=1e-10)
    assert term.value.item() == pytest.approx(0.1 * expected, rel=1e-10)  # no modifiers: no corr, no leak
    assert (term.logs["corr"], term.logs["leak"]) == (0.0, 0.0)


def test_existence_is_finite_with_a_gradient_for_an_all_one_and_an_all_zero_map():
    # cat = 1 everywhere after A&E processing; dog = 0 everywhere (the derivative's formula gives NaN).
    maps = torch.zeros(7, 2, 2, dtype=torch.float64)
    maps[2] = 1.0
    maps = maps.requires_grad_(True)
    ctx = make_context([binding(word("cat", 2)), binding(word("dog", 5))], 5)
    term = PredicatedLoss().compute(ctx, maps)
    all_one = -math.log(1 - EXIST_EPS / (1 + EXIST_EPS) + EPS)    # ~1e-4
    all_zero = -math.log(EPS)                                      # 13.8
    assert term.logs["exist"] == pytest.approx((all_one + all_zero) / 2, rel=1e-6)
    term.value.backward()
    assert torch.isfinite(maps.grad).all()


def test_pair_terms_at_a_shared_peak_keep_a_bounded_float32_gradient():
    # Two normalised maps reach 1 on the same pixel: the leak pixel's -log(eps) has gradient
    # 1/eps there, which float32 rounding of the min-max backward would amplify (eps = 1e-20
    # gives ~1e10); with eps = 1e-6 it stays small.
    gen = torch.Generator().manual_seed(0)
    maps = torch.rand(9, 16, 16, generator=gen)
    maps[2, 4, 4] += 1.0
    maps[7, 4, 4] += 1.0  # red and dog peak together
    maps.requires_grad_(True)
    term = PredicatedLoss(LEAK_ONLY).compute(two_bindings_context(), maps)
    term.value.backward()
    assert torch.isfinite(maps.grad).all() and maps.grad.abs().max() < 10.0


def test_multi_piece_word_takes_the_max_over_its_pieces_before_normalising():
    # "a pur|ple cat": a=1 pur=2 ple=3 cat=4; purple = max(pieces) = [[0, .5], [.25, 1]].
    maps = torch.zeros(6, 2, 2, dtype=torch.float64)
    maps[2] = t([[0.0, 0.5], [0.0, 0.2]])
    maps[3] = t([[0.0, 0.1], [0.25, 1.0]])
    maps[4] = t([[0.5, 0.5], [0.0, 1.0]])
    ctx = make_context([binding(word("cat", 4), word("purple", 2, 3))], 4)
    expected = -(math.log(0.5 + EPS) + 3 * math.log(0.75 + EPS) + 4 * math.log(1 + EPS)) / 4
    assert PredicatedLoss(CORR_ONLY).compute(ctx, maps).value.item() == pytest.approx(expected, rel=1e-12)


def test_all_three_terms_add_with_their_weights():
    maps = torch.rand(9, 4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    term = PredicatedLoss().compute(two_bindings_context(), maps)
    logs = term.logs
    expected = 0.1 * logs["exist"] + logs["corr"] + 0.3 * logs["leak"]
    assert term.value.item() == pytest.approx(expected, rel=1e-12)
    custom = PredicatedLoss({"exist_weight": 1.0, "corr_weight": 2.0, "leak_weight": 0.0})
    assert custom.compute(two_bindings_context(), maps).value.item() == pytest.approx(
        logs["exist"] + 2 * logs["corr"], rel=1e-12)


# --- which pairs --------------------------------------------------------------------------------


def test_leak_pairs_cover_every_other_entity_with_or_without_modifiers():
    analysis = analysis_for("a red cat, a blue frog and a dog", {"cat": ["red"], "frog": ["blue"], "dog": []})
    pairs = {(entity.text, modifier.text) for entity, modifier in leak_pairs(analysis)}
    assert pairs == {("frog", "red"), ("dog", "red"), ("cat", "blue"), ("dog", "blue")}


def test_returns_none_without_entities_and_guides_existence_alone_without_modifiers():
    maps = torch.rand(5, 2, 2, dtype=torch.float64)
    assert PredicatedLoss().compute(make_context([], 3), maps) is None
    term = PredicatedLoss().compute(make_context([binding(word("dog", 2))], 3), maps)
    assert term.logs["n_exist"] == 1.0 and term.logs["n_corr"] == 0.0 and term.logs["n_leak"] == 0.0
    assert term.value.item() == pytest.approx(0.1 * term.logs["exist"], rel=1e-12)


# --- on attention-like maps -----------------------------------------------------------------------


def test_loss_is_lower_when_the_attribute_sits_on_its_own_noun():
    analysis = analysis_for(PROMPT, BINDINGS)
    bound = peaked_maps(analysis, {"red": (3, 3), "cat": (3, 3), "blue": (12, 12), "frog": (12, 12)})
    swapped = peaked_maps(analysis, {"red": (12, 12), "cat": (3, 3), "blue": (3, 3), "frog": (12, 12)})
    good = PredicatedLoss().compute(context_for(analysis), bound)
    bad = PredicatedLoss().compute(context_for(analysis), swapped)
    assert good.value.item() < bad.value.item()
    assert good.logs["corr"] < bad.logs["corr"] and good.logs["leak"] < bad.logs["leak"]


def test_step_size_window_and_fixed_refinement_follow_the_derivative():
    loss = PredicatedLoss()
    maps = torch.rand(9, 4, 4, dtype=torch.float64)
    assert loss.default_window == (0.0, 0.5)
    guided = [i for i in range(50) if loss.attnguide_loss(two_bindings_context(step=i), maps) is not None]
    assert guided == list(range(25))
    first = loss.attnguide_loss(two_bindings_context(step=0), maps)
    assert first.step_size == 20.0
    assert first.refine_below == -math.inf and first.max_refinement == 5  # 5 extra updates, no stop test
    later = loss.attnguide_loss(two_bindings_context(step=24), maps)
    assert later.step_size == pytest.approx(20 * math.sqrt(np.linspace(1.0, 0.5, 50)[24]))
    assert later.refine_below is None
    none = PredicatedLoss({"refinement_iterations": 0}).compute(two_bindings_context(step=0), maps)
    assert none.refine_below is None


def test_parameter_errors_name_the_plugin_and_the_parameter():
    with pytest.raises(ConfigError, match=r"'predicated'.*'eps'"):
        PredicatedLoss({"eps": 0.0})
    with pytest.raises(ConfigError, match=r"'predicated'.*'leak_wieght'"):
        PredicatedLoss({"leak_wieght": 0.3})
    with pytest.raises(ConfigError, match=r"'predicated'.*'token_slice'"):
        PredicatedLoss({"token_slice": "all"})


# --- end to end ----------------------------------------------------------------------------------


class FinalLatents(Callback):
    """Keeps the run's final latents ``[1, C, h, w]``."""

    name = "final_latents"
    latents: torch.Tensor | None = None

    def on_run_end(self, run, images):
        self.latents = torch.as_tensor(run.latents).detach().clone()


def _tiny_run(losses):
    from attnguide.models.families import text_tokenizer

    engine = tiny_engine()
    analysis = analysis_for(PROMPT, BINDINGS, text_tokenizer(engine.pipe))
    return engine.generate(PROMPT, [0], losses=losses, analyses=[analysis], steps=4, height=256, width=256,
                           output_type="latent", progress=False)


def test_runs_end_to_end_on_the_tiny_model_and_moves_the_latents():
    final = FinalLatents()
    records = run_plugin(PredicatedLoss(), PROMPT, BINDINGS, steps=4, callbacks=[final])
    assert {r.step for r in records} == {0, 1}   # window: the first half of the steps
    assert sorted(r.refinement for r in records if r.step == 0) == [0, 1, 2, 3, 4, 5]
    assert [r.refinement for r in records if r.step == 1] == [0]
    assert all(math.isfinite(r.value) and all(math.isfinite(v) for v in r.logs.values()) for r in records)
    assert all(r.logs["n_exist"] == 2 and r.logs["n_corr"] == 2 and r.logs["n_leak"] == 2 for r in records)
    step0 = [r.value for r in records if r.step == 0]
    assert step0[-1] < step0[0]  # the fixed refinement lowers the loss at step 0

    plain = torch.as_tensor(_tiny_run([]).latents)   # run_plugin's settings, no loss
    assert final.latents is not None and torch.isfinite(final.latents).all()
    assert (final.latents - plain).abs().max() > 1e-3


def test_composes_with_syngen_in_one_run():
    result = _tiny_run([PredicatedLoss(), "syngen"])
    rows = result.records[0].losses
    evaluations = {(r.step, r.refinement) for r in rows}
    assert {s for s, _ in evaluations} == {0, 1}
    for step, refinement in evaluations:
        names = [r.plugin for r in rows if (r.step, r.refinement) == (step, refinement)]
        assert names == ["predicated", "syngen"], (step, refinement, names)
    assert all(math.isfinite(r.value) for r in rows)


def test_runs_on_the_toyworld_model_at_its_native_size():
    from attnguide.engine.engine import Engine
    from attnguide.models.families import text_tokenizer
    from attnguide.models.loading import load_pipeline

    engine = Engine(load_pipeline("toyworld"), parser="manual")
    prompt = "a red circle and a blue square"
    analysis = analysis_for(prompt, {"circle": ["red"], "square": ["blue"]}, text_tokenizer(engine.pipe))
    kwargs = {"steps": 2, "output_type": "latent", "progress": False, "analyses": [analysis]}
    plain = torch.as_tensor(engine.generate(prompt, [0], **kwargs).latents)
    result = engine.generate(prompt, [0], losses=[PredicatedLoss()], **kwargs)
    records = result.records[0].losses
    assert {r.step for r in records} == {0} and len(records) == 6   # step 0 of 2, plus 5 refinements
    assert all(math.isfinite(r.value) for r in records)
    assert (torch.as_tensor(result.latents) - plain).abs().max() > 1e-2
