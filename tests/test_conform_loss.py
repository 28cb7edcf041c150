"""CONFORM: NT-Xent (or cosine contrastive) between token groups' maps, last step's maps as positives."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from loss_helpers import binding, make_context, np_ae_process, np_smooth, random_maps, word

from attnguide.engine.guidance import guide_image
from attnguide.engine.state import ImageRecord
from attnguide.errors import ConfigError
from attnguide.plugin.callbacks import Callback
from attnguide.plugin.hookspecs import hookimpl
from attnguide.plugin.losses import LossPlugin
from attnguide.plugin.manager import run_plugin_manager
from attnguide.plugins.conform import (
    ConformLoss,
    contrastive_loss,
    ntxent_loss,
    refinement_steps,
    token_groups,
    token_labels,
)
from attnguide.testing import analysis_for, context_for, peaked_maps, run_plugin, tiny_engine

PROMPT = "a red cat and a blue dog"
BINDINGS = {"cat": ["red"], "dog": ["blue"]}
RAW = {"smooth": False}  # hand-checkable: the flattened maps are the embeddings


def with_previous(ctx, previous):
    ctx.previous_maps = previous
    return ctx


# --- the metric-learning losses on hand-computed embeddings -----------------------------------

# e0 = (1, 0), e1 = (3, 4) -> (0.6, 0.8) once normalised, e2 = (0, 1); labels 0, 0, 1.
# Cosines: s01 = 0.6, s02 = 0, s12 = 0.8.
EMBEDDINGS = torch.tensor([[1.0, 0.0], [3.0, 4.0], [0.0, 1.0]], dtype=torch.float64)
LABELS = torch.tensor([0, 0, 1])


def test_ntxent_by_hand_is_the_mean_over_ordered_positive_pairs():
    # tau = 0.5, so logits are 2 * cosine. Positive pairs (0, 1) and (1, 0); the only negative
    # of either anchor is 2.
    # anchor 0: -log(e^1.2 / (e^1.2 + e^0))   = log(1 + e^-1.2) = log(1.3011942119) = 0.2632824673
    # anchor 1: -log(e^1.2 / (e^1.2 + e^1.6)) = log(1 + e^0.4)  = log(2.4918246976) = 0.9130152524
    # mean = 0.5881488599
    value = ntxent_loss(EMBEDDINGS, LABELS, temperature=0.5)
    assert value.item() == pytest.approx(0.5881488599, rel=1e-9)
    # tau = 1: anchor 0 log(1 + e^-0.6) = 0.4373879; anchor 1 log(1 + e^0.2) = 0.7981389
    assert ntxent_loss(EMBEDDINGS, LABELS, 1.0).item() == pytest.approx(
        (math.log(1 + math.exp(-0.6)) + math.log(1 + math.exp(0.2))) / 2, rel=1e-12
    )


def test_ntxent_is_zero_with_a_graph_without_positive_or_without_negative_pairs():
    emb = EMBEDDINGS.clone().requires_grad_(True)
    for labels in ([0, 1, 2], [4, 4, 4]):  # no positive pair; no negative pair
        value = ntxent_loss(emb, torch.tensor(labels), 0.5)
        assert value.item() == 0.0 and value.requires_grad


def test_ntxent_sums_every_negative_of_the_anchor_in_the_denominator():
    # labels 0, 0, 1, 1 on e0 = (1, 0), e1 = (0.6, 0.8), e2 = (0, 1), e3 = (0, 1):
    # s01 = .6, s02 = s03 = 0, s12 = s13 = .8, s23 = 1. Logits 2s.
    # (0, 1): log(1 + 2 e^-1.2)         = 0.4714952811
    # (1, 0): log(1 + 2 e^0.4)          = 1.3821983327
    # (2, 3), (3, 2): log(1 + e^-2 + e^-0.4) = log(1.8056553293) = 0.5909235892
    # mean = (0.4714952811 + 1.3821983327 + 2 * 0.5909235892) / 4 = 0.7588851981
    emb = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.0, 2.0]], dtype=torch.float64)
    assert ntxent_loss(emb, torch.tensor([0, 0, 1, 1]), 0.5).item() == pytest.approx(0.7588851981, rel=1e-9)


def test_contrastive_by_hand_averages_only_the_non_zero_pair_losses():
    # positive pairs (0,1), (1,0): relu(1 - 0.6) = 0.4 each -> mean 0.4
    # negative pairs (0,2), (2,0): relu(0 - 0) = 0 (dropped); (1,2), (2,1): relu(0.8) = 0.8
    #   -> mean over the non-zero ones 0.8 (a plain mean would give 0.4)
    # total = 0.4 + 0.8 = 1.2
    assert contrastive_loss(EMBEDDINGS, LABELS).item() == pytest.approx(1.2, rel=1e-12)
    # all labels distinct: no positive pair, the negative part alone over every ordered pair:
    # 0.6, 0.6 (0-1), 0, 0 (0-2, dropped), 0.8, 0.8 (1-2) -> (0.6 + 0.6 + 0.8 + 0.8) / 4 = 0.7
    assert contrastive_loss(EMBEDDINGS, torch.tensor([0, 1, 2])).item() == pytest.approx(0.7, rel=1e-12)
    # all negatives at cosine 0: exactly 0, still with a graph
    orthogonal = torch.eye(3, dtype=torch.float64).requires_grad_(True)
    value = contrastive_loss(orthogonal, torch.tensor([0, 1, 2]))
    assert value.item() == 0.0 and value.requires_grad


def test_ntxent_gradient_pulls_positives_together():
    emb = EMBEDDINGS.clone().requires_grad_(True)
    ntxent_loss(emb, LABELS, 0.5).backward()
    moved = EMBEDDINGS - 0.1 * emb.grad
    assert ntxent_loss(moved, LABELS, 0.5).item() < ntxent_loss(EMBEDDINGS, LABELS, 0.5).item()


# --- groups and labels ---------------------------------------------------------------------------


def test_token_groups_are_the_bindings_positions_as_the_official_notebook():
    # the notebook's "a green glasses and a yellow clock" with token_groups [[2, 3], [6, 7]]
    analysis = analysis_for("a green glasses and a yellow clock", {"glasses": ["green"], "clock": ["yellow"]})
    assert token_groups(analysis) == [(2, 3), (6, 7)]
    assert token_labels(token_groups(analysis)) == {2: 0, 3: 0, 6: 1, 7: 1}
    lone = analysis_for("a cat and a dog", {"cat": [], "dog": []})
    assert token_groups(lone) == [(2,), (5,)]


def test_a_position_in_two_groups_takes_the_last_groups_class():
    assert token_labels([(1, 2), (1, 4)]) == {1: 1, 2: 0, 4: 1}


# --- the plugin on hand-built maps ---------------------------------------------------------------

# "cat and dog": cat = 1, dog = 3, each its own group; maps [5, 2, 2], embeddings = 4 pixels.
CAT, DOG = [[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [0.0, 0.0]]


def cat_dog_maps(cat, dog) -> torch.Tensor:
    maps = torch.zeros(5, 2, 2, dtype=torch.float64)
    maps[1], maps[3] = torch.tensor(cat, dtype=torch.float64), torch.tensor(dog, dtype=torch.float64)
    return maps


def cat_dog_context(**kwargs):
    return make_context([binding(word("cat", 1)), binding(word("dog", 3))], 3, **kwargs)


def test_previous_maps_enter_as_positives_of_their_own_token_by_hand():
    maps = cat_dog_maps(CAT, DOG)  # cat = (1, 0, 0, 0), dog = (0, 1, 0, 0)
    # Singleton groups and no previous maps: no positive pair, NT-Xent is 0, no refinement.
    first = ConformLoss(RAW).compute(cat_dog_context(), maps)
    assert first.value.item() == 0.0 and first.refine_below is None
    assert first.logs["positive_pairs"] == 0 and first.logs["has_previous"] == 0
    # Previous maps: cat' = (0.6, 0.8, 0, 0), dog' = (0, 1, 0, 0). Embeddings cat, cat', dog,
    # dog' with labels 0, 0, 1, 1 - the four vectors of
    # test_ntxent_sums_every_negative_of_the_anchor_in_the_denominator: 0.7588851981.
    previous = cat_dog_maps([[0.6, 0.8], [0.0, 0.0]], DOG)
    term = ConformLoss(RAW).compute(with_previous(cat_dog_context(), previous), maps)
    assert term.value.item() == pytest.approx(0.7588851981, rel=1e-9)
    assert term.logs["has_previous"] == 1 and term.logs["positive_pairs"] == 4
    assert term.logs["negative_pairs"] == 8 and term.logs["embeddings"] == 4
    # add_previous_maps=False ignores them
    off = ConformLoss({**RAW, "add_previous_maps": False})
    off = off.compute(with_previous(cat_dog_context(), previous), maps)
    assert off.value.item() == 0.0


def test_attributes_share_their_nouns_class_by_hand():
    # "red cat and blue dog": red = 1, cat = 2, blue = 4, dog = 5; groups [1, 2], [4, 5].
    ctx = make_context([binding(word("cat", 2), word("red", 1)), binding(word("dog", 5), word("blue", 4))], 5)
    maps = torch.zeros(7, 1, 2, dtype=torch.float64)
    maps[1, 0], maps[2, 0] = torch.tensor([1.0, 0.0]), torch.tensor([3.0, 4.0])  # red, cat
    maps[4, 0], maps[5, 0] = torch.tensor([0.0, 1.0]), torch.tensor([0.0, 1.0])  # blue, dog
    term = ConformLoss(RAW).compute(ctx, maps)
    assert term.value.item() == pytest.approx(0.7588851981, rel=1e-9)  # same four vectors and labels
    contrastive = ConformLoss({**RAW, "loss": "contrastive"}).compute(ctx, maps)
    # positives: (red,cat) relu(1 - .6) = .4 twice, (blue,dog) relu(1 - 1) = 0 -> mean of non-zero .4
    # negatives: red-blue, red-dog at 0 (dropped); cat-blue, cat-dog at .8 (4 ordered) -> .8
    assert contrastive.value.item() == pytest.approx(1.2, rel=1e-12)


def test_plugin_smooths_raw_maps_and_uses_the_bindings_as_classes():
    ctx = make_context([binding(word("cat", 2), word("red", 1)), binding(word("dog", 5), word("blue", 4))], 5)
    maps = random_maps(7, size=4, seed=3)
    previous = random_maps(7, size=4, seed=4)
    m, p = maps.numpy(), previous.numpy()
    rows = [np_smooth(x[k]).ravel() for k in (1, 2, 4, 5) for x in (m, p)]
    expected = ntxent_loss(torch.tensor(np.stack(rows)), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]), 0.5)
    term = ConformLoss().compute(with_previous(ctx, previous), maps)
    assert term.value.item() == pytest.approx(expected.item(), rel=1e-10)


def test_softmax_normalize_is_attend_and_excites_token_preprocessing():
    ctx = make_context([binding(word("cat", 1)), binding(word("dog", 3))], 3)
    maps = random_maps(5, size=4, seed=5) * 0.05
    processed = np_ae_process(maps.numpy(), stop=4)  # tokens 1..3, row k = position k + 1
    rows = [np_smooth(processed[k]).ravel() for k in (0, 2)]
    expected = contrastive_loss(torch.tensor(np.stack(rows)), torch.tensor([0, 1]))
    term = ConformLoss({"softmax_normalize": True, "loss": "contrastive"}).compute(ctx, maps)
    assert term.value.item() == pytest.approx(expected.item(), rel=1e-10)


def test_ntxent_contrastive_picks_by_the_first_groups_size():
    maps = random_maps(7, size=4, seed=6)
    pairs = make_context([binding(word("cat", 2), word("red", 1)), binding(word("dog", 5))], 5)
    singles = make_context([binding(word("cat", 2)), binding(word("dog", 5), word("blue", 4))], 5)
    mixed = ConformLoss({"loss": "ntxent_contrastive"})
    assert mixed.compute(pairs, maps).value.item() == ConformLoss().compute(pairs, maps).value.item()
    assert mixed.compute(singles, maps).value.item() == pytest.approx(
        ConformLoss({"loss": "contrastive"}).compute(singles, maps).value.item(), rel=1e-12
    )
    assert mixed.compute(singles, maps).logs["ntxent"] == 0.0


def test_single_class_ntxent_returns_none_and_no_groups_return_none():
    maps = random_maps(5, size=4)
    one = make_context([binding(word("cat", 2), word("red", 1))], 3)
    assert ConformLoss().compute(one, maps) is None  # no negatives, ever
    assert ConformLoss({"loss": "contrastive"}).compute(one, maps).value.item() > 0  # pulls red to cat
    assert ConformLoss().compute(make_context([], 3), maps) is None
    assert ConformLoss({"loss": "contrastive"}).compute(make_context([], 3), maps) is None


def test_loss_is_lower_when_attributes_sit_on_their_own_noun():
    analysis = analysis_for(PROMPT, BINDINGS)
    bound = peaked_maps(analysis, {"red": (3, 3), "cat": (3, 3), "blue": (12, 12), "dog": (12, 12)})
    swapped = peaked_maps(analysis, {"red": (12, 12), "cat": (3, 3), "blue": (3, 3), "dog": (12, 12)})
    ctx = context_for(analysis)
    loss = ConformLoss()
    assert loss.compute(ctx, bound).value.item() < loss.compute(ctx, swapped).value.item()
    # ... and with the previous step's maps added as positives
    for previous in (bound, swapped):
        assert (loss.compute(with_previous(ctx, previous), bound).value.item()
                < loss.compute(with_previous(ctx, previous), swapped).value.item())


def test_gradient_reaches_the_current_maps_only():
    ctx = make_context([binding(word("cat", 2), word("red", 1)), binding(word("dog", 5), word("blue", 4))], 5)
    maps = random_maps(7, size=4, seed=7).requires_grad_(True)
    previous = random_maps(7, size=4, seed=8).requires_grad_(True)
    ConformLoss().compute(with_previous(ctx, previous), maps).value.backward()
    assert torch.isfinite(maps.grad).all() and maps.grad[[1, 2, 4, 5]].abs().sum() > 0
    assert maps.grad[[0, 3, 6]].abs().sum() == 0 and previous.grad is None


# --- schedule and refinement ---------------------------------------------------------------------


def test_step_size_window_and_refinement_steps():
    loss = ConformLoss()
    maps = random_maps(7, size=4)

    def ctx(step, num_steps=50):
        return make_context([binding(word("cat", 2), word("red", 1)), binding(word("dog", 5))], 5,
                            step=step, num_steps=num_steps)

    assert loss.default_window == (0.0, 0.5)
    assert loss.attnguide_loss(ctx(0), maps).step_size == 20.0
    expected = 20 * math.sqrt(np.linspace(1.0, 0.5, 50)[24])
    assert loss.attnguide_loss(ctx(24), maps).step_size == pytest.approx(expected)
    assert loss.attnguide_loss(ctx(25), maps) is None
    for step in (0, 10, 20):
        term = loss.attnguide_loss(ctx(step), maps)
        assert term.refine_below == -math.inf and term.max_refinement == 20
    assert all(loss.attnguide_loss(ctx(s), maps).refine_below is None for s in (1, 9, 11, 24))
    assert refinement_steps((0, 10, 20), 50) == {0, 10, 20}
    assert refinement_steps((0, 10, 20), 25) == {0, 5, 10}
    assert refinement_steps((0, 10, 20), 4) == {0, 1, 2}
    assert ConformLoss({"refinement_iterations": 0}).attnguide_loss(ctx(0), maps).refine_below is None


def official_refinement_step(z0, maps_fn, loss_fn, alpha, iterations):
    """A transcription of the official control flow at a refinement step, forwards counted:
    a forward whose loss is dropped, ``iterations`` x (forward, update if loss != 0), one more
    forward, and the step's own update. Returns the latents, the number of forwards and the
    maps of the last forward (what the official code keeps as the next step's t+1 maps)."""
    forwards = 0
    last_maps = None

    def loss_at(z):
        nonlocal forwards, last_maps
        forwards += 1
        last_maps = maps_fn(z)
        return loss_fn(last_maps)

    def update(z, loss):
        if loss.item() == 0:
            return z
        (grad,) = torch.autograd.grad(loss, [z])
        return z - alpha * grad

    z = z0.clone().requires_grad_(True)
    loss_at(z)
    for _ in range(iterations):
        z = z.detach().requires_grad_(True)
        z = update(z, loss_at(z))
    z = z.detach().requires_grad_(True)
    z = update(z, loss_at(z))
    return z.detach(), forwards, last_maps.detach()


def test_engine_refinement_is_the_official_twenty_plus_one_updates_with_one_forward_less():
    torch.manual_seed(0)
    weight = torch.randn(8, 7 * 16, dtype=torch.float64)
    bindings = [binding(word("cat", 2), word("red", 1)), binding(word("dog", 5), word("blue", 4))]
    previous = random_maps(7, size=4, seed=9)

    def maps_fn(z):
        return (z.flatten(1) @ weight).reshape(7, 4, 4).softmax(dim=0)

    plugin = ConformLoss({"scale_factor": 0.5})
    z0 = torch.randn(1, 8, dtype=torch.float64)
    calls = {"n": 0}

    def counted(z):
        calls["n"] += 1
        return maps_fn(z)

    for step, refined in ((10, True), (11, False)):

        def context(step=step):
            return with_previous(make_context(bindings, 5, step=step), previous)

        alpha = plugin.attnguide_loss(context(), maps_fn(z0)).step_size
        def loss_fn(maps, context=context):
            return plugin.compute(context(), maps).value

        expected, official_forwards, official_last_maps = official_refinement_step(
            z0, maps_fn, loss_fn, alpha, 20 if refined else 0
        )
        calls["n"] = 0
        record = ImageRecord(0, "x", 0)
        pm = run_plugin_manager([("conform", plugin)])
        got, last_maps = guide_image(pm, context(), z0, counted, {"conform": 1.0}, record)
        if refined:
            assert record.refinement_iterations == {10: 20}
            assert [r.refinement for r in record.losses] == list(range(21))
            assert (official_forwards, calls["n"]) == (22, 21)
        else:  # the official code refines at no other step: one forward, one update
            assert record.refinement_iterations == {} and calls["n"] == 1
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
        assert not torch.equal(got, z0)
        # the maps handed back (the engine's "previous maps" of the next step) are the official
        # t+1 maps: those of the last forward, after the refinement updates and before the
        # step's own update
        assert not last_maps.requires_grad
        torch.testing.assert_close(last_maps, official_last_maps, rtol=1e-10, atol=1e-12)


def test_parameter_errors_name_the_plugin_and_the_parameter():
    with pytest.raises(ConfigError, match=r"'conform'.*'temperature'"):
        ConformLoss({"temperature": 0})
    with pytest.raises(ConfigError, match=r"'conform'.*'loss'"):
        ConformLoss({"loss": "triplet"})
    with pytest.raises(ConfigError, match=r"'conform'.*'refine_at.0'"):
        ConformLoss({"refine_at": [-1]})


# --- end to end ----------------------------------------------------------------------------------


class FinalLatents(Callback):
    """Keeps the latents after the last denoising step."""

    name = "final_latents"

    def __init__(self) -> None:
        super().__init__()
        self.latents: torch.Tensor | None = None

    @hookimpl
    def on_step_end(self, latents):
        self.latents = latents.detach().clone()


def unguided_latents() -> torch.Tensor:
    engine = tiny_engine()
    analyses = [analysis_for(PROMPT, BINDINGS, engine.pipe.tokenizer)]
    return engine.generate(PROMPT, [0], analyses=analyses, steps=4, height=256, width=256,
                           output_type="latent", progress=False).latents


def test_conform_runs_end_to_end_on_the_tiny_model_and_moves_the_latents():
    final = FinalLatents()
    records = run_plugin(ConformLoss(), PROMPT, BINDINGS, steps=4, callbacks=[final])
    assert {r.step for r in records} == {0, 1}
    assert all(math.isfinite(r.value) and r.value > 0 for r in records)
    # refine_at 0, 10, 20 of 50 -> steps 0, 1, 2 of 4; the window (0, 0.5) keeps 0 and 1, each
    # evaluated once and then after each of its 20 refinement updates
    for step in (0, 1):
        assert sorted(r.refinement for r in records if r.step == step) == list(range(21))
    assert (final.latents.cpu() - unguided_latents()).abs().max() > 0


class _PreviousProbe(LossPlugin):
    """Records ``ctx.previous_maps`` at every evaluation of CONFORM's window; guides nothing."""

    name = "previous_probe"
    default_window = (0.0, 0.5)

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, int, torch.Tensor | None]] = []

    def compute(self, ctx, maps):
        self.seen.append((ctx.step, ctx.refinement, ctx.previous_maps))


def test_engine_hands_the_last_evaluation_of_the_previous_step_as_previous_maps():
    engine = tiny_engine()
    probe = _PreviousProbe()
    analyses = [analysis_for(PROMPT, BINDINGS, engine.pipe.tokenizer)]
    result = engine.generate(PROMPT, [0], losses=[ConformLoss({"refinement_iterations": 2}), probe],
                             analyses=analyses, steps=4,
                             height=256, width=256, output_type="latent", progress=False)
    assert all(previous is None for step, _, previous in probe.seen if step == 0)
    at_step_1 = [previous for step, _, previous in probe.seen if step == 1]
    assert len(at_step_1) == 3  # the first evaluation and 2 refinement passes
    last_of_step_0 = result.run.guidance_maps[0][0]
    for previous in at_step_1:
        torch.testing.assert_close(previous.cpu(), last_of_step_0)
    assert {r.logs["has_previous"] for r in result.records[0].losses if r.step == 1} == {1.0}


def test_conform_on_the_toyworld_model():
    from attnguide.engine.engine import Engine
    from attnguide.models.loading import load_pipeline

    engine = Engine(load_pipeline("toyworld"))
    prompt = "a red circle and a blue square"
    analyses = [analysis_for(prompt, {"circle": ["red"], "square": ["blue"]}, engine.pipe.tokenizer)]
    kwargs = {"steps": 6, "output_type": "latent", "progress": False, "analyses": analyses}
    plain = engine.generate(prompt, [0], **kwargs)
    guided = engine.generate(prompt, [0], losses=[ConformLoss({"refinement_iterations": 3})], **kwargs)
    records = guided.records[0].losses
    assert {r.step for r in records} == {0, 1, 2}
    assert all(math.isfinite(r.value) for r in records)
    assert guided.records[0].refinement_iterations == {0: 3, 1: 3, 2: 3}  # 0, 10, 20 of 50 -> 0, 1, 2 of 6
    assert (guided.latents - plain.latents).abs().max() > 0


def test_conform_composes_with_syngen():
    engine = tiny_engine()
    analyses = [analysis_for(PROMPT, BINDINGS, engine.pipe.tokenizer)]
    result = engine.generate(PROMPT, [0], losses=[ConformLoss({"refinement_iterations": 2}), "syngen"],
                             analyses=analyses, steps=4, height=256, width=256, output_type="latent",
                             progress=False)
    rows = result.records[0].losses
    assert {r.plugin for r in rows} == {"conform", "syngen"}
    assert all(math.isfinite(r.value) for r in rows)
    # conform's refinement passes re-evaluate every loss of the run
    refined = {(r.step, r.refinement) for r in rows if r.plugin == "syngen"}
    assert {(0, 1), (0, 2), (1, 1), (1, 2)} <= refined
