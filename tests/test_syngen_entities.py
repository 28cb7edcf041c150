"""SynGen's include_entities (the reference's option): a negative term for every bare entity.

The reference (``include_entities=True``) adds each noun as a one-word subtree, merges it into
the attribute subtree that already holds it, and gives a subtree without modifiers the noun's
negative term alone: ``-mean_{u in U} max_i dist(A_n_i, A_u)``, no 1/2 factor, ``U`` every
prompt token outside the noun.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from loss_helpers import binding, make_context, np_sym_kl, random_maps, syngen_reference_reading, word

from attnguide.errors import ConfigError
from attnguide.plugins.syngen import SynGenLoss
from attnguide.testing import run_plugin

# "red car dog": start, red, car, dog, end. Each row a 2x2 map, written as 4 pixel values.
HAND = [
    [1.0, 1.0, 1.0, 1.0],  # start
    [4.0, 3.0, 2.0, 1.0],  # red
    [2.0, 2.0, 1.0, 5.0],  # car
    [1.0, 6.0, 2.0, 1.0],  # dog
    [1.0, 1.0, 1.0, 1.0],  # end
]


def kl_by_hand(a: list[float], b: list[float]) -> float:
    """KL(p || q) of two maps normalised over their pixels, term by term."""
    sa, sb = sum(a), sum(b)
    return sum((x / sa) * math.log((x / sa) / (y / sb)) for x, y in zip(a, b))


def sym_by_hand(i: int, j: int) -> float:
    return (kl_by_hand(HAND[i], HAND[j]) + kl_by_hand(HAND[j], HAND[i])) / 2


def hand_maps() -> torch.Tensor:
    return torch.tensor(HAND, dtype=torch.float64).reshape(5, 2, 2)


def red_car_dog():
    return make_context([binding(word("car", 2), word("red", 1)), binding(word("dog", 3))], 3)


def test_include_entities_adds_the_bare_entitys_mean_distance_to_everything_outside_it():
    red, car, dog = 1, 2, 3
    attribute = sym_by_hand(red, car) - 0.5 * (sym_by_hand(car, dog) + sym_by_hand(red, dog))
    bare_dog = -(sym_by_hand(dog, red) + sym_by_hand(dog, car)) / 2  # mean over U = {red, car}
    maps = hand_maps()
    plain = SynGenLoss().compute(red_car_dog(), maps)
    with_entities = SynGenLoss({"include_entities": True}).compute(red_car_dog(), maps)
    assert plain.value.item() == pytest.approx(attribute, rel=1e-12)
    assert with_entities.value.item() == pytest.approx(attribute + bare_dog, rel=1e-12)
    assert with_entities.logs["pos"] == pytest.approx(sym_by_hand(red, car), rel=1e-12)
    assert with_entities.logs["neg"] == pytest.approx(attribute - sym_by_hand(red, car) + bare_dog, rel=1e-12)


def test_include_entities_alone_gives_a_loss_where_plain_syngen_gives_none():
    # "a cat and a dog": no modifiers, so plain SynGen has no term (the reference's loss 0).
    maps = random_maps(7, size=2, seed=3)
    m = maps.numpy()
    ctx = make_context([binding(word("cat", 2)), binding(word("dog", 5))], 5)
    expected = -np.mean([np_sym_kl(m[2], m[u]) for u in (1, 3, 4, 5)]) - np.mean(
        [np_sym_kl(m[5], m[u]) for u in (1, 2, 3, 4)]
    )
    assert SynGenLoss().compute(ctx, maps) is None
    term = SynGenLoss({"include_entities": True}).compute(ctx, maps)
    assert term.value.item() == pytest.approx(expected, rel=1e-10)
    assert term.logs["pos"] == 0.0
    assert SynGenLoss({"include_entities": True}).compute(make_context([], 3), maps) is None


def test_include_entities_takes_the_max_over_a_bare_entitys_pieces():
    # "a red car and an ele|phant": elephant's U = {a, red, car, and, an}.
    maps = random_maps(9, size=2, seed=12)
    m = maps.numpy()
    ctx = make_context([binding(word("car", 3), word("red", 2)), binding(word("elephant", 6, 7))], 7)
    plain = SynGenLoss().compute(ctx, maps).value.item()
    bare = -np.mean([max(np_sym_kl(m[6], m[u]), np_sym_kl(m[7], m[u])) for u in (1, 2, 3, 4, 5)])
    term = SynGenLoss({"include_entities": True}).compute(ctx, maps)
    assert term.value.item() == pytest.approx(plain + bare, rel=1e-10)


def test_include_entities_follows_the_negatives_option():
    # other_bindings: dog's U is the words of the other binding, {red, car}, not "a" or "and".
    maps = random_maps(7, size=2, seed=8)
    m = maps.numpy()
    ctx = make_context([binding(word("car", 3), word("red", 2)), binding(word("dog", 6))], 6)
    params = {"negatives": "other_bindings"}
    plain = SynGenLoss(params).compute(ctx, maps).value.item()
    term = SynGenLoss({**params, "include_entities": True}).compute(ctx, maps)
    bare = -(np_sym_kl(m[6], m[2]) + np_sym_kl(m[6], m[3])) / 2
    assert term.value.item() == pytest.approx(plain + bare, rel=1e-10)


def test_include_entities_treats_an_entity_whose_modifiers_have_no_tokens_as_bare():
    # "red" truncated away: the reference's subtree [car] is bare, so car gets the bare term.
    maps = random_maps(6, size=2, seed=2)
    m = maps.numpy()
    ctx = make_context([binding(word("car", 2), word("red")), binding(word("dog", 4))], 4)
    expected = -np.mean([np_sym_kl(m[2], m[u]) for u in (1, 3, 4)]) - np.mean(
        [np_sym_kl(m[4], m[u]) for u in (1, 2, 3)]
    )
    term = SynGenLoss({"include_entities": True}).compute(ctx, maps)
    assert term.value.item() == pytest.approx(expected, rel=1e-10)


def test_include_entities_agrees_with_a_reading_of_the_reference_loop():
    # "a big pur|ple ele|phant , a blue cat , a tree and a ro|se": two bare entities.
    maps = random_maps(17, size=4, seed=21) * 100
    bindings = [
        binding(word("elephant", 4, 5), word("purple", 2, 3), word("big", 1)),
        binding(word("cat", 9), word("blue", 8)),
        binding(word("tree", 12)),
        binding(word("rose", 14, 15)),
    ]
    ctx = make_context(bindings, 15)
    subtrees = [[1, [2, 3], [4, 5]], [8, 9], [12], [[14, 15]]]
    expected = syngen_reference_reading(maps, subtrees, range(1, 16), include_entities=True)
    term = SynGenLoss({"include_entities": True}).compute(ctx, maps)
    assert term.value.item() == pytest.approx(expected, rel=1e-9)


def test_include_entities_gradient_reaches_a_bare_entity_that_no_other_term_reads():
    # "a cat and a dog": only the bare terms read the maps; the end token's map is never read.
    maps = random_maps(7, size=4, seed=2, dtype=torch.float32).requires_grad_(True)
    ctx = make_context([binding(word("cat", 2)), binding(word("dog", 5))], 5)
    SynGenLoss({"include_entities": True}).compute(ctx, maps).value.backward()
    assert torch.isfinite(maps.grad).all()
    assert maps.grad[2].abs().sum() > 0 and maps.grad[5].abs().sum() > 0
    assert maps.grad[0].abs().sum() == 0 and maps.grad[6].abs().sum() == 0


def test_include_entities_with_entities_only_is_an_error_naming_both():
    with pytest.raises(ConfigError, match=r"'syngen'.*'include_entities'.*entities_only"):
        SynGenLoss({"entities_only": True, "include_entities": True})


def test_include_entities_guides_bare_nouns_end_to_end_on_the_tiny_model():
    prompt, bindings = "a cat and a dog", {"cat": [], "dog": []}
    assert run_plugin("syngen", prompt, bindings, steps=2) == []
    records = run_plugin({"name": "syngen", "include_entities": True}, prompt, bindings, steps=2)
    assert [r.step for r in records] == [0]  # the window: the first half of 2 steps
    assert records[0].plugin == "syngen" and records[0].value < 0
    assert math.isfinite(records[0].value)
