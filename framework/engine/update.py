"""Built-in default implementations of run hooks (registered last in every run manager), and
the same latent update for several images in one backward pass."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..plugin.hookspecs import hookimpl
from ..types import LossTerm


def combined_loss(terms: list[tuple[str, float, LossTerm]]) -> torch.Tensor:
    """``sum(weight * step_size * value)`` over the terms (a scalar tensor)."""
    return sum(weight * term.step_size * term.value for _, weight, term in terms)  # type: ignore[return-value]


def objective(terms: list[tuple[str, float, LossTerm]]) -> tuple[torch.Tensor, float]:
    """What the default update differentiates, and the factor on its gradient: one term is
    differentiated unscaled and then scaled by ``weight * step_size`` (the references' exact
    order of operations); several are summed scaled (factor 1.0: ``z - 1.0 * g`` is ``z - g``
    bit for bit)."""
    if len(terms) == 1:
        _, weight, term = terms[0]
        return term.value, weight * term.step_size
    return combined_loss(terms), 1.0


@hookimpl(trylast=True)
def attnguide_update_latents(
    latents: torch.Tensor, terms: list[tuple[str, float, LossTerm]]
) -> torch.Tensor:
    """Gradient descent ``z <- z - grad(sum(w * alpha * L), z)``: for one plugin of weight 1,
    the references' ``z - alpha * grad L``."""
    value, factor = objective(terms)
    if not value.requires_grad:
        return latents.detach()
    (grad,) = torch.autograd.grad(value, [latents])
    return (latents - factor * grad).detach()


DEFAULT_UPDATE = "attnguide.engine.update"
"""Plugin name under which this module is registered in every run manager."""


@dataclass
class Descent:
    """One image's gradient step in a batched update.

    Attributes:
        leaf: the grad-requiring latents ``[k, C, h, w]`` of the forward the terms came from.
        row: this image's row in ``leaf``.
        terms: its ``(name, weight, term)`` list, finite and not all zero.
    """

    leaf: torch.Tensor
    row: int
    terms: list[tuple[str, float, LossTerm]]


def descend(steps: Sequence[Descent]) -> list[torch.Tensor]:
    """``attnguide_update_latents``'s default step for several images with one backward pass.

    Each image's objective depends on its own row only, so the gradient of their sum w.r.t. a
    row is that image's gradient; each is scaled as in the hook (``objective``). Returns one detached
    ``[1, C, h, w]`` per step, in order (an objective without a graph leaves its row unchanged).
    """
    objectives: list[torch.Tensor] = []
    scales: list[float | None] = []
    for step in steps:
        value, factor = objective(step.terms)
        objectives.append(value)
        scales.append(factor if value.requires_grad else None)
    wanted = [o for o, s in zip(objectives, scales) if s is not None]
    leaves = list({id(step.leaf): step.leaf for step, s in zip(steps, scales) if s is not None}.values())
    grads = dict(zip(map(id, leaves), torch.autograd.grad(wanted, leaves, allow_unused=True))) if wanted else {}
    out = []
    for step, scale in zip(steps, scales):
        z = step.leaf[step.row : step.row + 1]
        grad = grads.get(id(step.leaf))
        if scale is None or grad is None:
            out.append(z.detach())
        else:
            out.append((z - scale * grad[step.row : step.row + 1]).detach())
    return out
