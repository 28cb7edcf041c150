"""InitNO: cross response, self conflict and clean losses; the initial-noise optimisation (KL
projection, rounds, restarts, best round); A&E updates with conflict-aware refinement."""

from __future__ import annotations

import math

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
from attnguide.plugins._maps import attend_excite_step_size, binarize_otsu
from attnguide.plugins.attend_excite import AttendExciteLoss
from attnguide.plugins.initno import (
    InitNOLoss,
    InitNOParams,
    best_round,
    clean_loss,
    initno_parts,
    kl_to_standard_normal,
    optimise_noise,
    otsu_level,
    otsu_mask,
    peak_component,
    project_kl,
    reparameterise,
    search_noise,
    self_conflict,
    self_rows,
)
from attnguide.testing import analysis_for, tiny_engine
from attnguide.types import NoiseContext

PROMPT = "a red cat and a blue frog"
BINDINGS = {"cat": ["red"], "frog": ["blue"]}
SMALL = {"noise_rounds": 2, "noise_steps": 2, "noise_final_steps": 2, "max_refinement_steps": 2}


def cat_dog_context(**kwargs):
    """"cat and dog": cat = 1, dog = 3, end token 4; maps [5, H, W]."""
    return make_context([binding(word("cat", 1)), binding(word("dog", 3))], 3, **kwargs)


CAT_DOG = cat_dog_context().analysis.entities


# --- cross response --------------------------------------------------------------------------------


def test_cross_response_is_one_minus_the_weakest_subjects_smoothed_peak():
    maps = random_maps(5, size=4, seed=1) * 0.05
    self_maps = torch.full((16, 4, 4), 1 / 16, dtype=torch.float64)
    processed = np_ae_process(maps.numpy(), stop=4)  # tokens 1..3: row k = position k + 1
    cat, dog = np_smooth(processed[0]), np_smooth(processed[2])
    parts = initno_parts(maps, self_maps, CAT_DOG, 1, 4)
    assert parts.cross.item() == pytest.approx(max(1 - cat.max(), 1 - dog.max()), rel=1e-12)
    assert parts.max_attention.tolist() == pytest.approx([cat.max(), dog.max()], rel=1e-12)
    assert parts.peaks == [np.unravel_index(cat.argmax(), cat.shape), np.unravel_index(dog.argmax(), dog.shape)]
    # ... which is Attend-and-Excite's loss on the same maps
    assert parts.cross.item() == pytest.approx(AttendExciteLoss().compute(cat_dog_context(), maps).value.item(),
                                               rel=1e-12)


# --- self-attention conflict -----------------------------------------------------------------------


def test_self_conflict_by_hand():
    a = torch.tensor([[0.4, 0.1], [0.3, 0.2]], dtype=torch.float64)
    b = torch.tensor([[0.1, 0.5], [0.2, 0.2]], dtype=torch.float64)
    c = torch.tensor([[0.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
    # a, b: sum min = 0.1 + 0.1 + 0.2 + 0.2 = 0.6, sum (a + b) = 2
    assert self_conflict(torch.stack([a, b])).item() == pytest.approx(0.6 / (2 + 1e-6), rel=1e-12)
    # a, c: min = 0 + 0 + 0.3 + 0.2 = 0.5; b, c: 0 + 0 + 0.2 + 0.2 = 0.4; mean of three pairs
    expected = (0.6 / (2 + 1e-6) + 0.5 / (2 + 1e-6) + 0.4 / (2 + 1e-6)) / 3
    assert self_conflict(torch.stack([a, b, c])).item() == pytest.approx(expected, rel=1e-12)
    one = self_conflict(a[None].clone().requires_grad_(True))
    assert one.item() == 0.0 and one.requires_grad  # a single subject has no pair


def test_self_rows_are_the_peaks_query_rows_moved_between_grids():
    self_maps = torch.arange(16 * 2 * 2, dtype=torch.float64).reshape(16, 2, 2)  # 16 rows but a 2x2 grid
    with pytest.raises(ValueError, match=r"\[h\*w, h, w\]"):
        self_rows(self_maps, [(0, 0)], (4, 4), smooth=False)
    self_maps = torch.arange(4 * 2 * 2, dtype=torch.float64).reshape(4, 2, 2)  # a 2x2 self grid
    rows = self_rows(self_maps, [(0, 1), (1, 0)], (2, 2), smooth=False)
    assert torch.equal(rows, self_maps[[1, 2]])  # query q = row * w + col
    # a 4x4 cross grid: pixel (3, 1) lies in self pixel (1, 0) -> query 2
    assert torch.equal(self_rows(self_maps, [(3, 1)], (4, 4), smooth=False), self_maps[[2]])
    smoothed = self_rows(self_maps, [(0, 1)], (2, 2), smooth=True)[0].numpy()
    np.testing.assert_allclose(smoothed, np_smooth(self_maps[1].numpy()), rtol=1e-12)


def test_parts_read_the_self_rows_at_each_subjects_peak():
    maps = torch.zeros(5, 4, 4, dtype=torch.float64)
    maps[1, :, :2] = 0.1  # cat on the left half, dog on the right
    maps[3, :, 2:] = 0.1
    left = torch.zeros(4, 4, dtype=torch.float64)
    left[:, :2] = 1 / 8
    right = left.flip(-1)
    self_maps = torch.stack([left if q % 4 < 2 else right for q in range(16)])
    parts = initno_parts(maps, self_maps, CAT_DOG, 1, 4)
    assert parts.peaks[0][1] < 2 <= parts.peaks[1][1]
    a, b = np_smooth(left.numpy()), np_smooth(right.numpy())
    assert parts.self_conflict.item() == pytest.approx(np.minimum(a, b).sum() / ((a + b).sum() + 1e-6), rel=1e-12)
    assert parts.self_conflict.item() < 0.3 and parts.cross.item() < 0.2  # a successful layout


# --- clean loss: Otsu on 8-bit levels, the peak's component -----------------------------------------


def levels_map(levels) -> torch.Tensor:
    """A map whose values quantise (``uint16(255 x)``) to ``levels``."""
    return (torch.tensor(levels, dtype=torch.float64) + 0.5) / 255


def test_otsu_level_by_hand():
    # levels 0, 2, 8, 10 (N = 4, mean 5). Between-class variance of the split after level i:
    # i = 0: .25 * .75 * (0 - 6.667)^2 = 8.33; i = 2: .5 * .5 * (1 - 9)^2 = 16 (and the same on
    # the empty levels 3..7, which do not beat it); i = 8: .75 * .25 * (3.333 - 10)^2 = 8.33.
    assert otsu_level(np.array([0, 2, 8, 10])) == 2
    assert otsu_level(np.array([[7, 7], [7, 7]])) == 0  # one level: no split
    # The official mask keeps x >= t / 255: the level t itself is foreground (three pixels),
    # where OpenCV's binarisation (level > t) would keep two.
    assert otsu_mask(levels_map([[0, 2], [8, 10]])).tolist() == [[0.0, 1.0], [1.0, 1.0]]


def test_otsu_level_is_the_exact_split_on_integer_levels():
    # Away from ties, the histogram Otsu and the exact one (_maps.binarize_otsu, "above the
    # lower class") split integer levels alike: OpenCV's "> t" is the exact split.
    rng = np.random.default_rng(0)
    for _ in range(20):
        levels = rng.integers(0, 256, size=(6, 6))
        exact = binarize_otsu(torch.tensor(levels, dtype=torch.float64)).numpy()
        np.testing.assert_array_equal(exact, (levels > otsu_level(levels)).astype(np.float64))


def test_peak_component_is_4_connected():
    mask = torch.tensor([[1, 1, 0], [0, 0, 1], [1, 1, 1]], dtype=torch.float64)
    assert peak_component(mask, (0, 0)).tolist() == [[1, 1, 0], [0, 0, 0], [0, 0, 0]]  # (1, 2) is diagonal
    assert peak_component(mask, (2, 0)).tolist() == [[0, 0, 0], [0, 0, 1], [1, 1, 1]]
    assert peak_component(mask, (1, 0)).sum() == 0  # a peak outside the mask keeps nothing


MAIN_AND_SECOND = [[200, 120, 0, 0],
                   [120, 0, 0, 0],
                   [0, 0, 0, 60],
                   [0, 0, 60, 150]]


def test_clean_loss_by_hand():
    # Levels 0 x 10, 60 x 2, 120 x 2, 150, 200 (mean 44.375). Splits: after 0: .625 * .375 *
    # 118.33^2 = 3281.9; after 60: .75 * .25 * (10 - 147.5)^2 = 3544.9; after 120: 2437.5;
    # after 150: 1614.6 -> t = 60, so the mask is every pixel at level >= 60: the main blob
    # (200, 120, 120) and the second one (60, 60, 150). The peak's component is the main blob;
    # the largest value outside it (150) beats the smallest inside (120): clean = 150.5 / 255.
    attention = levels_map(MAIN_AND_SECOND)
    assert otsu_level((attention.numpy() * 255).astype(np.uint16)) == 60
    assert clean_loss(attention, (0, 0)).item() == pytest.approx(150.5 / 255, rel=1e-12)
    # With 100 instead of 150 the split is still after 60 (2929.7 against 2835.9 after 0), and
    # the second blob (at most 100) stays below the main blob's minimum (120): clean = 0.
    weaker = [row[:] for row in MAIN_AND_SECOND]
    weaker[3][3] = 100
    attention = levels_map(weaker).requires_grad_(True)
    value = clean_loss(attention, (0, 0))
    assert value.item() == 0.0 and value.requires_grad


def test_clean_loss_gradient_reaches_the_largest_background_pixel_only():
    attention = levels_map(MAIN_AND_SECOND).requires_grad_(True)
    clean_loss(attention, (0, 0)).backward()
    expected = torch.zeros(4, 4, dtype=torch.float64)
    expected[3, 3] = 1.0
    assert torch.equal(attention.grad, expected)


def test_clean_loss_is_zero_when_the_lower_otsu_class_is_one_level():
    # Background at level 0 and blobs above: the best split is right after level 0, t = 0, and
    # x >= 0 keeps every pixel - nothing lies outside the component (the official behaviour).
    attention = levels_map([[200, 0, 0, 180], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert otsu_level((attention.numpy() * 255).astype(np.uint16)) == 0
    assert otsu_mask(attention).sum() == 16
    assert clean_loss(attention, (0, 0)).item() == 0.0


# --- the noise optimisation ------------------------------------------------------------------------


def test_kl_and_reparameterisation_by_hand():
    mu = torch.tensor([0.1, -0.3, 0.0, 0.2], dtype=torch.float64)
    log_var = torch.tensor([0.0, 0.0, 0.5, -0.4], dtype=torch.float64)
    # per element: -(1 + lv - mu^2 - e^lv) / 2
    terms = [0.01 / 2, 0.09 / 2, -(1 + 0.5 - math.exp(0.5)) / 2, -(1 - 0.4 - 0.04 - math.exp(-0.4)) / 2]
    assert kl_to_standard_normal(log_var, mu).item() == pytest.approx(sum(terms) / 4, rel=1e-12)
    assert kl_to_standard_normal(torch.zeros(3), torch.zeros(3)).item() == 0.0
    noise = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    expected = noise * torch.exp(0.5 * log_var) + mu
    assert torch.equal(reparameterise(noise, log_var, mu), expected)
    assert reparameterise(noise, log_var, mu)[2].item() == pytest.approx(0.5 * math.exp(0.25), rel=1e-12)


def test_project_kl_steps_the_same_optimiser_until_kl_is_below_the_threshold():
    mu = torch.full((16,), 0.2, requires_grad=True)  # KL = 0.02
    log_var = torch.zeros(16, requires_grad=True)
    optimiser = torch.optim.Adam([log_var, mu], lr=1e-2, eps=1e-3)
    steps = project_kl(optimiser, log_var, mu, 1e-3, 10_000)
    assert steps > 0 and kl_to_standard_normal(log_var, mu).item() <= 1e-3
    assert optimiser.state[mu]["step"].item() == steps  # the optimiser's own moments carry on
    assert project_kl(optimiser, log_var, mu, 1e-3, 10_000) == 0  # already inside
    mu.data.fill_(0.5)
    assert project_kl(optimiser, log_var, mu, 1e-3, 3) == 3  # the cap


def toy_evaluate(target: float = 1.0):
    """A differentiable stand-in for the forward's losses: cross and self fall as z nears
    ``target``."""

    def evaluate(z):
        cross = ((z - target) ** 2).mean()
        conflict = 0.5 * (z.mean() - target) ** 2
        return cross + conflict, cross, conflict

    return evaluate


def official_initno(latents, evaluate, max_step, lr=1e-2, eps=1e-3, tau_cross=0.2, tau_self=0.3):
    """A transcription of the official ``fn_initno`` control flow (one denoising step)."""
    latents = latents.clone().detach()
    log_var = torch.zeros_like(latents).requires_grad_(True)
    mu = torch.zeros_like(latents).requires_grad_(True)
    optimizer = torch.optim.Adam([log_var, mu], lr=lr, eps=eps)

    def kld():
        return torch.mean(-0.5 * torch.mean(1 + log_var - mu**2 - log_var.exp()), dim=0)

    succeeded = False
    for _ in range(max_step):
        z = latents * torch.exp(0.5 * log_var) + mu
        joint, cross, conflict = evaluate(z)
        if cross < tau_cross and conflict < tau_self:
            succeeded = True
            break
        optimizer.zero_grad()
        joint.mean().backward()
        optimizer.step()
        loss = kld()
        while loss > 0.001:
            optimizer.zero_grad()
            loss.mean().backward()
            optimizer.step()
            loss = kld()
    out = (latents * torch.exp(0.5 * log_var) + mu).clone().detach()
    if conflict <= 1e-6:
        conflict = conflict + 1.0
    return out, succeeded, float((cross + conflict).detach())


def test_optimise_noise_is_the_official_loop():
    noise = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    for lr, steps in ((5e-2, 6), (1e-2, 10)):
        expected, succeeded, score = official_initno(noise, toy_evaluate(), steps, lr=lr)
        result = optimise_noise(noise, toy_evaluate(), steps=steps, lr=lr)
        assert torch.equal(result.latents, expected)
        assert (result.succeeded, result.score) == (succeeded, pytest.approx(score, rel=1e-6))
        assert not result.succeeded and result.evaluations == result.steps == steps
    assert optimise_noise(noise, toy_evaluate(), steps=6, lr=5e-2).kl_steps > 0  # the projection ran


def test_a_round_that_succeeds_stops_before_stepping():
    noise = torch.full((1, 4, 2, 2), 0.9)  # cross = 0.01, self = 0.005 at the first evaluation
    result = optimise_noise(noise, toy_evaluate(), steps=10)
    assert result.succeeded and (result.evaluations, result.steps, result.kl_steps) == (1, 0, 0)
    assert torch.equal(result.latents, noise)  # mu = logvar = 0: z is the noise itself
    assert result.score == pytest.approx(0.01 + 0.005, rel=1e-5)
    # and the official control flow agrees
    expected, succeeded, _ = official_initno(noise, toy_evaluate(), 10)
    assert succeeded and torch.equal(expected, result.latents)


def test_a_round_whose_self_conflict_is_zero_scores_one_more():
    noise = torch.zeros(1, 4, 2, 2)

    def no_conflict(z):
        cross = ((z - 1.0) ** 2).mean()
        return cross, cross, (z * 0).sum()

    result = optimise_noise(noise, no_conflict, steps=1)
    assert not result.succeeded and result.score == pytest.approx(1.0 + 1.0)  # cross 1, self 0 -> + 1
    assert optimise_noise(noise, no_conflict, steps=0).score == math.inf  # never evaluated


def scripted(table, calls):
    """``evaluate`` whose ``(cross, self)`` is looked up by the noise's fill value; the joint
    loss has a zero gradient, so Adam never moves z and every evaluation sees the starting
    noise. ``calls`` collects the fills evaluated."""

    def evaluate(z):
        fill = round(float(z.detach().mean()), 6)
        calls.append(fill)
        cross, conflict = table[fill]
        zero = (z * 0).sum()
        return zero + cross + conflict, zero + cross, zero + conflict

    return evaluate


def fills(k):
    return torch.full((1, 4, 2, 2), float(k + 1))  # round 0's latents are fill 1, restart k fill k + 1


def test_rounds_restart_from_fresh_noise_until_one_succeeds():
    calls = []
    table = {1.0: (0.6, 0.0), 2.0: (0.1, 0.2), 3.0: (0.0, 0.0)}
    params = InitNOParams(noise_rounds=5, noise_steps=3, noise_final_steps=7)
    out, summary = search_noise(fills(0), fills, scripted(table, calls), params)
    assert calls == [1.0, 1.0, 1.0, 2.0]  # round 0: three failures; round 1 succeeds at once
    assert torch.equal(out, fills(1))
    assert summary["chosen_round"] == 1 and summary["final"] is None and summary["succeeded"]
    assert [r["succeeded"] for r in summary["rounds"]] == [False, True]
    assert summary["rounds"][0]["score"] == pytest.approx(1.6)  # self 0 -> + 1


def test_without_success_the_best_rounds_starting_noise_is_optimised_again():
    calls = []
    table = {1.0: (0.3, 0.3), 2.0: (0.25, 0.1), 3.0: (0.6, 0.0)}  # scores 0.6, 0.35, 1.6
    params = InitNOParams(noise_rounds=3, noise_steps=2, noise_final_steps=4)
    out, summary = search_noise(fills(0), fills, scripted(table, calls), params)
    assert calls == [1.0, 1.0, 2.0, 2.0, 3.0, 3.0] + [2.0] * 4  # then 4 evaluations from round 1's noise
    assert summary["chosen_round"] == 1 and summary["final"]["evaluations"] == 4
    assert not summary["succeeded"] and torch.equal(out, fills(1))


def test_a_success_that_scores_worse_than_a_failure_is_not_taken():
    # As the official sort: round 0 fails with score 0.30, round 1 succeeds with 0.48 and ends
    # the rounds; round 0 ranks first, so its noise is optimised again.
    calls = []
    table = {1.0: (0.25, 0.05), 2.0: (0.19, 0.29)}
    params = InitNOParams(noise_rounds=5, noise_steps=2, noise_final_steps=3)
    out, summary = search_noise(fills(0), fills, scripted(table, calls), params)
    assert calls == [1.0, 1.0, 2.0, 1.0, 1.0, 1.0]
    assert summary["chosen_round"] == 0 and summary["final"] is not None and not summary["succeeded"]
    assert torch.equal(out, fills(0))


def test_best_round_breaks_ties_by_the_earlier_round():
    a = optimise_noise(fills(0), scripted({1.0: (0.3, 0.3)}, []), steps=1)
    b = optimise_noise(fills(1), scripted({2.0: (0.3, 0.3)}, []), steps=1)
    assert best_round([(0, a), (1, b)])[0] == 0 and best_round([(1, b), (0, a)])[0] == 0


def test_the_noise_loss_drops_the_self_conflict_while_cross_is_above_one_half():
    plugin = InitNOLoss({"self_resolution": 4})
    maps = torch.zeros(5, 4, 4, dtype=torch.float64)  # no subject attended: cross = 2/3
    uniform = torch.full((16, 4, 4), 1 / 16, dtype=torch.float64)  # self conflict 1/2
    parts = initno_parts(maps, uniform, CAT_DOG, 1, 4)
    joint, cross, conflict = plugin._noise_losses(parts)
    assert cross.item() == pytest.approx(2 / 3) and parts.self_conflict.item() == pytest.approx(0.5, rel=1e-5)
    assert conflict.item() == 0.0 and joint.item() == pytest.approx(cross.item() + parts.clean.item())
    half = InitNOLoss({"self_resolution": 4, "self_drop_above": 0.9})._noise_losses(parts)
    assert half[2].item() == pytest.approx(0.5, rel=1e-5)
    assert half[0].item() == pytest.approx(cross.item() + 0.5 * (1 - 2e-6) + parts.clean.item(), rel=1e-5)


def fake_noise_context(fresh, state=None):
    """A NoiseContext on the cat/dog analysis whose forward draws maps from ``z``: each subject
    owns one half of a 4x4 grid with raw attention ``0.1 sigmoid(10 mean z)``, and every query
    attends uniformly over its own half (self conflict ~0.1). A positive mean succeeds at once."""
    analysis = cat_dog_context().analysis
    left = torch.zeros(4, 4)
    left[:, :2] = 1 / 8
    self_maps = torch.stack([left if q % 4 < 2 else left.flip(-1) for q in range(16)])
    seen = []

    def forward(z):
        seen.append(z.detach().clone())
        strength = 0.1 * torch.sigmoid(10 * z.mean())
        maps = torch.zeros(5, 4, 4)
        maps[1, :, :2] = 1
        maps[3, :, 2:] = 1
        return maps * strength, {MapRequest("self", 4): self_maps}

    ctx = NoiseContext(image_index=0, seed=0, analysis=analysis, timestep=999, state={} if state is None else state,
                       forward=forward, fresh_noise=fresh)
    return ctx, seen


def test_the_noise_hook_restarts_from_seeded_noise_and_returns_the_successful_round():
    def fresh(k):
        return torch.full((1, 4, 2, 2), -3.0 if k < 2 else 3.0)

    ctx, seen = fake_noise_context(fresh)
    plugin = InitNOLoss({"self_resolution": 4, "noise_rounds": 5, "noise_steps": 2})
    out = plugin.attnguide_initial_latents(ctx, torch.full((1, 4, 2, 2), -3.0))
    assert torch.equal(out, fresh(2))  # round 2 succeeds at its first evaluation
    summary = ctx.state["noise"]
    assert summary["chosen_round"] == 2 and summary["succeeded"] and summary["final"] is None
    assert [r["evaluations"] for r in summary["rounds"]] == [2, 2, 1]
    assert summary["rounds"][2]["cross"] < 0.2 and summary["rounds"][2]["self"] < 0.3
    assert len(seen) == 5 and all(z.mean() < 0 for z in seen[:4])
    assert summary["rounds"][0]["score"] > 1.5  # cross 2/3 > 0.5: self dropped, + 1


def test_the_noise_hook_does_nothing_when_switched_off_or_without_subjects():
    ctx, seen = fake_noise_context(lambda k: torch.zeros(1, 4, 2, 2))
    latents = torch.zeros(1, 4, 2, 2)
    assert InitNOLoss({"self_resolution": 4, "optimize_noise": False}).attnguide_initial_latents(ctx, latents) is None
    ctx.analysis = make_context([], 3).analysis
    assert InitNOLoss({"self_resolution": 4}).attnguide_initial_latents(ctx, latents) is None
    assert seen == []


# --- the denoising steps ------------------------------------------------------------------------------


def test_ordinary_steps_update_on_the_cross_loss_with_attend_and_excites_step_size():
    plugin = InitNOLoss({"self_resolution": 4})
    maps = random_maps(5, size=4, seed=2) * 0.05
    self_maps = torch.softmax(torch.randn(16, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64),
                              dim=1).reshape(16, 4, 4)

    def term_at(step, state=None):
        ctx = cat_dog_context(step=step, state={} if state is None else state)
        ctx.extra_maps = {MapRequest("self", 4): self_maps}
        return plugin.attnguide_loss(ctx, maps)

    assert plugin.default_window == (0.0, 0.5) and plugin.map_requests() == (MapRequest("self", 4),)
    term = term_at(0)
    parts = initno_parts(maps, self_maps, CAT_DOG, 1, 4)
    assert term.value.item() == parts.cross.item() and term.refine_below is None
    assert term.step_size == 20.0
    assert term_at(24).step_size == pytest.approx(20 * math.sqrt(np.linspace(1.0, 0.5, 50)[24]))
    assert term_at(25) is None
    assert term.logs["self"] == pytest.approx(parts.self_conflict.item())
    assert term.logs["clean"] == pytest.approx(parts.clean.item()) and term.logs["alignment"] == 0.0
    assert term.logs["refining"] == 0.0
    # refinement steps with unmet targets: the joint loss, refine_below -inf, cap 20
    for step in (10, 20):
        refined = term_at(step)
        assert refined.logs["refining"] == 1.0 and refined.refine_below == -math.inf
        assert refined.max_refinement == 20 and refined.value.item() == pytest.approx(refined.logs["joint"])
    # targets met: no refinement (tau = 1: the cross and self losses never exceed it)
    met = InitNOLoss({"self_resolution": 4, "tau_cross": 1.0, "tau_self": 1.0})
    ctx = cat_dog_context(step=10)
    ctx.extra_maps = {MapRequest("self", 4): self_maps}
    assert met.attnguide_loss(ctx, maps).refine_below is None


def test_alignment_is_the_l1_distance_to_the_moving_average_by_hand():
    plugin = InitNOLoss({"self_resolution": 4, "smooth": False})
    first, second = random_maps(5, size=4, seed=4) * 0.05, random_maps(5, size=4, seed=5) * 0.05
    self_maps = torch.full((16, 4, 4), 1 / 16, dtype=torch.float64)
    state = {}
    terms = []
    for step, maps in ((0, first), (1, second)):
        ctx = cat_dog_context(step=step, state=state)
        ctx.extra_maps = {MapRequest("self", 4): self_maps}
        terms.append(plugin.attnguide_loss(ctx, maps))
    assert terms[0].logs["alignment"] == 0.0  # the average starts at the first maps
    p1, p2 = np_ae_process(first.numpy(), 4), np_ae_process(second.numpy(), 4)
    average = 0.9 * p1 + 0.1 * p2
    expected = sum(np.abs(p2[k] - average[k]).mean() for k in (0, 2))  # cat, dog
    assert terms[1].logs["alignment"] == pytest.approx(expected, rel=1e-10)


SIDE, TOKENS, SCALE = 4, 5, 0.02
SELF4 = MapRequest("self", SIDE)


def linear_model(seed=0):
    """z [1, 8] -> (cross maps [5, 4, 4], self maps [16, 4, 4]), both softmaxes of linear maps."""
    gen = torch.Generator().manual_seed(seed)
    w_cross = torch.randn(8, TOKENS * SIDE * SIDE, generator=gen, dtype=torch.float64) * SCALE
    w_self = torch.randn(8, 16 * 16, generator=gen, dtype=torch.float64)

    def model(z):
        maps = (z.flatten(1) @ w_cross).reshape(TOKENS, SIDE, SIDE).softmax(dim=0)
        self_maps = (z.flatten(1) @ w_self).reshape(16, 16).softmax(dim=1).reshape(16, SIDE, SIDE)
        return maps, self_maps

    return model


def official_step(z0, step, cache, model, params, alpha):
    """A transcription of the official denoising-loop body for one image at step ``step`` (of
    50): the augmented loss (moving average updated at every call), refinement at 10 and 20 on
    the joint loss while cross > tau or self > tau (at most ``max_refinement_steps``), a final
    forward, then the A&E update on the cross loss. Returns the latents and the forwards run."""
    forwards = 0

    def augmented(z):
        nonlocal forwards
        forwards += 1
        maps, self_maps = model(z)
        parts = initno_parts(maps, self_maps, CAT_DOG, 1, 4)
        current = parts.processed.detach()
        cache[0] = current.clone() if cache[0] is None else cache[0] * 0.9 + current * (1 - 0.9)
        align = 0
        for row, subject in zip((0, 2), parts.subject_maps):
            align = align + torch.nn.L1Loss()(subject, torch.from_numpy(np_smooth(cache[0][row].numpy())))
        joint = parts.cross + 0.1 * parts.clean + 0.1 * align + parts.self_conflict
        return joint, parts.cross, parts.self_conflict

    def update(z, loss):
        (grad,) = torch.autograd.grad(loss, [z])
        return z - alpha * grad

    z = z0.clone().requires_grad_(True)
    joint, cross, conflict = augmented(z)
    if step in (10, 20) and (cross > params.tau_cross or conflict > params.tau_self):
        iteration = 0
        while cross > params.tau_cross or conflict > params.tau_self:
            iteration += 1
            z = z.detach().requires_grad_(True)
            joint, cross, conflict = augmented(z)
            if joint != 0:
                z = update(z, joint)
            if iteration >= params.max_refinement_steps:
                break
        z = z.detach().requires_grad_(True)
        joint, cross, conflict = augmented(z)
    if cross != 0:
        z = update(z, cross)
    return z.detach(), forwards


@pytest.mark.parametrize("settings,iterations", [
    ({"tau_cross": 0.5}, 4),  # stops once the targets are met
    ({"tau_self": 0.0, "max_refinement_steps": 6}, 6),  # never met: the cap
    ({"tau_self": 1.0, "tau_cross": 1.0}, 0),  # met at once: no refinement
])
@pytest.mark.parametrize("repeat", [False, True])
def test_engine_refinement_is_the_official_step(settings, iterations, repeat):
    model = linear_model()
    params = {"self_resolution": SIDE, "scale_factor": 2.0, **settings}
    plugin = InitNOLoss(params)
    z0 = torch.randn(1, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    state: dict = {}
    cache = [None]
    z_engine = z_official = z0
    for step in (9, 10):  # step 9 starts the moving average; step 10 refines
        ctx = cat_dog_context(step=step, state=state)
        calls = {"n": 0}

        def maps_fn(z, ctx=ctx, calls=calls):
            calls["n"] += 1
            maps, self_maps = model(z)
            ctx.extra_maps = {SELF4: self_maps}
            return maps

        record = ImageRecord(0, "x", 0)
        pm = run_plugin_manager([("initno", plugin)])
        z_engine, _ = guide_image(pm, ctx, z_engine, maps_fn, {"initno": 1.0}, record, repeat_refinement_forward=repeat)
        z_official, forwards = official_step(z_official, step, cache, model, plugin.params,
                                             attend_excite_step_size(step, 50, 2.0))
        torch.testing.assert_close(z_engine, z_official, rtol=1e-10, atol=1e-12)
        if step == 10:
            assert record.refinement_iterations == ({10: iterations} if iterations else {})
            if iterations:  # the official first refinement forward repeats the step's
                assert forwards == iterations + 2 and calls["n"] == iterations + 1 + repeat
                objectives = [r.logs["refining"] for r in record.losses]
                assert objectives[-1] == 0.0 and set(objectives[:-1]) == {1.0}  # joint, then cross
    assert not torch.equal(z_engine, z0)


def test_parameter_errors_name_the_plugin_and_the_parameter():
    with pytest.raises(ConfigError, match=r"'initno'.*'noise_rounds'"):
        InitNOLoss({"noise_rounds": 0})
    with pytest.raises(ConfigError, match=r"'initno'.*'refine_at.0'"):
        InitNOLoss({"refine_at": [-1]})
    with pytest.raises(ConfigError, match=r"'initno'.*'noise_lr'"):
        InitNOLoss({"noise_lr": 0})


# --- end to end ---------------------------------------------------------------------------------------


class StartProbe(Callback):
    """Keeps the initial latents the loop starts from (after any noise plugin)."""

    name = "start_probe"

    def __init__(self) -> None:
        super().__init__()
        self.latents: torch.Tensor | None = None

    @hookimpl
    def on_run_start(self, run):
        self.latents = run.latents.detach().clone()


def generate(engine, losses=(), callbacks=(), steps=4, prompt=PROMPT, bindings=BINDINGS, **kwargs):
    analyses = [analysis_for(prompt, bindings, engine.pipe.tokenizer)]
    return engine.generate(prompt, [0], losses=list(losses), callbacks=list(callbacks), analyses=analyses,
                           steps=steps, output_type="latent", progress=False, **kwargs)


def test_initno_replaces_the_initial_noise_and_guides_on_the_tiny_model():
    engine = tiny_engine()
    plain_start, start = StartProbe(), StartProbe()
    plain = generate(engine, callbacks=[plain_start], height=256, width=256)
    guided = generate(engine, [InitNOLoss(SMALL)], callbacks=[start], height=256, width=256)
    assert start.latents.shape == plain_start.latents.shape
    assert not torch.equal(start.latents, plain_start.latents)  # the optimised noise
    summary = guided.run.plugin_state[0]["initno"]["noise"]
    assert 1 <= len(summary["rounds"]) <= 2
    assert (summary["final"] is None) == summary["rounds"][summary["chosen_round"]]["succeeded"]
    records = guided.records[0].losses
    assert {r.step for r in records} == {0, 1} and all(math.isfinite(r.value) for r in records)
    assert records[0].logs["noise_rounds"] == len(summary["rounds"])
    assert all(math.isfinite(r.logs[k]) for r in records for k in ("cross", "self", "clean", "alignment"))
    # refinement at 10 of 50 -> step 1 of 4, while the targets are unmet (the random tiny model's
    # self conflict stays near 1/2), capped at 2
    assert guided.records[0].refinement_iterations == {1: 2}
    assert (guided.latents - plain.latents).abs().max() > 0
    # without the noise stage the loop starts from the drawn noise
    kept = StartProbe()
    generate(engine, [InitNOLoss({**SMALL, "optimize_noise": False})], callbacks=[kept], steps=1, height=256,
             width=256)
    assert torch.equal(kept.latents, plain_start.latents)


def test_initno_on_the_toyworld_model():
    from attnguide.engine.engine import Engine
    from attnguide.engine.requests import unet_grids
    from attnguide.models.loading import load_pipeline

    engine = Engine(load_pipeline("toyworld"))
    grids = unet_grids(engine.pipe.unet, (16, 16))  # 64 px images, VAE factor 4
    assert (16, 16) in {g for n, g in grids.items() if n.endswith("attn1.processor")}
    prompt, bindings = "a red circle and a blue square", {"circle": ["red"], "square": ["blue"]}
    plain = generate(engine, steps=6, prompt=prompt, bindings=bindings)
    guided = generate(engine, [InitNOLoss(SMALL)], steps=6, prompt=prompt, bindings=bindings)
    records = guided.records[0].losses
    assert {r.step for r in records} == {0, 1, 2}
    assert all(math.isfinite(r.value) for r in records)
    assert "noise" in guided.run.plugin_state[0]["initno"]
    assert set(guided.records[0].refinement_iterations) <= {1, 2}  # 10, 20 of 50 -> 1, 2 of 6
    assert (guided.latents - plain.latents).abs().max() > 0
    # an empty window keeps the noise stage alone: no guided step
    noise_only = generate(engine, [InitNOLoss(SMALL, window=(0.0, 0.0))], steps=6, prompt=prompt, bindings=bindings)
    assert noise_only.records[0].losses == [] and "noise" in noise_only.run.plugin_state[0]["initno"]
    assert not torch.equal(noise_only.latents, plain.latents)


def test_initno_composes_with_syngen():
    engine = tiny_engine()
    result = generate(engine, [InitNOLoss(SMALL), "syngen"], height=256, width=256)
    rows = result.records[0].losses
    assert {r.plugin for r in rows} == {"initno", "syngen"}
    assert all(math.isfinite(r.value) for r in rows)
    assert "noise" in result.run.plugin_state[0]["initno"]
    assert {(1, 1), (1, 2)} <= {(r.step, r.refinement) for r in rows if r.plugin == "syngen"}
