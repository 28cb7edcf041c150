"""A-STAR: segregation between concepts plus retention of the previous step's binarised maps."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from loss_helpers import binding, make_context, np_ae_process, np_smooth, random_maps, word

from attnguide.errors import ConfigError
from attnguide.plugins.astar import AStarLoss

RAW = {"attention": "raw"}


def raw_maps(cat, dog) -> torch.Tensor:
    """``[5, 2, 2]`` for "cat and dog" (cat = 1, dog = 3); other tokens are filler."""
    maps = torch.full((5, 2, 2), 0.01, dtype=torch.float64)
    maps[1] = torch.tensor(cat, dtype=torch.float64)
    maps[3] = torch.tensor(dog, dtype=torch.float64)
    return maps


def ctx_at(step, state, refinement=0, entities=("cat", "dog")):
    positions = {"cat": 1, "dog": 3, "and": 2}
    bindings = [binding(word(e, positions[e])) for e in entities]
    return make_context(bindings, 3, step=step, state=state, refinement=refinement)


def test_astar_first_step_is_segregation_only_by_hand():
    maps = raw_maps([[0.6, 0.1], [0.2, 0.1]], [[0.1, 0.5], [0.1, 0.3]])
    term = AStarLoss(RAW).compute(ctx_at(0, {}), maps)
    # sum(min) = 0.1 * 4 = 0.4; sum(cat + dog) = 2.0.
    assert term.value.item() == pytest.approx(0.2, rel=1e-12)
    assert term.logs == {"seg": pytest.approx(0.2), "ret": 0.0, "has_retention": 0.0}


def test_astar_second_step_adds_retention_against_the_previous_binarised_maps_by_hand():
    state: dict = {}
    loss = AStarLoss(RAW)
    loss.compute(ctx_at(0, state), raw_maps([[0.6, 0.1], [0.2, 0.1]], [[0.1, 0.5], [0.1, 0.3]]))
    # B_cat = (>= 0.3) = [[1,0],[0,0]]; B_dog = (>= 0.25) = [[0,1],[0,1]].
    term = loss.compute(ctx_at(1, state), raw_maps([[0.5, 0.2], [0.2, 0.1]], [[0.2, 0.4], [0.1, 0.3]]))
    seg = 0.6 / 2.0
    ret_cat = 1 - 0.5 / (1.0 + 1.0)
    ret_dog = 1 - 0.7 / (1.0 + 2.0)
    assert term.logs["seg"] == pytest.approx(seg, rel=1e-12)
    assert term.logs["ret"] == pytest.approx(ret_cat + ret_dog, rel=1e-12)
    assert term.value.item() == pytest.approx(seg + ret_cat + ret_dog, rel=1e-12)
    assert term.logs["has_retention"] == 1.0


def test_astar_processed_maps_are_attend_and_excite_preprocessed():
    maps = random_maps(5, size=4, seed=2) * 0.05
    processed = np_ae_process(maps.numpy(), stop=4)
    cat, dog = np_smooth(processed[0]), np_smooth(processed[2])
    expected = np.minimum(cat, dog).sum() / (cat + dog).sum()
    term = AStarLoss().compute(ctx_at(0, {}), maps)
    assert term.value.item() == pytest.approx(expected, rel=1e-10)


def test_astar_segregation_sums_over_every_pair_of_three_concepts():
    maps = random_maps(5, size=2, seed=6)
    m = maps.numpy()
    expected = sum(
        np.minimum(m[a], m[b]).sum() / (m[a] + m[b]).sum()
        for a, b in itertools.combinations((1, 2, 3), 2)
    )
    term = AStarLoss(RAW).compute(ctx_at(0, {}, entities=("cat", "and", "dog")), maps)
    assert term.value.item() == pytest.approx(expected, rel=1e-10)


def test_astar_multi_piece_concept_takes_the_elementwise_max_over_pieces():
    maps = random_maps(6, size=2, seed=7)
    m = maps.numpy()
    ctx = make_context([binding(word("elephant", 1, 2)), binding(word("dog", 4))], 4)
    elephant = np.maximum(m[1], m[2])
    expected = np.minimum(elephant, m[4]).sum() / (elephant + m[4]).sum()
    assert AStarLoss(RAW).compute(ctx, maps).value.item() == pytest.approx(expected, rel=1e-10)


def test_astar_single_concept_has_only_retention():
    state: dict = {}
    loss = AStarLoss(RAW)
    first = raw_maps([[0.6, 0.1], [0.2, 0.1]], [[0, 0], [0, 0]]).requires_grad_(True)
    term = loss.compute(ctx_at(0, state, entities=("cat",)), first)
    assert term.value.item() == 0.0
    assert term.value.requires_grad  # the engine can still differentiate it
    second = raw_maps([[0.5, 0.2], [0.2, 0.1]], [[0, 0], [0, 0]])
    term = loss.compute(ctx_at(1, state, entities=("cat",)), second)
    assert term.value.item() == pytest.approx(0.75, rel=1e-12)
    assert term.logs["seg"] == 0.0


def test_astar_refinement_passes_reuse_the_previous_steps_masks():
    state: dict = {}
    loss = AStarLoss(RAW)
    single = {"entities": ("cat",)}
    loss.compute(ctx_at(0, state, **single), raw_maps([[0.6, 0.1], [0.2, 0.1]], [[0, 0], [0, 0]]))
    step1 = raw_maps([[0.1, 0.1], [0.1, 0.9]], [[0, 0], [0, 0]])
    a = loss.compute(ctx_at(1, state, **single), step1)
    b = loss.compute(ctx_at(1, state, refinement=1, **single), step1)
    assert a.value.item() == pytest.approx(b.value.item(), rel=1e-12)  # both against step 0's B
    # Step 2 retains step 1's last map: B = [[0,0],[0,1]].
    step2 = raw_maps([[0.2, 0.2], [0.2, 0.4]], [[0, 0], [0, 0]])
    c = loss.compute(ctx_at(2, state, **single), step2)
    assert c.value.item() == pytest.approx(1 - 0.4 / (1.0 + 1.0), rel=1e-12)


def test_astar_otsu_binarisation_option():
    state: dict = {}
    maps = raw_maps([[0.0, 0.1], [0.05, 0.9]], [[0.3, 0.3], [0.3, 0.3]])
    AStarLoss({**RAW, "binarize": "otsu"}).compute(ctx_at(0, state), maps)
    assert state["current"][(1,)].tolist() == [[0.0, 0.0], [0.0, 1.0]]
    assert state["current"][(3,)].tolist() == [[1.0, 1.0], [1.0, 1.0]]  # constant: no split
    state = {}
    AStarLoss({**RAW, "threshold": 0.1}).compute(ctx_at(0, state), maps)
    assert state["current"][(1,)].tolist() == [[0.0, 1.0], [0.0, 1.0]]


def test_astar_stores_detached_masks_and_never_refines():
    state: dict = {}
    maps = (random_maps(5, size=4, seed=3) * 0.05).requires_grad_(True)
    term = AStarLoss().compute(ctx_at(0, state), maps)
    assert term.refine_below is None
    assert all(not mask.requires_grad for mask in state["current"].values())
    term.value.backward()
    assert torch.isfinite(maps.grad).all() and maps.grad.abs().sum() > 0


def test_astar_step_size_and_window_follow_attend_and_excite():
    loss = AStarLoss()
    maps = random_maps(5, size=4)
    assert loss.default_window == (0.0, 0.5)
    assert loss.attnguide_loss(ctx_at(0, {}), maps).step_size == 20.0
    assert loss.attnguide_loss(ctx_at(24, {}), maps).step_size == pytest.approx(
        20 * math.sqrt(np.linspace(1.0, 0.5, 50)[24])
    )
    assert loss.attnguide_loss(ctx_at(25, {}), maps) is None


def test_astar_returns_none_without_concepts():
    assert AStarLoss().compute(make_context([], 3), random_maps(5)) is None


def test_astar_parameter_errors_name_the_plugin_and_the_parameter():
    with pytest.raises(ConfigError, match=r"'astar'.*'threshold'"):
        AStarLoss({"threshold": 2.0})
    with pytest.raises(ConfigError, match=r"'astar'.*'binarize'"):
        AStarLoss({"binarize": "kmeans"})
