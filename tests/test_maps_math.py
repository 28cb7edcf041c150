"""Shared tensor math of the built-in losses: SynGen's distance, entropy, A&E's preprocessing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from loss_helpers import np_ae_process, np_ae_weights, np_smooth, random_maps

from attnguide.plugins._maps import (
    attend_excite_preprocess,
    attend_excite_step_size,
    binarize_otsu,
    binarize_relative_max,
    entropy,
    gaussian_kernel,
    gaussian_smooth,
    symmetric_kl,
)


def torch_distributions_sym_kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """What the SynGen reference computes: Categorical on flattened maps, KL both ways."""
    p = torch.distributions.Categorical(probs=a.reshape(-1))
    q = torch.distributions.Categorical(probs=b.reshape(-1))
    return (torch.distributions.kl_divergence(p, q) + torch.distributions.kl_divergence(q, p)) / 2


def test_symmetric_kl_by_hand_on_2x2_maps():
    p = torch.tensor([[3.0, 3.0], [3.0, 3.0]])  # uniform after renormalisation
    q = torch.tensor([[0.1, 0.2], [0.3, 0.4]])
    qs = [0.1, 0.2, 0.3, 0.4]
    kl_pq = sum(0.25 * math.log(0.25 / x) for x in qs)
    kl_qp = sum(x * math.log(x / 0.25) for x in qs)
    assert symmetric_kl(p, q).item() == pytest.approx((kl_pq + kl_qp) / 2, rel=1e-6)
    assert symmetric_kl(p, q).item() == pytest.approx(symmetric_kl(q, p).item(), rel=1e-7)
    assert symmetric_kl(q, q).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_symmetric_kl_matches_torch_distributions_value_and_gradient(dtype):
    maps = random_maps(6, size=4, seed=3, dtype=dtype) * 100  # the reference scales by 100
    maps.requires_grad_(True)
    ours = symmetric_kl(maps[:, None], maps[None, :])  # [6, 6] batched
    ref = torch.stack(
        [torch.stack([torch_distributions_sym_kl(maps[i], maps[j]) for j in range(6)])
         for i in range(6)]
    )
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)
    (g_ours,) = torch.autograd.grad(ours.sum(), maps)
    (g_ref,) = torch.autograd.grad(ref.sum(), maps)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-5, atol=tol)


def test_symmetric_kl_is_inf_where_a_map_has_zero_mass_and_ignores_shared_zeros():
    p = torch.tensor([[0.5, 0.5], [0.0, 0.0]])
    q = torch.tensor([[0.25, 0.25], [0.25, 0.25]])
    r = torch.tensor([[0.2, 0.8], [0.0, 0.0]])
    assert symmetric_kl(p, q).item() == math.inf
    assert torch_distributions_sym_kl(p, q).item() == math.inf
    # Zeros on the same pixels contribute nothing: a finite distance over the two live pixels.
    expected = (0.5 * math.log(0.5 / 0.2) + 0.5 * math.log(0.5 / 0.8)
                + 0.2 * math.log(0.2 / 0.5) + 0.8 * math.log(0.8 / 0.5)) / 2
    assert symmetric_kl(p, r).item() == pytest.approx(expected, rel=1e-6)
    assert torch_distributions_sym_kl(p, r).item() == pytest.approx(expected, rel=1e-6)


def test_entropy_of_a_map_normalised_over_pixels():
    uniform = torch.full((2, 2), 7.0)
    assert entropy(uniform).item() == pytest.approx(math.log(4), rel=1e-6)
    one_hot = torch.tensor([[0.0, 0.0], [0.0, 5.0]])
    assert entropy(one_hot).item() == pytest.approx(0.0, abs=1e-6)
    q = torch.tensor([[0.1, 0.2], [0.3, 0.4]])
    expected = -sum(x * math.log(x) for x in [0.1, 0.2, 0.3, 0.4])
    assert entropy(q).item() == pytest.approx(expected, rel=1e-6)
    batch = random_maps(5, size=16, seed=1)
    ref = torch.stack([torch.distributions.Categorical(probs=m.reshape(-1)).entropy() for m in batch])
    torch.testing.assert_close(entropy(batch), ref)
    assert (entropy(batch) <= math.log(256) + 1e-9).all()


def test_gaussian_kernel_has_the_reference_weights():
    kernel = gaussian_kernel()
    weights = torch.tensor([0.21194, 0.57612, 0.21194])
    assert kernel.shape == (3, 3)
    # Each row sums to its 1-D weight (the kernel is the outer product of the 1-D weights).
    torch.testing.assert_close(kernel.sum(1), weights, atol=1e-5, rtol=0)
    torch.testing.assert_close(kernel, torch.outer(weights, weights), atol=1e-5, rtol=0)
    assert kernel.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert np_ae_weights() == pytest.approx([0.21194, 0.57612, 0.21194], abs=1e-5)


def test_gaussian_smoothing_uses_reflect_padding():
    maps = random_maps(3, size=4, seed=7)
    smoothed = gaussian_smooth(maps)
    for k in range(3):
        np.testing.assert_allclose(smoothed[k].numpy(), np_smooth(maps[k].numpy()), rtol=1e-12)
    # 2x2 by hand: reflect padding makes the 3x3 window of (0, 0) [[d,c,d],[b,a,b],[d,c,d]].
    a, b, c, d = 1.0, 2.0, 3.0, 4.0
    w0, w1 = np_ae_weights()[0], np_ae_weights()[1]
    expected = w1 * w1 * a + 2 * w0 * w1 * (b + c) + 4 * w0 * w0 * d
    out = gaussian_smooth(torch.tensor([[a, b], [c, d]], dtype=torch.float64))
    assert out[0, 0].item() == pytest.approx(expected, rel=1e-12)
    constant = torch.full((1, 4, 4), 0.3)
    torch.testing.assert_close(gaussian_smooth(constant), constant)


def test_attend_excite_preprocess_is_softmax_over_sliced_tokens_times_100():
    maps = random_maps(6, size=2, seed=2)
    out = attend_excite_preprocess(maps, stop=5)  # tokens 1..4
    assert out.shape == (4, 2, 2)
    np.testing.assert_allclose(out.numpy(), np_ae_process(maps.numpy(), 5), rtol=1e-10)
    torch.testing.assert_close(out.sum(0), torch.ones(2, 2, dtype=out.dtype))


def test_attend_excite_step_size_schedule():
    assert attend_excite_step_size(0, 50, 20.0) == 20.0
    assert attend_excite_step_size(49, 50, 20.0) == pytest.approx(20 * math.sqrt(0.5), abs=1e-12)
    assert attend_excite_step_size(10, 50, 20.0) == pytest.approx(
        20 * math.sqrt(1.0 - 0.5 * 10 / 49), abs=1e-12
    )


def test_binarize_relative_max_keeps_pixels_at_or_above_the_fraction_of_the_peak():
    maps = torch.tensor([[[0.1, 0.5], [0.9, 1.0]], [[2.0, 0.0], [0.0, 0.99]]])
    masks = binarize_relative_max(maps, 0.5)
    assert masks.tolist() == [[[0.0, 1.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, 0.0]]]


def test_binarize_otsu_splits_a_bimodal_map_and_keeps_a_constant_one():
    two_maps = torch.tensor([[[0.0, 0.1, 0.05, 0.9]], [[1.0, 0.95, 0.1, 0.0]]])  # [2, 1, 4]
    assert binarize_otsu(two_maps).tolist() == [[[0.0, 0.0, 0.0, 1.0]], [[1.0, 1.0, 0.0, 0.0]]]
    # By hand, values 1, 2, 6: {1}|{2,6} -> (1/3)(2/3)(1-4)^2 = 2; {1,2}|{6} -> (2/9)(4.5)^2 = 4.5.
    assert binarize_otsu(torch.tensor([[1.0, 2.0, 6.0]])).tolist() == [[0.0, 0.0, 1.0]]
    assert binarize_otsu(torch.full((2, 2), 0.4)).tolist() == [[1.0, 1.0], [1.0, 1.0]]
