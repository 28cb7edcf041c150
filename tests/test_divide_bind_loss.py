"""Divide & Bind: maximise each subject's total variation, bind its modifiers by a JSD."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from loss_helpers import binding, make_context, np_ae_process, np_smooth, random_maps, word

from attnguide.engine.guidance import guide_image
from attnguide.engine.requests import MapRequest
from attnguide.engine.state import ImageRecord
from attnguide.errors import ConfigError
from attnguide.plugin.callbacks import Callback
from attnguide.plugin.hookspecs import hookimpl
from attnguide.plugin.manager import run_plugin_manager
from attnguide.plugins.divide_bind import (
    DivideBindLoss,
    bind_weight,
    binding_distributions,
    jensen_shannon,
    resized_mean,
    subject_modifiers,
    total_variation,
)
from attnguide.testing import analysis_for, context_for, peaked_maps, run_plugin, tiny_engine

PROMPT = "a red cat and a blue dog"
BINDINGS = {"cat": ["red"], "dog": ["blue"]}
TINY = {"attribute_resolutions": [32]}  # the tiny model at 256 px has cross-attention at 32 and 16 only
DEFAULT_MAPS = {"attribute_resolutions": []}  # attribute maps from the default maps (no extra capture)

# --- total variation ------------------------------------------------------------------------------

# A = [[1, 2, 4],
#      [0, 3, 1],
#      [2, 2, 5]]
A = torch.tensor([[1.0, 2.0, 4.0], [0.0, 3.0, 1.0], [2.0, 2.0, 5.0]], dtype=torch.float64)


def test_total_variation_by_hand_with_the_official_vertical_term():
    # horizontal: |1-2| + |2-4| + |0-3| + |3-1| + |2-2| + |2-5| = 1 + 2 + 3 + 2 + 0 + 3 = 11 over
    #   3 x 2 pairs -> 11/6
    # vertical as the official code: the last row [2, 2, 5] against rows 1..2:
    #   row 1 [0, 3, 1]: 2 + 1 + 4 = 7; row 2 against itself: 0 -> 7 over 2 x 3 -> 7/6
    # TV = 11/6 + 7/6 = 3
    assert total_variation(A).item() == pytest.approx(3.0, rel=1e-12)
    assert total_variation(A, "reference").item() == pytest.approx(3.0, rel=1e-12)


def test_total_variation_by_hand_with_neighbouring_rows():
    # vertical neighbours: rows 0-1: 1 + 1 + 3 = 5; rows 1-2: 2 + 1 + 4 = 7 -> 12/6 = 2
    # TV = 11/6 + 2 = 23/6
    assert total_variation(A, "neighbour").item() == pytest.approx(23 / 6, rel=1e-12)


def np_tv(a: np.ndarray, vertical: str) -> float:
    """Explicit loops over one [H, W] map."""
    h, w = a.shape
    horizontal = sum(abs(a[i, j] - a[i, j + 1]) for i in range(h) for j in range(w - 1)) / (h * (w - 1))
    if vertical == "neighbour":
        rows = sum(abs(a[i, j] - a[i + 1, j]) for i in range(h - 1) for j in range(w))
    else:
        rows = sum(abs(a[h - 1, j] - a[i, j]) for i in range(1, h) for j in range(w))
    return float(horizontal + rows / ((h - 1) * w))


def test_total_variation_is_batched_over_leading_axes_and_matches_loops():
    maps = random_maps(3, size=5, seed=1)
    for vertical in ("reference", "neighbour"):
        got = total_variation(maps, vertical)
        assert got.shape == (3,)
        for k in range(3):
            assert got[k].item() == pytest.approx(np_tv(maps[k].numpy(), vertical), rel=1e-12)


def test_the_official_vertical_term_is_torchs_broadcasting_l1_loss():
    # the official expression compares A[-1:, :] ([1, W]) with A[1:, :] ([H-1, W]); torch's
    # L1Loss broadcasts (with a warning) and averages over the [H-1, W] result
    maps = random_maps(1, size=6, seed=2)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        broadcast = torch.nn.functional.l1_loss(maps[-1:, :], maps[1:, :])
    horizontal = torch.nn.functional.l1_loss(maps[:, :-1], maps[:, 1:])
    assert total_variation(maps).item() == pytest.approx((horizontal + broadcast).item(), rel=1e-12)


def test_a_constant_map_has_no_variation_and_a_peak_has_more_than_a_ramp():
    assert total_variation(torch.full((4, 4), 0.3)).item() == 0.0
    peak = torch.zeros(8, 8)
    peak[3:5, 3:5] = 1.0
    ramp = torch.linspace(0, 1, 8).repeat(8, 1) * 0.25
    for vertical in ("reference", "neighbour"):
        assert total_variation(peak, vertical) > total_variation(ramp, vertical)


# --- Jensen-Shannon and the binding distributions ----------------------------------------------------


def test_jensen_shannon_by_hand():
    # p = (.5, .5), q = (.9, .1), m = (.7, .3)
    # KL(p || m) = .5 ln(.5/.7) + .5 ln(.5/.3) = -0.1682361183 + 0.2554128119 = 0.0871766936
    # KL(q || m) = .9 ln(.9/.7) + .1 ln(.1/.3) =  0.2261829855 - 0.1098612289 = 0.1163217566
    # JSD = (0.0871766936 + 0.1163217566) / 2 = 0.1017492251
    p = torch.tensor([0.5, 0.5], dtype=torch.float64)
    q = torch.tensor([0.9, 0.1], dtype=torch.float64)
    assert jensen_shannon(p, q).item() == pytest.approx(0.1017492251, rel=1e-9)
    assert jensen_shannon(q, p).item() == pytest.approx(0.1017492251, rel=1e-9)
    assert jensen_shannon(p, p).item() == 0.0


def test_jensen_shannon_is_not_renormalised():
    # p = (.2, .2), q = (.2, .6), m = (.2, .4): sums 0.4 and 0.8, used as they are
    # 1/2 [.2 ln 1 + .2 ln(.2/.4)] + 1/2 [.2 ln 1 + .6 ln(.6/.4)]
    #   = 1/2 (-0.1386294361) + 1/2 (0.2432790649) = 0.0523248144
    p = torch.tensor([0.2, 0.2], dtype=torch.float64)
    q = torch.tensor([0.2, 0.6], dtype=torch.float64)
    assert jensen_shannon(p, q).item() == pytest.approx(0.0523248144, rel=1e-9)


def test_jensen_shannon_equals_torchs_batchmean_kl_div_of_one_row():
    # the official code: KLDivLoss(reduction="batchmean", log_target=True) on [1, N] rows, input
    # log m, target log p (i.e. KL(p || m)), for p and q
    gen = torch.Generator().manual_seed(3)
    p = torch.rand(1, 20, generator=gen, dtype=torch.float64) + 1e-3
    q = torch.rand(1, 20, generator=gen, dtype=torch.float64) + 1e-3
    log_m = ((p + q) / 2).log()

    def kl(target):
        return torch.nn.functional.kl_div(log_m, target.log(), reduction="batchmean", log_target=True)

    assert jensen_shannon(p, q).item() == pytest.approx((0.5 * (kl(p) + kl(q))).item(), rel=1e-12)


def test_binding_distributions_by_hand_cut_both_at_the_objects_max():
    # object (1 x 2) = [0, ln 3] -> p = softmax = (1/4, 3/4), max p = 0.75
    # attribute [2, 1] rescaled to the object's max ln 3: [ln 3, ln 3 / 2]
    #   -> q = (3, sqrt 3) / (3 + sqrt 3) = (0.6339745962, 0.3660254038)
    # fraction 0.2 of the OBJECT's max p: cut = 0.15 for both (not 0.2 * max q = 0.1268)
    # p~ = (0.1, 0.6) + 1e-5;  q~ = (0.4839745962, 0.2160254038) + 1e-5
    obj = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)
    attr = torch.tensor([[[2.0, 1.0]]], dtype=torch.float64)
    p, q = binding_distributions(obj, attr, 0.2, 1e-5)
    assert p.tolist() == pytest.approx([0.10001, 0.60001], rel=1e-9)
    assert q.shape == (1, 2)
    assert q[0].tolist() == pytest.approx([0.4839845962, 0.2160354038], rel=1e-9)
    # fraction 0.3: cut 0.225; p~ = (0.025, 0.525) + 1e-5; q~ = (0.4089745962, 0.1410254038) + 1e-5
    p, q = binding_distributions(obj, attr, 0.3, 1e-5)
    assert p.tolist() == pytest.approx([0.02501, 0.52501], rel=1e-9)
    assert q[0].tolist() == pytest.approx([0.4089845962, 0.1410354038], rel=1e-9)


def test_binding_distributions_clip_at_zero_and_add_eps():
    # object [0, 5]: p = (1, e^5) / (1 + e^5) = (0.0066928509, 0.9933071491); cut 0.2 * 0.99331
    # = 0.1986614298 > p_0 -> p~_0 = 0 + 1e-5. Attribute equal to the object: q = p.
    obj = torch.tensor([[0.0, 5.0]], dtype=torch.float64)
    p, q = binding_distributions(obj, obj[None], 0.2, 1e-5)
    assert p[0].item() == pytest.approx(1e-5, rel=1e-12)
    assert p[1].item() == pytest.approx(0.9933071491 - 0.1986614298 + 1e-5, rel=1e-9)
    torch.testing.assert_close(q[0], p)
    assert jensen_shannon(p, q[0]).item() == 0.0


def test_the_rescaling_makes_the_attributes_scale_irrelevant():
    obj = random_maps(1, size=4, seed=4)[0]
    attr = random_maps(1, size=4, seed=5)
    p1, q1 = binding_distributions(obj, attr, 0.2, 1e-5)
    p2, q2 = binding_distributions(obj, attr * 7.0, 0.2, 1e-5)
    torch.testing.assert_close(q1, q2)
    torch.testing.assert_close(p1, p2)


# --- weights, resizing, modifiers ---------------------------------------------------------------------

WEIGHTS = {0: 1.0, 10: 5.0, 20: 10.0}


def test_bind_weights_are_one_five_ten_from_steps_zero_ten_twenty_of_fifty():
    got = [bind_weight(WEIGHTS, i, 50) for i in range(50)]
    assert got == [1.0] * 10 + [5.0] * 10 + [10.0] * 30
    # other step counts: key k -> floor(k * T / 50 + 0.5), as A&E's refinement steps
    # T = 25: 0, 5, 10; T = 4: 0, 1 (1.3), 2 (2.1); T = 100: 0, 20, 40
    assert [bind_weight(WEIGHTS, i, 25) for i in (0, 4, 5, 9, 10, 24)] == [1, 1, 5, 5, 10, 10]
    assert [bind_weight(WEIGHTS, i, 4) for i in range(4)] == [1, 5, 10, 10]
    assert [bind_weight(WEIGHTS, i, 100) for i in (19, 20, 39, 40)] == [1, 5, 5, 10]
    # keys landing on one step: the later key wins (T = 2: 10 -> 0.9 -> 0, 20 -> 1.3 -> 1)
    assert [bind_weight(WEIGHTS, i, 2) for i in range(2)] == [5, 10]


def test_resized_mean_is_nearest_resizing_then_the_mean():
    big = random_maps(3, size=8, seed=6)
    small = random_maps(3, size=2, seed=7)
    same = random_maps(3, size=4, seed=8)
    # nearest 8 -> 4 keeps rows/cols 0, 2, 4, 6; 2 -> 4 repeats each row/col twice
    expected = (big[:, ::2, ::2] + small.repeat_interleave(2, 1).repeat_interleave(2, 2) + same) / 3
    torch.testing.assert_close(resized_mean([big, small, same], (4, 4)), expected)
    torch.testing.assert_close(resized_mean([same], (4, 4)), same)


def test_subject_modifiers_collect_each_entitys_modifiers_once():
    analysis = analysis_for("a big red cat and a dog", {"cat": ["big", "red"], "dog": []})
    from attnguide.plugins.attend_excite import subjects

    words = subjects(analysis)
    mods = subject_modifiers(analysis, words)
    assert [w.text for w in words] == ["cat", "dog"]
    assert [[m.text for m in ms] for ms in mods] == [["big", "red"], []]


# --- the plugin on hand-built and random maps ---------------------------------------------------------

# "red cat and blue dog": red = 1, cat = 2, and = 3, blue = 4, dog = 5; maps [7, H, W]
CAT_RED = binding(word("cat", 2), word("red", 1))
DOG_BLUE = binding(word("dog", 5), word("blue", 4))
DOG = binding(word("dog", 5))


def np_divide_bind(maps, attribute_maps, subjects, weight, vertical="reference", reduction="mean"):
    """An independent numpy Divide & Bind loss: ``subjects`` = [(entity position, [modifier
    positions])]; returns (value, [per-subject l_s], [tv_s])."""
    stop = maps.shape[0] - 1
    processed = np_ae_process(maps, stop)  # row k = position k + 1
    attr_processed = np_ae_process(attribute_maps, stop)
    values, tvs = [], []
    for entity, modifiers in subjects:
        a = np_smooth(processed[entity - 1])
        tv = np_tv(a, vertical)
        tvs.append(tv)
        jsds = []
        for m in modifiers:
            c = np_smooth(attr_processed[m - 1])
            c = c / c.max() * a.max()
            p = np.exp(a.ravel()) / np.exp(a.ravel()).sum()
            q = np.exp(c.ravel()) / np.exp(c.ravel()).sum()
            cut = (0.3 if tv < 0.1 else 0.2) * p.max()
            p, q = np.maximum(p - cut, 0) + 1e-5, np.maximum(q - cut, 0) + 1e-5
            mid = (p + q) / 2
            jsds.append(0.5 * np.sum(p * np.log(p / mid)) + 0.5 * np.sum(q * np.log(q / mid)))
        bind = (np.mean(jsds) if reduction == "mean" else np.sum(jsds)) if jsds else 0.0
        values.append(-tv + weight * bind)
    return max(values), values, tvs


def with_extra(ctx, extra):
    ctx.extra_maps = dict(extra)
    return ctx


@pytest.mark.parametrize("scale", [1.0, 0.05])  # peaky processed maps (TV > 0.1) and flat ones (< 0.1)
@pytest.mark.parametrize("step", [0, 10, 20])
def test_plugin_matches_an_independent_numpy_loss(scale, step):
    maps = random_maps(7, size=6, seed=9) * scale
    extra = {MapRequest("cross", 12): random_maps(7, size=12, seed=10) * scale,
             MapRequest("cross", 3): random_maps(7, size=3, seed=11) * scale}
    attr = resized_mean(list(extra.values()), (6, 6)).numpy()
    ctx = with_extra(make_context([CAT_RED, DOG], 5, step=step), extra)
    term = DivideBindLoss({"attribute_resolutions": [12, 3]}).compute(ctx, maps)
    weight = {0: 1.0, 10: 5.0, 20: 10.0}[step]
    value, _, tvs = np_divide_bind(maps.numpy(), attr, [(2, [1]), (5, [])], weight)
    assert term.value.item() == pytest.approx(value, rel=1e-9)
    assert term.logs["tv.0.cat"] == pytest.approx(tvs[0], rel=1e-6)
    assert term.logs["tv.1.dog"] == pytest.approx(tvs[1], rel=1e-6)
    assert term.logs["bind_weight"] == weight
    assert "bind.1.dog" not in term.logs  # no modifier, no binding term
    assert (tvs[0] < 0.1) == (scale < 1)  # both branches of the cut are exercised


def test_plugin_with_the_neighbour_tv_and_summed_modifiers_matches_numpy():
    maps = random_maps(8, size=5, seed=12)
    # "red shiny cat and blue dog": red 1, shiny 2, cat 3, and 4, blue 5, dog 6
    ctx = make_context([binding(word("cat", 3), word("red", 1), word("shiny", 2)),
                        binding(word("dog", 6), word("blue", 5))], 6, step=12)
    params = {**DEFAULT_MAPS, "tv_vertical": "neighbour", "modifier_reduction": "sum"}
    term = DivideBindLoss(params).compute(ctx, maps)
    m = maps.numpy()
    value, _, _ = np_divide_bind(m, m, [(3, [1, 2]), (6, [5])], 5.0, "neighbour", "sum")
    assert term.value.item() == pytest.approx(value, rel=1e-9)
    mean = DivideBindLoss({**DEFAULT_MAPS, "tv_vertical": "neighbour"}).compute(ctx, maps)
    assert mean.value.item() == pytest.approx(np_divide_bind(m, m, [(3, [1, 2]), (6, [5])], 5.0, "neighbour")[0],
                                              rel=1e-9)


def test_per_subject_terms_combine_as_minus_tv_plus_weighted_bind_and_the_max_is_taken():
    maps = random_maps(7, size=6, seed=13)
    ctx = make_context([CAT_RED, DOG_BLUE], 5, step=20)
    term = DivideBindLoss(DEFAULT_MAPS).compute(ctx, maps)
    logs = term.logs
    per_subject = [-logs["tv.0.cat"] + 10.0 * logs["bind.0.cat"], -logs["tv.1.dog"] + 10.0 * logs["bind.1.dog"]]
    assert term.value.item() == pytest.approx(max(per_subject), rel=1e-6)
    assert logs["loss"] == pytest.approx(term.value.item())
    assert logs["min_tv"] == min(logs["tv.0.cat"], logs["tv.1.dog"])
    # bind off: the official "tv" mode, L = -min_s TV_s
    off = DivideBindLoss({"bind": False}).compute(ctx, maps)
    assert off.value.item() == pytest.approx(-logs["min_tv"], rel=1e-6)
    assert not any(k.startswith("bind.") for k in off.logs)


def test_gradient_reaches_the_subjects_and_modifiers_maps_only():
    maps = random_maps(7, size=6, seed=14).requires_grad_(True)
    extra = random_maps(7, size=6, seed=15).requires_grad_(True)
    ctx = with_extra(make_context([CAT_RED, DOG_BLUE], 5, step=20), {MapRequest("cross", 6): extra})
    DivideBindLoss({"attribute_resolutions": [6]}).compute(ctx, maps).value.backward()
    assert torch.isfinite(maps.grad).all() and maps.grad.abs().sum() > 0
    assert torch.isfinite(extra.grad).all() and extra.grad.abs().sum() > 0
    assert maps.grad[[0, 6]].abs().sum() == 0  # the start token and the last position are outside the slice


def test_missing_attribute_maps_are_a_clear_error():
    ctx = make_context([CAT_RED], 3)
    with pytest.raises(ValueError, match="cross-attention maps at 64x64"):
        DivideBindLoss().compute(ctx, random_maps(5, size=4))
    # without modifiers no attribute map is needed
    assert DivideBindLoss().compute(make_context([DOG], 5), random_maps(7, size=4)) is not None


def test_no_subjects_return_none():
    assert DivideBindLoss().compute(make_context([], 3), random_maps(5, size=4)) is None


# --- preferences on peaked maps ----------------------------------------------------------------------


def test_attendance_prefers_peaked_over_flat_maps():
    analysis = analysis_for(PROMPT, BINDINGS)
    peaked = peaked_maps(analysis, {"cat": (3, 3), "dog": (12, 12)})
    flat = peaked_maps(analysis, {"cat": (3, 3), "dog": (12, 12)}, strength=1.0, width=6.0)
    loss = DivideBindLoss({"bind": False})
    ctx = context_for(analysis)
    assert loss.compute(ctx, peaked).value.item() < loss.compute(ctx, flat).value.item()
    # ... and a map with the subject nowhere is the worst
    absent = peaked_maps(analysis, {"dog": (12, 12)})
    assert loss.compute(ctx, flat).value.item() < loss.compute(ctx, absent).value.item()


def test_binding_prefers_an_attribute_on_its_own_noun():
    analysis = analysis_for(PROMPT, BINDINGS)
    bound = peaked_maps(analysis, {"red": (3, 3), "cat": (3, 3), "blue": (12, 12), "dog": (12, 12)})
    swapped = peaked_maps(analysis, {"red": (12, 12), "cat": (3, 3), "blue": (3, 3), "dog": (12, 12)})
    loss = DivideBindLoss(DEFAULT_MAPS)
    for step in (0, 10, 20):
        ctx = context_for(analysis, step=step)
        good, bad = loss.compute(ctx, bound), loss.compute(ctx, swapped)
        # the object maps are the same in both (each noun shares its peak with one modifier)
        assert good.logs["tv.0.cat"] == pytest.approx(bad.logs["tv.0.cat"], rel=1e-5)
        assert good.logs["bind.0.cat"] < bad.logs["bind.0.cat"]
        assert good.logs["bind.1.dog"] < bad.logs["bind.1.dog"]
        assert good.value.item() < bad.value.item()


# --- schedule, refinement and requests ------------------------------------------------------------------


def test_step_size_window_and_refinement_on_min_tv():
    maps = random_maps(7, size=6, seed=16) * 0.005  # nearly flat: min TV below every threshold

    def ctx(step, num_steps=50):
        return make_context([CAT_RED, DOG], 5, step=step, num_steps=num_steps)

    loss = DivideBindLoss(DEFAULT_MAPS)
    assert loss.default_window == (0.0, 0.5)
    assert loss.attnguide_loss(ctx(0), maps).step_size == 20.0
    assert loss.attnguide_loss(ctx(24), maps).step_size == pytest.approx(20 * math.sqrt(np.linspace(1, 0.5, 50)[24]))
    assert loss.attnguide_loss(ctx(25), maps) is None
    first = loss.attnguide_loss(ctx(0), maps)
    assert first.logs["min_tv"] < 0.05
    assert first.refine_below == -math.inf and first.max_refinement == 100
    for step in (10, 20):
        term = loss.attnguide_loss(ctx(step), maps)
        assert term.refine_below == -math.inf and term.max_refinement == 50
        assert term.logs["refine_target"] == {10: 0.2, 20: 0.3}[step]
    assert all(loss.attnguide_loss(ctx(s), maps).refine_below is None for s in (1, 9, 11, 24))
    # at 4 steps the keys 0, 10, 20 are steps 0, 1, 2
    assert loss.attnguide_loss(ctx(1, 4), maps).max_refinement == 50
    # a target already reached: no refinement
    reached = DivideBindLoss({**DEFAULT_MAPS, "thresholds": {0: 0.0, 10: 0.001}})
    assert reached.attnguide_loss(ctx(0), maps).refine_below is None
    assert reached.attnguide_loss(ctx(10), maps).refine_below is None
    # a cap of 0 turns refinement off
    off = DivideBindLoss({**DEFAULT_MAPS, "max_refinement_steps_first": 0})
    assert off.attnguide_loss(ctx(0), maps).refine_below is None


def official_refinement_step(z0, maps_fn, loss_and_tv, alpha, threshold, cap):
    """A transcription of the official control flow at a refinement step (not its code): loss
    and indicator of a first forward; while the indicator is below the threshold: forward,
    update, take that forward's indicator, stop at the cap; then one more forward and the
    step's own update. Returns the latents and the number of updates."""
    updates = 0

    def update(z, loss):
        nonlocal updates
        if loss.item() == 0:
            return z
        updates += 1
        (grad,) = torch.autograd.grad(loss, [z])
        return (z - alpha * grad).detach()

    z = z0.clone().requires_grad_(True)
    loss, indicator = loss_and_tv(maps_fn(z))
    if indicator < threshold:
        iteration = 0
        while indicator < threshold:
            iteration += 1
            z = z.detach().requires_grad_(True)
            loss, indicator = loss_and_tv(maps_fn(z))
            z = update(z, loss)
            if iteration >= cap:
                break
        z = z.detach().requires_grad_(True)
        loss, _ = loss_and_tv(maps_fn(z))
    z = update(z, loss)
    return z.detach(), updates


@pytest.mark.parametrize("threshold, cap", [(None, 6), (10.0, 6)])  # stops on the target; runs to the cap
def test_engine_refinement_follows_the_official_stop_test_on_min_tv(threshold, cap):
    torch.manual_seed(0)
    weight = torch.randn(8, 7 * 36, dtype=torch.float64) * 0.02
    z0 = torch.randn(1, 8, dtype=torch.float64)

    def maps_fn(z):
        return (z.flatten(1) @ weight).reshape(7, 6, 6).softmax(dim=0)

    def context():
        return make_context([CAT_RED, DOG_BLUE], 5, step=10)

    probe = DivideBindLoss({**DEFAULT_MAPS, "scale_factor": 2.0})
    start_tv = probe.compute(context(), maps_fn(z0)).logs["min_tv"]
    if threshold is None:  # a target a few updates away
        threshold = start_tv * 1.02
    plugin = DivideBindLoss({**DEFAULT_MAPS, "scale_factor": 2.0, "thresholds": {10: threshold},
                             "max_refinement_steps": cap})
    alpha = plugin.compute(context(), maps_fn(z0)).step_size

    def loss_and_tv(maps):
        term = plugin.compute(context(), maps)
        return term.value, term.logs["min_tv"]

    expected, updates = official_refinement_step(z0, maps_fn, loss_and_tv, alpha, threshold, cap)
    record = ImageRecord(0, "x", 0)
    got, _ = guide_image(run_plugin_manager([("divide_bind", plugin)]), context(), z0, maps_fn,
                         {"divide_bind": 1.0}, record)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    iterations = record.refinement_iterations[10]
    assert updates == iterations + 1
    if threshold > 1.0:
        assert iterations == cap
    else:
        assert 1 <= iterations < cap  # the target was reached before the cap


def test_map_requests_are_the_attribute_resolutions():
    assert DivideBindLoss().map_requests() == (MapRequest("cross", 64), MapRequest("cross", 32))
    assert DivideBindLoss(TINY).map_requests() == (MapRequest("cross", 32),)
    assert DivideBindLoss(DEFAULT_MAPS).map_requests() == ()
    assert DivideBindLoss({"bind": False}).map_requests() == ()


def test_parameter_errors_name_the_plugin_and_the_parameter():
    with pytest.raises(ConfigError, match=r"'divide_bind'.*'bind_weights'"):
        DivideBindLoss({"bind_weights": {10: 5.0}})
    with pytest.raises(ConfigError, match=r"'divide_bind'.*'attribute_resolutions'"):
        DivideBindLoss({"attribute_resolutions": [32, 32]})
    with pytest.raises(ConfigError, match=r"'divide_bind'.*'attribute_resolutions\.0'"):
        DivideBindLoss({"attribute_resolutions": [0]})
    with pytest.raises(ConfigError, match=r"'divide_bind'.*'tv_vertical'"):
        DivideBindLoss({"tv_vertical": "rows"})
    with pytest.raises(ConfigError, match=r"'divide_bind'.*'thresholds'"):
        DivideBindLoss({"thresholds": {-1: 0.1}})


# --- end to end ---------------------------------------------------------------------------------------


class FinalLatents(Callback):
    """Keeps the latents after the last denoising step."""

    name = "final_latents"

    def __init__(self) -> None:
        super().__init__()
        self.latents: torch.Tensor | None = None

    @hookimpl
    def on_step_end(self, latents):
        self.latents = latents.detach().clone()


def unguided_latents() -> torch.Tensor:
    engine = tiny_engine()
    analyses = [analysis_for(PROMPT, BINDINGS, engine.pipe.tokenizer)]
    return engine.generate(PROMPT, [0], analyses=analyses, steps=4, height=256, width=256,
                           output_type="latent", progress=False).latents


SHORT = {"max_refinement_steps_first": 3, "max_refinement_steps": 2}  # refinement caps small for CPU


def test_divide_bind_runs_end_to_end_on_the_tiny_model_and_moves_the_latents():
    final = FinalLatents()
    records = run_plugin(DivideBindLoss({**TINY, **SHORT}), PROMPT, BINDINGS, steps=4, callbacks=[final])
    assert {r.step for r in records} == {0, 1}
    assert all(math.isfinite(r.value) for r in records)
    assert all(math.isfinite(v) for r in records for v in r.logs.values())
    assert all(r["bind.0.cat"] > 0 and r["bind.1.dog"] > 0 for r in records)
    assert {r["bind_weight"] for r in records if r.step == 0} == {1.0}
    assert {r["bind_weight"] for r in records if r.step == 1} == {5.0}  # key 10 of 50 -> step 1 of 4
    assert (final.latents.cpu() - unguided_latents()).abs().max() > 0


def test_the_papers_resolutions_on_the_tiny_model_are_refused_naming_the_plugin():
    with pytest.raises(ConfigError, match=r"plugin 'divide_bind' asks for cross-attention maps at 64x64.*32x32, 16x16"):
        run_plugin(DivideBindLoss(), PROMPT, BINDINGS, steps=2)


def test_divide_bind_on_the_toyworld_model():
    from attnguide.engine.engine import Engine
    from attnguide.engine.requests import unet_grids
    from attnguide.models.loading import load_pipeline

    engine = Engine(load_pipeline("toyworld"))
    # the toy UNet has cross-attention at 16x16 (the default maps) and 8x8, nothing finer
    grids = unet_grids(engine.pipe.unet, (16, 16))
    sides = {grid[0] for name, grid in grids.items() if name.endswith("attn2.processor")}
    assert sides == {16, 8}
    prompt = "a red circle and a blue square"
    analyses = [analysis_for(prompt, {"circle": ["red"], "square": ["blue"]}, engine.pipe.tokenizer)]
    kwargs = {"steps": 6, "output_type": "latent", "progress": False, "analyses": analyses}
    plain = engine.generate(prompt, [0], **kwargs)
    plugin = DivideBindLoss({"attribute_resolutions": [16, 8], **SHORT})
    guided = engine.generate(prompt, [0], losses=[plugin], **kwargs)
    records = guided.records[0].losses
    assert {r.step for r in records} == {0, 1, 2}
    assert all(math.isfinite(r.value) for r in records)
    # the toy's maps are far flatter than SD's (min TV ~0.01 against targets 0.05, 0.2, 0.3):
    # keys 0, 10, 20 of 50 -> steps 0, 1, 2 of 6 all refine up to their caps
    assert guided.records[0].refinement_iterations == {0: 3, 1: 2, 2: 2}
    assert (guided.latents - plain.latents).abs().max() > 0


def test_divide_bind_composes_with_syngen():
    engine = tiny_engine()
    analyses = [analysis_for(PROMPT, BINDINGS, engine.pipe.tokenizer)]
    # the tiny model's maps already have min TV ~0.3: targets of 1 make both guided steps refine
    plugin = DivideBindLoss({**TINY, **SHORT, "thresholds": {0: 1.0, 10: 1.0}})
    result = engine.generate(PROMPT, [0], losses=[plugin, "syngen"],
                             analyses=analyses, steps=4, height=256, width=256, output_type="latent",
                             progress=False)
    rows = result.records[0].losses
    assert {r.plugin for r in rows} == {"divide_bind", "syngen"}
    assert all(math.isfinite(r.value) for r in rows)
    # refined up to the caps: 3 iterations at step 0, 2 at step 1 (key 10 of 50)
    assert result.records[0].refinement_iterations == {0: 3, 1: 2}
    # every refinement pass re-evaluates every loss of the run
    db = {(r.step, r.refinement) for r in rows if r.plugin == "divide_bind"}
    sg = {(r.step, r.refinement) for r in rows if r.plugin == "syngen"}
    assert db == sg == {(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2)}
