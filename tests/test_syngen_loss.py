"""SynGen: L = sum over bindings and (modifier, entity) pairs of L_pos + L_neg."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from loss_helpers import binding, make_context, np_sym_kl, random_maps, syngen_reference_reading, word

from attnguide.errors import ConfigError
from attnguide.plugins.syngen import SynGenLoss


def hand_maps() -> torch.Tensor:
    """``[5, 2, 2]``: start, "a", "red", "car", end."""
    return torch.tensor(
        [
            [[5.0, 5.0], [5.0, 5.0]],
            [[1.0, 2.0], [3.0, 4.0]],  # a
            [[4.0, 3.0], [2.0, 1.0]],  # red
            [[2.0, 2.0], [1.0, 5.0]],  # car
            [[1.0, 1.0], [1.0, 1.0]],
        ],
        dtype=torch.float64,
    )


def red_car_context(**kwargs):
    return make_context([binding(word("car", 3), word("red", 2))], 3, **kwargs)


def test_syngen_loss_is_symmetric_kl_of_normalised_maps():
    maps = hand_maps()
    m = maps.numpy()
    pos = np_sym_kl(m[2], m[3])
    neg = -0.5 * (np_sym_kl(m[3], m[1]) + np_sym_kl(m[2], m[1]))  # U = {"a"}
    term = SynGenLoss().compute(red_car_context(), maps)
    assert term.value.item() == pytest.approx(pos + neg, rel=1e-10)
    assert term.logs["pos"] == pytest.approx(pos, rel=1e-10)
    assert term.logs["neg"] == pytest.approx(neg, rel=1e-10)


def test_syngen_loss_ignores_each_maps_scale_because_maps_are_normalised_per_token():
    maps = hand_maps()
    scaled = maps * torch.tensor([1.0, 3.0, 0.1, 100.0, 1.0], dtype=torch.float64)[:, None, None]
    a = SynGenLoss().compute(red_car_context(), maps).value.item()
    b = SynGenLoss().compute(red_car_context(), scaled).value.item()
    assert a == pytest.approx(b, rel=1e-10)


def test_syngen_multi_piece_words_take_the_max_over_pieces():
    # "a pur|ple ele|phant and dog": purple -> elephant; U = {a, and, dog}.
    maps = random_maps(9, size=2, seed=11)
    m = maps.numpy()
    ctx = make_context([binding(word("elephant", 4, 5), word("purple", 2, 3))], 7)
    pos = max(np_sym_kl(m[i], m[j]) for i in (2, 3) for j in (4, 5))
    outside = (1, 6, 7)
    neg_noun = np.mean([max(np_sym_kl(m[j], m[u]) for j in (4, 5)) for u in outside])
    neg_mod = np.mean([max(np_sym_kl(m[i], m[u]) for i in (2, 3)) for u in outside])
    term = SynGenLoss().compute(ctx, maps)
    assert term.value.item() == pytest.approx(pos - 0.5 * (neg_noun + neg_mod), rel=1e-10)


def test_syngen_sums_over_bindings_and_modifier_pairs():
    # "a big red car and a blue bird": (big, car), (red, car), (blue, bird).
    maps = random_maps(10, size=2, seed=5)
    m = maps.numpy()
    ctx = make_context(
        [
            binding(word("car", 4), word("big", 2), word("red", 3)),
            binding(word("bird", 8), word("blue", 7)),
        ],
        8,
    )

    def neg(a, b, outside):
        return -0.5 * (np.mean([np_sym_kl(m[b], m[u]) for u in outside])
                       + np.mean([np_sym_kl(m[a], m[u]) for u in outside]))

    u_car, u_bird = (1, 5, 6, 7, 8), (1, 2, 3, 4, 5, 6)
    expected = (
        np_sym_kl(m[2], m[4]) + neg(2, 4, u_car)
        + np_sym_kl(m[3], m[4]) + neg(3, 4, u_car)
        + np_sym_kl(m[7], m[8]) + neg(7, 8, u_bird)
    )
    assert SynGenLoss().compute(ctx, maps).value.item() == pytest.approx(expected, rel=1e-10)


def test_syngen_other_bindings_negatives_use_only_the_other_bindings_words():
    # "a red car and a dog": with other_bindings, U of (red, car) is {dog} only.
    maps = random_maps(7, size=2, seed=8)
    m = maps.numpy()
    ctx = make_context([binding(word("car", 3), word("red", 2)), binding(word("dog", 6))], 6)
    expected = np_sym_kl(m[2], m[3]) - 0.5 * (np_sym_kl(m[3], m[6]) + np_sym_kl(m[2], m[6]))
    loss = SynGenLoss({"negatives": "other_bindings"})
    assert loss.compute(ctx, maps).value.item() == pytest.approx(expected, rel=1e-10)


def test_syngen_negative_part_is_zero_when_nothing_lies_outside_the_binding():
    maps = random_maps(4, size=2, seed=1)  # "red car"
    m = maps.numpy()
    ctx = make_context([binding(word("car", 2), word("red", 1))], 2)
    term = SynGenLoss().compute(ctx, maps)
    assert term.value.item() == pytest.approx(np_sym_kl(m[1], m[2]), rel=1e-10)
    assert term.logs["neg"] == 0.0


def test_syngen_returns_none_without_attribute_bindings():
    maps = random_maps(5, size=2)
    assert SynGenLoss().compute(make_context([], 3), maps) is None
    assert SynGenLoss().compute(make_context([binding(word("dog", 2))], 3), maps) is None
    no_modifier_tokens = binding(word("car", 3), word("red"))  # modifier truncated away
    assert SynGenLoss().compute(make_context([no_modifier_tokens], 3), maps) is None


def test_syngen_entities_only_extension_applies_each_entitys_negative_term():
    # "a red car and a dog": car's U is outside its binding {a, and, a, dog}; dog's U {a..a}.
    maps = random_maps(7, size=2, seed=4)
    m = maps.numpy()
    ctx = make_context([binding(word("car", 3), word("red", 2)), binding(word("dog", 6))], 6)
    expected = -np.mean([np_sym_kl(m[3], m[u]) for u in (1, 4, 5, 6)]) - np.mean(
        [np_sym_kl(m[6], m[u]) for u in (1, 2, 3, 4, 5)]
    )
    term = SynGenLoss({"entities_only": True}).compute(ctx, maps)
    assert term.value.item() == pytest.approx(expected, rel=1e-10)
    assert SynGenLoss({"entities_only": True}).compute(make_context([], 3), maps) is None


def test_syngen_agrees_with_a_reading_of_the_reference_loop():
    maps = random_maps(12, size=4, seed=21) * 100
    bindings = [
        binding(word("elephant", 4, 5), word("pur", 2, 3), word("big", 1)),
        binding(word("cat", 9), word("blue", 8)),
        binding(word("tree", 10)),
    ]
    ctx = make_context(bindings, 10)
    subtrees = [[1, [2, 3], [4, 5]], [8, 9]]
    expected = syngen_reference_reading(maps, subtrees, range(1, 11))
    assert SynGenLoss().compute(ctx, maps).value.item() == pytest.approx(expected, rel=1e-9)


def test_syngen_gradient_is_finite_and_reaches_the_maps():
    maps = random_maps(5, size=4, seed=2, dtype=torch.float32).requires_grad_(True)
    SynGenLoss().compute(red_car_context(), maps).value.backward()
    assert torch.isfinite(maps.grad).all()
    assert maps.grad[1:4].abs().sum() > 0
    assert maps.grad[0].abs().sum() == 0 and maps.grad[4].abs().sum() == 0


def test_syngen_reference_defaults_window_25_of_50_and_step_size_20():
    loss = SynGenLoss()
    maps = random_maps(5, size=2)
    assert loss.default_window == (0.0, 0.5)
    guided = [i for i in range(50) if loss.attnguide_loss(red_car_context(step=i), maps) is not None]
    assert guided == list(range(25))
    assert loss.attnguide_loss(red_car_context(step=0), maps).step_size == 20.0
    assert loss.attnguide_loss(red_car_context(step=24), maps).step_size == 20.0


def test_syngen_parameter_errors_name_the_plugin_and_the_parameter():
    with pytest.raises(ConfigError, match=r"'syngen'.*'negatives'"):
        SynGenLoss({"negatives": "everything"})
    with pytest.raises(ConfigError, match=r"'syngen'.*'step_sise'"):
        SynGenLoss({"step_sise": 10})
    with pytest.raises(ConfigError, match=r"'syngen'.*'step_size'"):
        SynGenLoss({"step_size": -1})
