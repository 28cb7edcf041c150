"""Tensor math shared by the built-in loss plugins.

Every function takes attention maps laid out as ``[..., H, W]`` (the engine hands plugins
``maps: [tokens, H, W]`` float32) and is differentiable where a loss needs it to be.

Two families live here:

* SynGen's distances: each map is read as a categorical distribution over its ``H * W`` pixels,
  computed exactly as ``torch.distributions.Categorical(probs=map.flatten())`` does (renormalise,
  then ``logits = log(clamp(probs, eps, 1 - eps))`` with ``eps = finfo(dtype).eps``).
* Attend-and-Excite's preprocessing: slice the token axis, multiply by 100, softmax over tokens,
  3x3 Gaussian smoothing with reflect padding; and its step-size schedule.
* A-STAR's binarisation of a map: relative to its maximum, or by Otsu's threshold.
"""

from __future__ import annotations

import math

from attnguide.lazy import F, np, torch

# Attend-and-Excite's smoothing and scaling constants (Chefer et al. 2023, reference code).
AE_KERNEL_SIZE = 3
AE_SIGMA = 0.5
AE_SOFTMAX_SCALE = 100.0
AE_SCALE_RANGE = (1.0, 0.5)


def pixel_distribution(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Read each map as a distribution over its pixels, as ``Categorical(probs=...)`` does.

    Args:
        maps: ``[..., H, W]`` non-negative.

    Returns:
        ``(probs, logits)``, both ``[..., H * W]``: ``probs`` sums to 1 over the last axis and
        ``logits = log(clamp(probs, eps, 1 - eps))``.
    """
    flat = maps.flatten(-2)
    probs = flat / flat.sum(-1, keepdim=True)
    eps = torch.finfo(probs.dtype).eps
    return probs, torch.log(probs.clamp(min=eps, max=1 - eps))


def _categorical_kl(
    p_probs: torch.Tensor, p_logits: torch.Tensor, q_probs: torch.Tensor, q_logits: torch.Tensor
) -> torch.Tensor:
    # Same terms and masks as torch's _kl_categorical_categorical: inf where q is 0, 0 where p is.
    terms = p_probs * (p_logits - q_logits)
    terms = torch.where(q_probs == 0, torch.full_like(terms, math.inf), terms)
    terms = torch.where(p_probs == 0, torch.zeros_like(terms), terms)
    return terms.sum(-1)


def symmetric_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """SynGen's distance: ``(KL(p || q) + KL(q || p)) / 2`` between pixel distributions.

    Identical to averaging ``torch.distributions.kl_divergence`` of the two
    ``Categorical(probs=map.reshape(-1))`` in both directions, as the SynGen reference does.

    Args:
        p, q: ``[..., H, W]`` non-negative, broadcastable against each other.

    Returns:
        ``[...]`` (the broadcast leading shape), ``inf`` where one map has mass on a pixel
        that the other has exactly zero.
    """
    p_probs, p_logits = pixel_distribution(p)
    q_probs, q_logits = pixel_distribution(q)
    kl_pq = _categorical_kl(p_probs, p_logits, q_probs, q_logits)
    kl_qp = _categorical_kl(q_probs, q_logits, p_probs, p_logits)
    return (kl_pq + kl_qp) / 2


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of each map normalised over its pixels.

    ``H = -sum_i p_i log p_i``, computed as ``Categorical(probs=...).entropy()`` does: pixels
    with zero mass contribute 0. Bounded by ``log(H * W)`` (5.545 for 16x16 maps).

    Args:
        p: ``[..., H, W]`` non-negative.

    Returns:
        ``[...]``.
    """
    probs, logits = pixel_distribution(p)
    return -(probs * logits).sum(-1)


def gaussian_kernel(
    kernel_size: int = AE_KERNEL_SIZE, sigma: float = AE_SIGMA, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Attend-and-Excite's 2-D smoothing kernel, ``[kernel_size, kernel_size]`` of ``dtype``.

    The reference builds each axis from ``exp(-((x - mean) / (2 * sigma)) ** 2)`` (note the
    ``2 * sigma`` inside the square: not the textbook Gaussian), multiplies the axes and
    normalises to sum 1; ``dtype`` defaults to float32. For size 3 and sigma 0.5 the 1-D weights are
    ``[0.21194, 0.57612, 0.21194]``.
    """
    x = torch.arange(kernel_size, dtype=torch.float32 if dtype is None else dtype)
    mean = (kernel_size - 1) / 2
    norm = 1 / (sigma * math.sqrt(2 * math.pi))
    axis = norm * torch.exp(-(((x - mean) / (2 * sigma)) ** 2))
    kernel = axis[:, None] * axis[None, :]
    return kernel / kernel.sum()


def gaussian_smooth(
    maps: torch.Tensor, kernel_size: int = AE_KERNEL_SIZE, sigma: float = AE_SIGMA
) -> torch.Tensor:
    """Smooth each map with :func:`gaussian_kernel` after reflect padding, as A&E does.

    Args:
        maps: ``[..., H, W]`` with ``H, W > kernel_size // 2`` (reflect padding needs it).

    Returns:
        ``[..., H, W]``, same dtype and device.
    """
    lead, (height, width) = maps.shape[:-2], maps.shape[-2:]
    pad = kernel_size // 2
    kernel = gaussian_kernel(kernel_size, sigma, maps.dtype).to(maps.device)
    x = maps.reshape(-1, 1, height, width)
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    return F.conv2d(x, kernel[None, None]).reshape(*lead, height, width)


def attend_excite_preprocess(maps: torch.Tensor, stop: int, start: int = 1) -> torch.Tensor:
    """A&E's token preprocessing: keep tokens ``start .. stop - 1``, scale by 100, softmax over them.

    Args:
        maps: ``[tokens, H, W]`` layer-averaged attention probabilities.
        stop: exclusive end of the token slice (``tokens - 1`` for the SD 1.x reference's
            ``[1:-1]``, the end-of-text position for its SD 2.x variant).
        start: the first prompt position: 1 after CLIP's start token (the reference), 0 for a
            tokenizer without one (T5, on Flux).

    Returns:
        ``[stop - start, H, W]``; row ``k`` belongs to token position ``k + start``.
    """
    return torch.softmax(maps[start:stop] * AE_SOFTMAX_SCALE, dim=0)


def attend_excite_step_size(step: int, num_steps: int, scale_factor: float) -> float:
    """A&E's step size ``scale_factor * sqrt(linspace(1.0, 0.5, num_steps)[step])``.

    Computed with numpy in float64, as the reference does (20.0 at step 0; ``20 * sqrt(0.5)``
    at the last of 50 steps).
    """
    scale_range = np.linspace(AE_SCALE_RANGE[0], AE_SCALE_RANGE[1], num_steps)
    return float(scale_factor * np.sqrt(scale_range[step]))


def binarize_relative_max(maps: torch.Tensor, threshold: float) -> torch.Tensor:
    """``1`` where a map reaches ``threshold`` times its own maximum, else ``0``.

    Args:
        maps: ``[..., H, W]``.

    Returns:
        ``[..., H, W]`` of 0/1 in ``maps.dtype``, detached.
    """
    maps = maps.detach()
    peak = maps.flatten(-2).amax(-1)[..., None, None]
    return (maps >= threshold * peak).to(maps.dtype)


def binarize_otsu(maps: torch.Tensor) -> torch.Tensor:
    """``1`` above each map's Otsu threshold, else ``0``.

    Otsu's split is searched exactly over the sorted pixel values (no histogram bins): the
    split maximising the between-class variance ``w0 * w1 * (mu0 - mu1) ** 2``; pixels above
    the largest value of the lower class are 1. A constant map has no split and is all 1.

    Args:
        maps: ``[..., H, W]``.

    Returns:
        ``[..., H, W]`` of 0/1 in ``maps.dtype``, detached.
    """
    flat = maps.detach().flatten(-2).double()  # [..., N]
    values, _ = flat.sort(-1)
    n = values.shape[-1]
    lower = torch.arange(1, n, dtype=flat.dtype, device=flat.device)  # size of the lower class
    cumsum = values.cumsum(-1)
    mu0 = cumsum[..., :-1] / lower
    mu1 = (cumsum[..., -1:] - cumsum[..., :-1]) / (n - lower)
    between = (lower / n) * (1 - lower / n) * (mu0 - mu1) ** 2
    splittable = values[..., :-1] < values[..., 1:]  # a split inside a run of ties is no split
    between = torch.where(splittable, between, torch.full_like(between, -1.0))
    cut = values.gather(-1, between.argmax(-1, keepdim=True))
    has_split = splittable.any(-1, keepdim=True)
    mask = torch.where(has_split, flat > cut, torch.ones_like(flat, dtype=torch.bool))
    return mask.to(maps.dtype).reshape(maps.shape)


def as_float(value: torch.Tensor) -> float:
    """A scalar tensor as a Python float for ``LossTerm.logs`` (detached first)."""
    return float(value.detach())
