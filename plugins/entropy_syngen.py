"""SynGen with entropy terms: bound maps are also pushed to be concentrated.

With ``H(A) = -sum_i A_i log A_i`` over a map normalised over pixels (``_maps.entropy``)::

    L_pos = sum_b sum_(m,n) [ dist(A_m, A_n) + lambda * (H(A_m) + H(A_n)) ]
    L_neg = -sum_b 1/|U| sum_(m,n) sum_{u in U} 1/2 [ dist(A_m, A_u) + dist(A_u, A_n)
                                                      - gamma * H(A_u) ]
    L     = L_pos + L_neg

With ``lambda = gamma = 0`` this is SynGen exactly (same value, same gradient). Minimising the
formula as written *lowers* ``H(A_u)`` of the unrelated tokens; ``unrelated_entropy="diffuse"``
flips the sign of the gamma term so unrelated maps are pushed to be more diffuse instead.
Multi-piece words: ``dist`` takes the max over pieces (as SynGen), ``H`` the mean over pieces.
"""

from __future__ import annotations

from typing import Literal

import pydantic

from attnguide import LossParams, LossPlugin
from attnguide.lazy import torch
from attnguide.types import AlignedWord, GuidanceContext, LossTerm

from ._maps import as_float, entropy
from .syngen import (
    Negatives,
    distance_table,
    guided_bindings,
    outside_positions,
    pair_terms,
    zero_with_graph,
)


class EntropySynGenParams(LossParams):
    step_size: float = pydantic.Field(20.0, gt=0, description="constant alpha (as SynGen)")
    lambda_entropy: float = pydantic.Field(
        0.1, ge=0, description="weight of H(A_m) + H(A_n) in the positive term"
    )
    gamma_entropy: float = pydantic.Field(
        0.1, ge=0, description="weight of H(A_u) of unrelated tokens in the negative term"
    )
    unrelated_entropy: Literal["as_written", "diffuse"] = pydantic.Field(
        "as_written",
        description="as_written: minimising lowers H(A_u); diffuse: raises it",
    )
    negatives: Negatives = pydantic.Field("all_tokens", description="U, as SynGen")


class EntropySynGenLoss(LossPlugin[EntropySynGenParams]):
    """SynGen's loss plus entropy terms on the bound and the unrelated tokens' maps."""

    name = "entropy_syngen"
    Params = EntropySynGenParams
    default_window = (0.0, 0.5)

    def compute(self, ctx: GuidanceContext, maps: torch.Tensor) -> LossTerm | None:
        params = self.params
        bindings = [b for b in guided_bindings(ctx.analysis.attribute_bindings) if b.modifiers]
        if not bindings:
            return None
        units = [(b, outside_positions(b, ctx.analysis, params.negatives)) for b in bindings]
        table = distance_table(maps, units)
        positions = sorted({p for b, outside in units for p in (*b.positions, *outside)})
        row = {p: k for k, p in enumerate(positions)}
        entropies = entropy(maps[positions])  # [len(positions)]

        def word_entropy(word: AlignedWord) -> torch.Tensor:
            return entropies[[row[p] for p in word.tokens]].mean()

        # as_written: -1/2 * (-gamma * H) = +gamma/2 * H, so minimising lowers H(A_u).
        sign = 1.0 if params.unrelated_entropy == "as_written" else -1.0
        pos_total = zero_with_graph(maps)
        neg_total = zero_with_graph(maps)
        entropy_pos = zero_with_graph(maps)
        entropy_neg = zero_with_graph(maps)
        for binding, outside in units:
            entity_h = word_entropy(binding.entity)
            outside_h = entropies[[row[u] for u in outside]].mean() if outside else None
            for modifier, pos, neg in pair_terms(table, binding, outside):
                # Zero weights are skipped, not multiplied, so lambda = gamma = 0 is SynGen to
                # the last bit, value and gradient.
                if params.lambda_entropy:
                    term = params.lambda_entropy * (word_entropy(modifier) + entity_h)
                    pos = pos + term
                    entropy_pos = entropy_pos + term
                if params.gamma_entropy and outside_h is not None:
                    term = sign * params.gamma_entropy / 2 * outside_h
                    neg = neg + term
                    entropy_neg = entropy_neg + term
                pos_total = pos_total + pos
                neg_total = neg_total + neg
        value = pos_total + neg_total
        return LossTerm(
            value=value,
            step_size=params.step_size,
            logs={
                "pos": as_float(pos_total),
                "neg": as_float(neg_total),
                "entropy_pos": as_float(entropy_pos),
                "entropy_neg": as_float(entropy_neg),
            },
        )
