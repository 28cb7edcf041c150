"""Entropy-SynGen: SynGen plus lambda * (H(A_m) + H(A_n)) and a gamma * H(A_u) term."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from loss_helpers import binding, make_context, np_entropy, np_sym_kl, random_maps, word

from attnguide.errors import ConfigError
from attnguide.plugins._maps import entropy
from attnguide.plugins.entropy_syngen import EntropySynGenLoss
from attnguide.plugins.syngen import SynGenLoss


def two_binding_context(**kwargs):
    # "a big pur|ple ele|phant and a blue cat": elephant <- big, purple; cat <- blue.
    return make_context(
        [
            binding(word("elephant", 5, 6), word("big", 2), word("purple", 3, 4)),
            binding(word("cat", 10), word("blue", 9)),
        ],
        10,
        **kwargs,
    )


@pytest.mark.parametrize("negatives", ["all_tokens", "other_bindings"])
def test_entropy_syngen_with_zero_weights_is_syngen_exactly_value_and_gradient(negatives):
    base = random_maps(12, size=4, seed=13, dtype=torch.float32)
    maps_a = base.clone().requires_grad_(True)
    maps_b = base.clone().requires_grad_(True)
    ours = EntropySynGenLoss(
        {"lambda_entropy": 0.0, "gamma_entropy": 0.0, "negatives": negatives}
    ).compute(two_binding_context(), maps_a)
    syngen = SynGenLoss({"negatives": negatives}).compute(two_binding_context(), maps_b)
    assert torch.equal(ours.value.detach(), syngen.value.detach())
    ours.value.backward()
    syngen.value.backward()
    assert torch.equal(maps_a.grad, maps_b.grad)
    assert ours.step_size == syngen.step_size == 20.0


def test_entropy_syngen_adds_the_entropy_terms_by_hand():
    # "a red car": one pair (red, car), U = {a}.
    maps = random_maps(5, size=2, seed=3)
    m = maps.numpy()
    lam, gam = 0.3, 0.7
    pos = np_sym_kl(m[2], m[3]) + lam * (np_entropy(m[2]) + np_entropy(m[3]))
    neg = -0.5 * (np_sym_kl(m[2], m[1]) + np_sym_kl(m[1], m[3]) - gam * np_entropy(m[1]))
    ctx = make_context([binding(word("car", 3), word("red", 2))], 3)
    term = EntropySynGenLoss({"lambda_entropy": lam, "gamma_entropy": gam}).compute(ctx, maps)
    assert term.value.item() == pytest.approx(pos + neg, rel=1e-10)
    assert term.logs["pos"] == pytest.approx(pos, rel=1e-10)
    assert term.logs["neg"] == pytest.approx(neg, rel=1e-10)
    assert term.logs["entropy_neg"] == pytest.approx(0.5 * gam * np_entropy(m[1]), rel=1e-10)


def test_entropy_syngen_unrelated_term_averages_over_u_once_per_pair():
    # "a big red car and": pairs (big, car), (red, car); U = {a, and}.
    maps = random_maps(7, size=2, seed=9)
    m = maps.numpy()
    gam = 0.4
    ctx = make_context([binding(word("car", 4), word("big", 2), word("red", 3))], 5)
    with_gamma = EntropySynGenLoss({"lambda_entropy": 0.0, "gamma_entropy": gam}).compute(ctx, maps)
    without = EntropySynGenLoss({"lambda_entropy": 0.0, "gamma_entropy": 0.0}).compute(ctx, maps)
    mean_h = np.mean([np_entropy(m[1]), np_entropy(m[5])])
    expected = 2 * 0.5 * gam * mean_h
    assert with_gamma.value.item() - without.value.item() == pytest.approx(expected, rel=1e-9)


def test_entropy_syngen_multi_piece_entropy_is_the_mean_over_pieces():
    maps = random_maps(8, size=2, seed=4)
    m = maps.numpy()
    ctx = make_context([binding(word("elephant", 3, 4), word("purple", 1, 2))], 6)
    lam = 0.5
    with_lambda = EntropySynGenLoss({"lambda_entropy": lam, "gamma_entropy": 0.0}).compute(ctx, maps)
    without = EntropySynGenLoss({"lambda_entropy": 0.0, "gamma_entropy": 0.0}).compute(ctx, maps)
    h_mod = (np_entropy(m[1]) + np_entropy(m[2])) / 2
    h_ent = (np_entropy(m[3]) + np_entropy(m[4])) / 2
    assert with_lambda.value.item() - without.value.item() == pytest.approx(
        lam * (h_mod + h_ent), rel=1e-9
    )


@pytest.mark.parametrize("mode, direction", [("as_written", -1), ("diffuse", +1)])
def test_entropy_syngen_unrelated_entropy_sign_option(mode, direction):
    """A descent step on the gamma term alone lowers H(A_u) as written, raises it if diffuse."""
    maps = random_maps(5, size=4, seed=6).requires_grad_(True)
    ctx = make_context([binding(word("car", 3), word("red", 2))], 3)
    params = {"lambda_entropy": 0.0, "unrelated_entropy": mode}
    with_gamma = EntropySynGenLoss({**params, "gamma_entropy": 1.0}).compute(ctx, maps)
    without = EntropySynGenLoss({**params, "gamma_entropy": 0.0}).compute(ctx, maps)
    gamma_part = with_gamma.value - without.value
    assert gamma_part.item() == pytest.approx(-direction * 0.5 * entropy(maps[1]).item(), rel=1e-9)
    (grad,) = torch.autograd.grad(gamma_part, maps)
    stepped = (maps - 0.01 * grad).detach()
    change = entropy(stepped[1]).item() - entropy(maps[1]).item()
    assert np.sign(change) == direction


def test_entropy_syngen_returns_none_without_attribute_bindings():
    maps = random_maps(5, size=2)
    assert EntropySynGenLoss().compute(make_context([binding(word("dog", 2))], 3), maps) is None


def test_entropy_syngen_defaults():
    loss = EntropySynGenLoss()
    assert loss.default_window == (0.0, 0.5)
    assert loss.params.step_size == 20.0
    assert (loss.params.lambda_entropy, loss.params.gamma_entropy) == (0.1, 0.1)
    assert loss.params.unrelated_entropy == "as_written"
    assert loss.params.negatives == "all_tokens"


def test_entropy_syngen_parameter_errors_name_the_plugin_and_the_parameter():
    with pytest.raises(ConfigError, match=r"'entropy_syngen'.*'unrelated_entropy'"):
        EntropySynGenLoss({"unrelated_entropy": "sharpen"})
    with pytest.raises(ConfigError, match=r"'entropy_syngen'.*'lambda_entropy'"):
        EntropySynGenLoss({"lambda_entropy": -0.1})
