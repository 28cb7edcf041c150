"""CONFORM (Meral et al., CVPR 2024): contrast the attention maps of the prompt's token groups.

Per the official code (``gemlab-vt/CONFORM``, ``pipeline_conform.py``, commit 4ad0e37).
Every binding of the prompt (an entity with its modifiers) is one *group*, i.e. one class;
every token position of a group is one embedding, its map smoothed with A&E's 3x3 Gaussian
and flattened: ``e_p = vec(smooth(A_p))`` in ``R^{H*W}``. The same positions' maps from the
previous guided step (``ctx.previous_maps``, detached) join as further embeddings with their
group's label, so each token is also a positive of its own earlier map. With cosine
similarity ``s_ij = e_i . e_j / (|e_i| |e_j|)`` and the ordered pairs ``P`` (same label,
``i != j``) and ``N`` (different labels), the loss is NT-Xent (temperature ``tau = 0.5``)::

    L_ntxent = mean over (a, p) in P of
               -log( exp(s_ap / tau) / (exp(s_ap / tau) + sum_{n: (a, n) in N} exp(s_an / tau)) )

or the contrastive loss with cosine similarity, margins 1 (positives) and 0 (negatives),
each part averaged over its non-zero pair losses::

    L_contrastive = mean_{(a, p) in P, > 0} relu(1 - s_ap) + mean_{(a, n) in N, > 0} relu(s_an)

exactly as pytorch-metric-learning's ``NTXentLoss`` and ``ContrastiveLoss`` (v2.5.0,
all-pairs mining, ``MeanReducer`` / ``AvgNonZeroReducer``) compute them. The step size is
``scale_factor * sqrt(linspace(1, 0.5, T)[i])``; at steps 0, 10 and 20 (of 50) the engine
refines for exactly ``refinement_iterations = 20`` iterations, with no threshold. See
docs/methods.md for every difference from the official code.
"""

from __future__ import annotations

import math
from typing import Literal

import pydantic

from attnguide import LossParams, LossPlugin
from attnguide.lazy import F, torch
from attnguide.types import GuidanceContext, LossTerm, PromptAnalysis

from ._maps import as_float, attend_excite_preprocess, attend_excite_step_size, gaussian_smooth
from .attend_excite import TokenSlice, refinement_thresholds, slice_start, slice_stop

LossKind = Literal["ntxent", "contrastive", "ntxent_contrastive"]


class ConformParams(LossParams):
    loss: LossKind = pydantic.Field(
        "ntxent",
        description="ntxent, contrastive (cosine, margins 1/0), or ntxent_contrastive: "
        "NT-Xent when the first group has several tokens, else contrastive",
    )
    temperature: float = pydantic.Field(0.5, gt=0, description="tau of NT-Xent")
    scale_factor: float = pydantic.Field(
        20.0, gt=0, description="alpha_t = scale_factor * sqrt(linspace(1, 0.5, T)[t])"
    )
    refine_at: tuple[pydantic.NonNegativeInt, ...] = pydantic.Field(
        (0, 10, 20), description="steps (of a 50-step schedule) refined without a threshold"
    )
    refinement_iterations: int = pydantic.Field(
        20, ge=0, description="refinement iterations at each refine_at step (0: none)"
    )
    add_previous_maps: bool = pydantic.Field(
        True, description="add the previous guided step's maps as positives"
    )
    smooth: bool = pydantic.Field(True, description="3x3 Gaussian smoothing of every map")
    softmax_normalize: bool = pydantic.Field(
        False,
        description="A&E's x100 softmax over the token_slice tokens first "
        "(off in the official notebook, on in its pipeline signature)",
    )
    softmax_normalize_maps: bool = pydantic.Field(
        False, description="x100 softmax over each flattened map's pixels (official default: off)"
    )
    token_slice: TokenSlice = pydantic.Field(
        "sd1", description="token slice of softmax_normalize, as A&E's"
    )


# --- metric-learning losses on [n, d] embeddings with integer labels ---------------------------


def cosine_similarity_matrix(embeddings: torch.Tensor) -> torch.Tensor:
    """``[n, d] -> [n, n]`` cosine similarities (rows L2-normalised as ``F.normalize`` does)."""
    unit = F.normalize(embeddings, p=2, dim=1)
    return unit @ unit.T


def pair_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``labels: [n]`` -> ``(positive, negative)`` boolean ``[n, n]``: same label off the
    diagonal, and different labels (all-pairs mining)."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def _zero(embeddings: torch.Tensor) -> torch.Tensor:
    return (embeddings * 0).sum()  # 0 with a graph, as pytorch-metric-learning's zero loss


def ntxent_loss(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent over every ordered positive pair, averaged (``NTXentLoss`` with ``MeanReducer``).

    Args:
        embeddings: ``[n, d]``; compared by cosine similarity.
        labels: ``[n]`` integer classes.
        temperature: ``tau``.

    Returns:
        Scalar. For a positive pair ``(a, p)``: ``-log(r + tiny)`` with ``r = exp(s_ap/tau) /
        (exp(s_ap/tau) + sum over a's negatives exp(s_an/tau))`` (max-subtracted; ``tiny`` the
        dtype's smallest normal). ``0`` (with a graph) when there is no positive pair or no
        negative pair at all; an anchor without negatives would give ``-log(1) = 0`` for its
        pairs, still counted in the mean (with all-pairs mining, once any negative pair
        exists every anchor has one).
    """
    similarity = cosine_similarity_matrix(embeddings)
    positive, negative = pair_masks(labels)
    if not positive.any() or not negative.any():
        return _zero(embeddings)
    anchors, positives = positive.nonzero(as_tuple=True)
    logits = similarity / temperature
    pos_logits = logits[anchors, positives]  # [P]
    neg_logits = logits[anchors].masked_fill(~negative[anchors], -math.inf)  # [P, n]
    peak = torch.maximum(pos_logits, neg_logits.amax(dim=1)).detach()
    numerator = torch.exp(pos_logits - peak)
    denominator = numerator + torch.exp(neg_logits - peak[:, None]).sum(dim=1)
    tiny = torch.finfo(embeddings.dtype).tiny
    return -torch.log(numerator / denominator + tiny).mean()


def _mean_of_nonzero(losses: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    kept = losses[losses > 0]
    return kept.mean() if kept.numel() else _zero(embeddings)


def contrastive_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, pos_margin: float = 1.0, neg_margin: float = 0.0
) -> torch.Tensor:
    """Contrastive loss on cosine similarity (``ContrastiveLoss(distance=CosineSimilarity())``).

    Args:
        embeddings: ``[n, d]``.
        labels: ``[n]`` integer classes.
        pos_margin, neg_margin: a positive pair costs ``relu(pos_margin - s)``, a negative
            pair ``relu(s - neg_margin)`` (CONFORM: 1 and 0).

    Returns:
        Scalar: the mean of the non-zero positive-pair losses plus the mean of the non-zero
        negative-pair losses over ordered pairs (``AvgNonZeroReducer`` per part, parts summed);
        a part with no non-zero loss counts 0.
    """
    similarity = cosine_similarity_matrix(embeddings)
    positive, negative = pair_masks(labels)
    pos_losses = F.relu(pos_margin - similarity[positive])
    neg_losses = F.relu(similarity[negative] - neg_margin)
    return _mean_of_nonzero(pos_losses, embeddings) + _mean_of_nonzero(neg_losses, embeddings)


# --- CONFORM ------------------------------------------------------------------------------------


def token_groups(analysis: PromptAnalysis) -> list[tuple[int, ...]]:
    """Each binding's token positions (modifiers first, entity last), in prompt order; bindings
    without tokens are dropped. The official code's ``token_groups``."""
    return [b.positions for b in analysis.bindings if b.positions]


def token_labels(groups: list[tuple[int, ...]]) -> dict[int, int]:
    """``{position: class}`` in first-seen order; a position in several groups takes the last
    group's class, as the official code's dict does."""
    labels: dict[int, int] = {}
    for c, group in enumerate(groups):
        for position in group:
            labels[position] = c
    return labels


def effective_loss(kind: LossKind, groups: list[tuple[int, ...]]) -> Literal["ntxent", "contrastive"]:
    """``ntxent_contrastive`` is NT-Xent when the first group has more than one token."""
    if kind == "ntxent_contrastive":
        return "ntxent" if groups and len(groups[0]) > 1 else "contrastive"
    return kind


def refinement_steps(refine_at: tuple[int, ...], num_steps: int) -> set[int]:
    """The ``refine_at`` keys (steps of a 50-step schedule) on a ``num_steps`` schedule, mapped
    as Attend-and-Excite's thresholds: ``floor(k * num_steps / 50 + 0.5)``."""
    return set(refinement_thresholds(dict.fromkeys(refine_at, 0.0), num_steps))


class ConformLoss(LossPlugin[ConformParams]):
    """CONFORM: NT-Xent between token groups' maps, with last step's maps as extra positives."""

    name = "conform"
    Params = ConformParams
    # The official pipeline alters latents while i < max_iter_to_alter = 25 of 50 steps.
    default_window = (0.0, 0.5)
    family_defaults = {"flux": {"token_slice": "prompt"}}  # as Attend-and-Excite's

    def _embeddings(self, maps: torch.Tensor, analysis: PromptAnalysis, positions: list[int]) -> torch.Tensor:
        """``maps: [tokens, H, W]`` -> ``[len(positions), H * W]``, one row per position."""
        params = self.params
        if params.softmax_normalize:
            start, stop = slice_start(analysis), slice_stop(maps, analysis, params.token_slice)
            outside = [p for p in positions if not start <= p < stop]
            if outside:
                raise ValueError(f"token positions {outside} lie outside the slice [{start}:{stop}]")
            selected = attend_excite_preprocess(maps, stop, start)[[p - start for p in positions]]
        else:
            selected = maps[positions]
        if params.smooth:
            selected = gaussian_smooth(selected)
        flat = selected.flatten(1)
        if params.softmax_normalize_maps:
            flat = torch.softmax(flat * 100.0, dim=1)
        return flat

    def compute(self, ctx: GuidanceContext, maps: torch.Tensor) -> LossTerm | None:
        params = self.params
        groups = token_groups(ctx.analysis)
        kind = effective_loss(params.loss, groups)
        labels_of = token_labels(groups)
        if not labels_of:
            return None
        if kind == "ntxent" and len(set(labels_of.values())) < 2:
            return None  # one class has no negatives: NT-Xent is 0 at every step
        positions = list(labels_of)
        labels = torch.tensor([labels_of[p] for p in positions], device=maps.device)
        embeddings = self._embeddings(maps, ctx.analysis, positions)
        previous = ctx.previous_maps if params.add_previous_maps else None
        if previous is not None:
            if previous.shape != maps.shape:
                shapes = f"{tuple(previous.shape)} vs {tuple(maps.shape)}"
                raise ValueError(f"previous maps differ in shape from the maps: {shapes}")
            before = self._embeddings(previous.detach().to(maps), ctx.analysis, positions)
            # interleaved as the official code: token, its previous map, next token, ...
            embeddings = torch.stack([embeddings, before], dim=1).flatten(0, 1)
            labels = labels.repeat_interleave(2)

        if kind == "ntxent":
            value = ntxent_loss(embeddings, labels, params.temperature)
        else:
            value = contrastive_loss(embeddings, labels)
        positive, negative = pair_masks(labels)
        similarity = cosine_similarity_matrix(embeddings.detach())
        logs = {
            "loss": as_float(value),
            "ntxent": float(kind == "ntxent"),
            "has_previous": float(previous is not None),
            "embeddings": float(len(labels)),
            "positive_pairs": float(positive.sum()),
            "negative_pairs": float(negative.sum()),
        }
        if positive.any():
            logs["positive_similarity"] = as_float(similarity[positive].mean())
        if negative.any():
            logs["negative_similarity"] = as_float(similarity[negative].mean())

        term = LossTerm(
            value=value,
            step_size=attend_excite_step_size(ctx.step, ctx.num_timesteps, params.scale_factor),
            logs=logs,
        )
        # NT-Xent without positive pairs (singleton groups, no previous maps yet) and a
        # contrastive loss without any pair are exactly 0: no update would happen in any
        # iteration, so no refinement is asked.
        has_pairs = bool(positive.any()), bool(negative.any())
        structural_zero = not all(has_pairs) if kind == "ntxent" else not any(has_pairs)
        refine = ctx.step in refinement_steps(params.refine_at, ctx.num_steps)
        if refine and params.refinement_iterations > 0 and not structural_zero:
            term.refine_below = -math.inf  # always refine: the official code has no threshold
            term.max_refinement = params.refinement_iterations
        return term
