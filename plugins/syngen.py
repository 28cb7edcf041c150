"""SynGen (Rassin et al., NeurIPS 2023): bind each modifier's attention to its noun's.

For every attribute binding and every (modifier ``m``, entity ``n``) pair::

    L_pos = dist(A_m, A_n)
    L_neg = -1/2 * [ mean_{u in U} dist(A_n, A_u) + mean_{u in U} dist(A_m, A_u) ]
    L     = sum over bindings, sum over pairs, of (L_pos + L_neg)

``A`` is a token's attention map read as a distribution over pixels, ``dist`` the symmetric KL
(:func:`attnguide.plugins._maps.symmetric_kl`), and ``U`` the prompt token positions outside
the binding. A word of several BPE pieces takes the max over its pieces, as the reference does.
``include_entities=True`` (the reference's option of that name) adds, for every entity ``n``
without modifiers, ``-mean_{u in U} dist(A_n, A_u)`` (no 1/2: there is no modifier term).
See docs/methods.md for every difference from the reference code.
"""

from __future__ import annotations

from typing import Literal

import pydantic

from attnguide import LossParams, LossPlugin
from attnguide.lazy import torch
from attnguide.types import AlignedBinding, AlignedWord, GuidanceContext, LossTerm, PromptAnalysis

from ._maps import as_float, symmetric_kl

Negatives = Literal["all_tokens", "other_bindings"]


class SynGenParams(LossParams):
    step_size: float = pydantic.Field(
        20.0, gt=0, description="constant alpha of every guided step (reference: 20)"
    )
    entities_only: bool = pydantic.Field(
        False, description="extension: guide only each entity's negative term"
    )
    negatives: Negatives = pydantic.Field(
        "all_tokens",
        description="U: every prompt token outside the binding (reference), "
        "or the words of the other bindings",
    )
    include_entities: bool = pydantic.Field(
        False,
        description="reference include_entities=True: also add -mean_{u in U} dist(A_n, A_u) "
        "for every entity without modifiers",
    )

    @pydantic.field_validator("include_entities")
    @classmethod
    def _not_with_entities_only(cls, value: bool, info: pydantic.ValidationInfo) -> bool:
        if value and info.data.get("entities_only"):
            raise ValueError("cannot be combined with entities_only=True (choose one entities mode)")
        return value


class DistanceTable:
    """Symmetric KL between the pieces of some words and a set of token positions.

    Computed once per ``compute`` call as one batched ``[rows, cols]`` tensor, then read by
    word: a word's distance takes the max over its pieces, as the SynGen reference does.

    Args:
        maps: ``[tokens, H, W]`` attention maps.
        rows: token positions whose distances are needed (the pieces of the guided words).
        cols: token positions they are compared with.
    """

    def __init__(self, maps: torch.Tensor, rows: list[int], cols: list[int]) -> None:
        self._row = {pos: k for k, pos in enumerate(rows)}
        self._col = {pos: k for k, pos in enumerate(cols)}
        self.values = symmetric_kl(maps[rows][:, None], maps[cols][None, :])  # [rows, cols]

    def _block(self, pieces: tuple[int, ...], positions: tuple[int, ...]) -> torch.Tensor:
        r = [self._row[p] for p in pieces]
        c = [self._col[p] for p in positions]
        return self.values[r][:, c]

    def between_words(self, a: AlignedWord, b: AlignedWord) -> torch.Tensor:
        """Max over piece pairs ``(a_i, b_j)`` of ``dist``: a scalar."""
        return self._block(a.tokens, b.tokens).max()

    def mean_to_outside(self, word: AlignedWord, outside: tuple[int, ...]) -> torch.Tensor:
        """``mean_{u in outside} max_i dist(word_i, A_u)``: a scalar (``outside`` non-empty)."""
        return self._block(word.tokens, outside).max(dim=0).values.mean()


def outside_positions(
    binding: AlignedBinding, analysis: PromptAnalysis, negatives: Negatives
) -> tuple[int, ...]:
    """``U`` for one binding, sorted.

    ``all_tokens``: every prompt token (no start or end token) not in the binding, function
    words included, as the reference does. ``other_bindings``: the token positions of the words
    of every other binding in ``analysis.bindings`` (with or without modifiers).
    """
    own = set(binding.positions)
    if negatives == "all_tokens":
        pool = set(analysis.tokens.prompt_positions)
    else:
        pool = {pos for other in analysis.bindings for pos in other.positions}
    return tuple(sorted(pool - own))


def guided_bindings(bindings: list[AlignedBinding]) -> list[AlignedBinding]:
    """Bindings whose entity and modifiers all have token positions (unaligned words dropped)."""
    out = []
    for b in bindings:
        if not b.entity.tokens:
            continue
        out.append(AlignedBinding(b.entity, tuple(m for m in b.modifiers if m.tokens)))
    return out


def distance_table(
    maps: torch.Tensor, units: list[tuple[AlignedBinding, tuple[int, ...]]]
) -> DistanceTable:
    """A :class:`DistanceTable` covering every binding word and its ``U`` in ``units``."""
    rows = sorted({pos for b, _ in units for pos in b.positions})
    cols = sorted({pos for b, outside in units for pos in (*b.positions, *outside)})
    return DistanceTable(maps, rows, cols)


def negative_term(
    table: DistanceTable, word: AlignedWord, outside: tuple[int, ...]
) -> torch.Tensor:
    """``-mean_{u in U} dist(word, A_u)``, or 0 when ``U`` is empty (as the reference)."""
    if not outside:
        return torch.zeros((), dtype=table.values.dtype, device=table.values.device)
    return -table.mean_to_outside(word, outside)


def pair_terms(
    table: DistanceTable, binding: AlignedBinding, outside: tuple[int, ...]
) -> list[tuple[AlignedWord, torch.Tensor, torch.Tensor]]:
    """``(modifier, L_pos, L_neg)`` for every modifier of ``binding`` (scalars)."""
    entity = binding.entity
    entity_neg = negative_term(table, entity, outside)
    terms = []
    for modifier in binding.modifiers:
        pos = table.between_words(modifier, entity)
        neg = (negative_term(table, modifier, outside) + entity_neg) / 2
        terms.append((modifier, pos, neg))
    return terms


def zero_with_graph(maps: torch.Tensor) -> torch.Tensor:
    """A scalar 0 that still depends on ``maps``, so the engine can differentiate it."""
    return maps.sum() * 0.0


class SynGenLoss(LossPlugin[SynGenParams]):
    """SynGen's attribute-binding loss on symmetric KL between pixel distributions."""

    name = "syngen"
    Params = SynGenParams
    # The reference guides while i < 25 of 50 steps.
    default_window = (0.0, 0.5)

    def compute(self, ctx: GuidanceContext, maps: torch.Tensor) -> LossTerm | None:
        params = self.params
        analysis = ctx.analysis
        every_entity = params.entities_only or params.include_entities
        source = analysis.bindings if every_entity else analysis.attribute_bindings
        bindings = guided_bindings(source)
        if not every_entity:
            bindings = [b for b in bindings if b.modifiers]
        if not bindings:
            return None
        units = [(b, outside_positions(b, analysis, params.negatives)) for b in bindings]
        table = distance_table(maps, units)

        if params.entities_only:
            neg = zero_with_graph(maps)
            for binding, outside in units:
                neg = neg + negative_term(table, binding.entity, outside)
            return LossTerm(
                value=neg, step_size=params.step_size, logs={"pos": 0.0, "neg": as_float(neg)}
            )

        pos_total = zero_with_graph(maps)
        neg_total = zero_with_graph(maps)
        for binding, outside in units:
            for _, pos, neg in pair_terms(table, binding, outside):
                pos_total = pos_total + pos
                neg_total = neg_total + neg
        if params.include_entities:
            # After every attribute binding, as the reference's merged subtree list orders them.
            for binding, outside in units:
                if not binding.modifiers:
                    neg_total = neg_total + negative_term(table, binding.entity, outside)
        value = pos_total + neg_total
        return LossTerm(
            value=value,
            step_size=params.step_size,
            logs={"pos": as_float(pos_total), "neg": as_float(neg_total)},
        )
