"""Built-in default implementations of run hooks (registered last in every run manager)."""

from __future__ import annotations

import torch

from ..plugin.hookspecs import hookimpl
from ..types import LossTerm


def combined_loss(terms: list[tuple[str, float, LossTerm]]) -> torch.Tensor:
    """``sum(weight * step_size * value)`` over the terms (a scalar tensor)."""
    return sum(weight * term.step_size * term.value for _, weight, term in terms)  # type: ignore[return-value]


@hookimpl(trylast=True)
def attnguide_update_latents(
    latents: torch.Tensor, terms: list[tuple[str, float, LossTerm]]
) -> torch.Tensor:
    """Gradient descent ``z <- z - grad(sum(w * alpha * L), z)``: for one plugin of weight 1,
    the references' ``z - alpha * grad L``."""
    if len(terms) == 1:
        # One term: grad first, then scale - the references' exact order of operations.
        _, weight, term = terms[0]
        if not term.value.requires_grad:
            return latents.detach()
        (grad,) = torch.autograd.grad(term.value, [latents])
        return (latents - (weight * term.step_size) * grad).detach()
    total = combined_loss(terms)
    if not total.requires_grad:
        return latents.detach()
    (grad,) = torch.autograd.grad(total, [latents])
    return (latents - grad).detach()
