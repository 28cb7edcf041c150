"""ToMe: token merge, end-token substitution, semantic binding and entropy updates."""

from __future__ import annotations

import itertools
import math
import zlib

import pytest
import torch
import torch.nn.functional as F

from attnguide import ConfigError, Engine, load_pipeline
from attnguide.engine.guidance import guide_image
from attnguide.engine.requests import MapRequest
from attnguide.engine.state import ImageRecord
from attnguide.models.families import text_tokenizer
from attnguide.plugin.manager import make_plugin_manager, run_plugin_manager
from attnguide.plugin.specs import build_losses
from attnguide.plugins.tome import (
    TOME_SDXL_LAYERS,
    Subject,
    ToMeLoss,
    anchor_prompt,
    binding_update,
    entropy_threshold,
    merged_prompt,
    substitute_end,
    token_merge,
    tome_entropy,
    tome_step_size,
    tome_subjects,
)
from attnguide.testing import analysis_for, context_for, tiny_engine
from attnguide.types import EmbeddingContext

PROMPT = "a white cat and a black dog"
BINDINGS = {"cat": ["white"], "dog": ["black"]}
OBJECTS = "a cat wearing sunglasses and a dog wearing hat"
OBJECT_BINDINGS = {"cat": ["sunglasses"], "dog": ["hat"]}
# small and fast: one semantic-binding update, at most two entropy updates per phase
FAST = {"binding_iterations": 1, "refinement_steps": (2, 2)}


# --- prompts and positions ----------------------------------------------------------------------


def test_subjects_anchors_and_merged_prompt_come_from_the_bindings():
    analysis = analysis_for(PROMPT, BINDINGS)
    # <sot> a white cat and a black dog <eot>: the noun keeps the composite token
    assert tome_subjects(analysis) == [Subject("cat", 3, (3,), (2,), "a white cat"),
                                       Subject("dog", 7, (7,), (6,), "a black dog")]
    assert merged_prompt(analysis) == "a cat and a dog"
    objects = analysis_for(OBJECTS, OBJECT_BINDINGS)
    # <sot> a cat wearing sunglasses and a dog wearing hat <eot>
    assert [(s.composite, s.merged, s.anchor) for s in tome_subjects(objects)] == [
        (2, (4,), "a cat wearing sunglasses"), (7, (9,), "a dog wearing hat")]
    # merge_between takes 'wearing' along: the official object-binding demo's [[2], [3, 4]]
    assert [s.merged for s in tome_subjects(objects, merge_between=True)] == [(3, 4), (8, 9)]
    assert merged_prompt(objects) == "a cat and a dog"


def test_prompt_construction_keeps_determiners_and_skips_entities_without_modifiers():
    analysis = analysis_for("two red apples next to a bowl", {"apples": ["red"], "bowl": []})
    assert [s.anchor for s in tome_subjects(analysis)] == ["two red apples"]  # the bowl has no modifier
    assert merged_prompt(analysis) == "two apples and a bowl"  # every entity
    assert tome_subjects(analysis_for("a cat and a dog", {"cat": [], "dog": []})) == []


def test_an_anchor_span_holding_another_bindings_word_falls_back_to_the_words():
    # 'red' is bound to 'ball' across 'cat': the span would carry the other binding's noun
    analysis = analysis_for("a red cat ball", {"ball": ["red"], "cat": []})
    binding = next(b for b in analysis.bindings if b.entity.text == "ball")
    assert anchor_prompt(analysis, binding) == "red ball"


def test_a_multi_piece_noun_merges_every_piece_into_its_first():
    analysis = analysis_for("a red strawberry-cake", {"strawberry-cake": ["red"]})
    (subject,) = tome_subjects(analysis)
    assert len(subject.nouns) > 1 and subject.composite == subject.nouns[0] and subject.merged == (2,)


# --- the edits -----------------------------------------------------------------------------------


def test_token_merge_by_hand():
    embeds = torch.arange(12, dtype=torch.float64).reshape(6, 2)  # row k = [2k, 2k + 1]
    subjects = [Subject("cat", 2, (2,), (3, 4), "")]
    got = token_merge(embeds, subjects)
    # row 2 = 1.1 * [4, 5] + 1.2 * ([6, 7] + [8, 9]) = [4.4 + 16.8, 5.5 + 19.2]
    expected = embeds.clone()
    expected[2] = torch.tensor([21.2, 24.7], dtype=torch.float64)
    expected[3] = expected[4] = 0
    torch.testing.assert_close(got, expected)
    assert torch.equal(embeds, torch.arange(12, dtype=torch.float64).reshape(6, 2))  # not in place

    # a two-piece noun (2, 3) with modifier 1, other weights: row 2 = 2 ([4, 5] + [6, 7]) + 0.5 [2, 3]
    got = token_merge(embeds, [Subject("cake", 2, (2, 3), (1,), "")], noun_weight=2.0, modifier_weight=0.5)
    expected = embeds.clone()
    expected[2] = torch.tensor([21.0, 25.5], dtype=torch.float64)
    expected[3] = expected[1] = 0
    torch.testing.assert_close(got, expected)


def test_end_substitution_replaces_the_end_token_and_everything_after_it():
    embeds = torch.zeros(7, 2)
    merged = torch.arange(14.0).reshape(7, 2)
    got = substitute_end(embeds, merged, eot_position=4)
    assert torch.equal(got[:4], torch.zeros(4, 2)) and torch.equal(got[4:], merged[4:])


class FakeText:
    """A text side with known maths: ``encode`` gives fixed random states per text, ``forward``
    a prediction and maps that are smooth functions of the embeddings (float64)."""

    def __init__(self, dim: int = 4, pixels: int = 16) -> None:
        generator = torch.Generator().manual_seed(0)
        self.dim, self.side = dim, int(math.sqrt(pixels))
        self.w_pred = torch.randn(dim, 8, generator=generator, dtype=torch.float64) * 0.5
        self.w_maps = torch.randn(dim, pixels, generator=generator, dtype=torch.float64)
        self.encoded: list[str] = []

    def encode(self, text: str) -> torch.Tensor:
        self.encoded.append(text)
        generator = torch.Generator().manual_seed(zlib.crc32(text.encode()))
        return torch.randn(77, self.dim, generator=generator, dtype=torch.float64)

    def forward(self, embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        prediction = torch.tanh(embeds.sum(0) @ self.w_pred).reshape(1, 2, 2, 2)
        maps = torch.softmax(embeds @ self.w_maps, dim=0).reshape(-1, self.side, self.side)
        return prediction, maps

    def context(self, analysis, step, state, num_steps=50, timestep=981, forward=True) -> EmbeddingContext:
        return EmbeddingContext(0, step, num_steps, timestep, analysis, state, self.encode,
                                self.forward if forward else None)


def test_the_end_substitution_happens_at_its_step_and_stays():
    analysis = analysis_for(PROMPT, BINDINGS)
    text = FakeText()
    embeds = text.encode(PROMPT)
    plugin = ToMeLoss({"eot_replace_step": 10})  # step 10 of 50 -> step 2 of 10
    state = {}
    merged_tokens = token_merge(embeds, tome_subjects(analysis))
    end = analysis.tokens.eot_position
    assert end == 8
    before = plugin.attnguide_edit_embeddings(text.context(analysis, 1, state, num_steps=10, forward=False), embeds)
    torch.testing.assert_close(before, merged_tokens)  # the merge alone, from the first call on
    text.encoded.clear()
    at = plugin.attnguide_edit_embeddings(text.context(analysis, 2, state, num_steps=10, forward=False), embeds)
    assert text.encoded == ["a cat and a dog"]
    torch.testing.assert_close(at[:end], merged_tokens[:end])
    torch.testing.assert_close(at[end:], text.encode("a cat and a dog")[end:])
    after = plugin.attnguide_edit_embeddings(text.context(analysis, 3, state, num_steps=10, forward=False), embeds)
    torch.testing.assert_close(after, at)  # kept at the later steps
    # the edits are kept as a difference to the incoming embeddings (an earlier edit passes through)
    shifted = plugin.attnguide_edit_embeddings(text.context(analysis, 4, state, num_steps=10, forward=False),
                                               embeds + 1)
    torch.testing.assert_close(shifted, at + 1)


def test_nothing_to_merge_leaves_the_embeddings_and_the_latents_alone():
    analysis = analysis_for("a cat and a dog", {"cat": [], "dog": []})
    text = FakeText()
    plugin = ToMeLoss()
    assert plugin.attnguide_edit_embeddings(text.context(analysis, 0, {}), text.encode("x")) is None
    assert plugin.compute(context_for(analysis), torch.rand(77, 4, 4)) is None


# --- the losses ----------------------------------------------------------------------------------


def test_entropy_by_hand_on_a_tiny_map():
    # tokens: 0 start, 1 and 2 the prompt, 3 end; start and end must not enter the softmax
    maps = torch.zeros(4, 2, 2, dtype=torch.float64)
    maps[0] = torch.tensor([[5.0, 0.0], [0.0, 0.0]])
    maps[1] = torch.tensor([[0.6, 0.4], [0.4, 0.6]])
    maps[2] = 1 - maps[1]
    maps[3] = torch.tensor([[0.0, 3.0], [0.0, 0.0]])
    # softmax over {1, 2} of A / 0.5 has two values per map: min-max gives [[1, 0], [0, 1]] for
    # token 1 ([[0, 1], [1, 0]] for token 2), so p = 1/2 on two pixels and 0 on two:
    # H = -2 (2 * 0.5 log(0.5 + 1e-5) + 2 * 0 * log(1e-5)) = -2 log(0.50001) = 1.3862544
    total, each = tome_entropy(maps, (1, 2), [1, 2])
    assert each.tolist() == pytest.approx([1.3862544, 1.3862544], abs=1e-7)
    assert total.item() == pytest.approx(2 * 1.3862544, abs=1e-7)


def test_entropy_with_three_levels_by_scalar_arithmetic():
    maps = torch.zeros(4, 2, 2, dtype=torch.float64)
    maps[1] = torch.tensor([[0.5, 0.6], [0.7, 0.6]], dtype=torch.float64)
    maps[2] = 1 - maps[1]
    # Q1 = sigmoid((A1 - A2) / 0.5) = sigmoid(4 A1 - 2) on each pixel
    q = [1 / (1 + math.exp(-(4 * a - 2))) for a in (0.5, 0.6, 0.7, 0.6)]
    m = [(v - min(q)) / (max(q) - min(q)) for v in q]
    p = [v / sum(m) for v in m]
    expected = -2 * sum(v * math.log(v + 1e-5) for v in p)
    total, _ = tome_entropy(maps, (1, 2), [1])
    assert total.item() == pytest.approx(expected, rel=1e-12)
    # a lower temperature sharpens the softmax but min-max keeps the pattern's shape
    assert tome_entropy(maps, (1, 2), [1], temperature=0.1)[0].item() != pytest.approx(expected)


def test_thresholds_step_sizes_and_caps_follow_the_official_tables():
    table = ToMeLoss().params.thresholds
    # official: thresholds[i] / 2 * n - 2 at 32x32; n = 2 subjects
    assert entropy_threshold(table, 0, 50, 2, 32 * 32) == pytest.approx(24.0)
    assert entropy_threshold(table, 4, 50, 2, 32 * 32) == pytest.approx(20.5)
    assert entropy_threshold(table, 30, 50, 2, 32 * 32) == pytest.approx(19.0)  # past the table: its last entry
    assert entropy_threshold(table, 0, 50, 3, 32 * 32) == pytest.approx(37.0)
    # 16x16 maps: scaled by log(256) / log(1024) = 0.8
    assert entropy_threshold(table, 0, 50, 2, 16 * 16) == pytest.approx(19.2)
    # on 10 steps, step 1 is step 5 of 50
    assert entropy_threshold(table, 1, 10, 2, 32 * 32) == pytest.approx(20.0)
    assert tome_step_size(0, 50, 3.0, (1.0, 0.0)) == 3.0
    assert tome_step_size(7, 50, 3.0, (1.0, 0.0)) == pytest.approx(3.0 * (1 - 7 / 49))


def test_semantic_binding_update_is_the_scaled_mse_gradient():
    generator = torch.Generator().manual_seed(1)
    w = torch.randn(6, 3, generator=generator, dtype=torch.float64) * 0.01
    x0 = torch.randn(3, generator=generator, dtype=torch.float64)
    target = torch.randn(6, generator=generator, dtype=torch.float64)

    def predict(x):
        return w @ x

    x, expected_losses = x0.clone(), []
    for _ in range(3):
        residual = w @ x - target
        expected_losses.append(float((residual**2).mean()))
        x = x - 1e4 * (2 / 6) * (w.T @ residual)  # grad of 1e4 * mean((W x - y)^2)
    got, losses = binding_update(x0, target, predict, iterations=3, scale=1e4)
    torch.testing.assert_close(got, x, rtol=1e-12, atol=1e-12)
    assert losses == pytest.approx(expected_losses, rel=1e-12)
    once, _ = binding_update(x0, target, predict, iterations=1, scale=2.0)
    torch.testing.assert_close(once, x0 - 2.0 * (2 / 6) * (w.T @ (w @ x0 - target)), rtol=1e-12, atol=1e-12)


def official_step_on_embeddings(embeds, analysis, text, alpha, threshold, cap, eot=True):
    """A transcription of the official order at one step (not its code): merge (before the first
    step), end substitution, semantic binding per subject (3 updates of the token alone against
    the anchor's prediction), then the entropy loop on the embeddings: forward, update, stop once
    that loss was below the target, at most `cap` times."""
    subjects = tome_subjects(analysis)
    e = token_merge(embeds, subjects)
    end = analysis.tokens.eot_position
    if eot:
        e[end:] = text.encode("a cat and a dog")[end:]
    for s in subjects:
        target, _ = text.forward(text.encode(s.anchor))
        x = e[s.composite].clone()
        for _ in range(3):
            x = x.detach().requires_grad_(True)
            prediction, _ = text.forward(x[None])
            (grad,) = torch.autograd.grad(1e4 * F.mse_loss(prediction, target), [x])
            x = x - grad
        e[s.composite] = x.detach()
    composites = [s.composite for s in subjects]
    updates = 0
    for _ in range(cap):
        e = e.detach().requires_grad_(True)
        _, maps = text.forward(e)
        loss, _ = tome_entropy(maps, analysis.tokens.prompt_positions, composites)
        (grad,) = torch.autograd.grad(loss, [e])
        e = (e - alpha * grad).detach()
        updates += 1
        if loss.item() < threshold:
            break
    return e, updates


@pytest.mark.parametrize("table_value, cap", [(-1000.0, 4), (1000.0, 4), (-1000.0, 1)])  # cap; at once; cap 1
def test_the_embedding_hook_follows_the_official_order_at_a_step(table_value, cap):
    analysis = analysis_for(PROMPT, BINDINGS)
    text = FakeText()
    embeds = text.encode(PROMPT)
    plugin = ToMeLoss({"eot_replace_step": 0, "thresholds": {0: table_value}, "refinement_steps": (cap, 1)})
    state = {}
    got = plugin.attnguide_edit_embeddings(text.context(analysis, 0, state), embeds)
    threshold = entropy_threshold({0: table_value}, 0, 50, 2, 16)
    expected, updates = official_step_on_embeddings(embeds, analysis, text, 3.0, threshold, cap)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    logs = state["embedding_logs"][0]
    assert logs["embedding_updates"] == updates == (1 if table_value > 100 else cap)
    assert {"binding_mse.0.cat", "binding_mse.1.dog", "end_substituted"} <= set(logs)
    # the plugin's encodings, in order: the merged prompt (end substitution), then the anchors
    assert text.encoded[1:4] == ["a cat and a dog", "a white cat", "a black dog"]
    # outside both windows the step only carries the edits along
    later = plugin.attnguide_edit_embeddings(text.context(analysis, 5, state, timestep=900), embeds)
    torch.testing.assert_close(later, got)


def official_latent_loop(z0, loss_fn, step_size, threshold, cap):
    """The official latent loop at one step (transcribed): forward, update with alpha / 2 (here
    `step_size`), stop once that loss was below the target or after `cap` updates."""
    z, updates = z0.clone(), 0
    for _ in range(cap):
        z = z.detach().requires_grad_(True)
        loss = loss_fn(z)
        (grad,) = torch.autograd.grad(loss, [z])
        z = (z - step_size * grad).detach()
        updates += 1
        if loss.item() < threshold:
            break
    return z, updates


@pytest.mark.parametrize("stop_after, cap", [(None, 4), (0, 4), (1, 4), (3, 4), (None, 1)])
def test_latent_refinement_makes_the_official_updates(stop_after, cap):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(8, 77 * 16, generator=generator, dtype=torch.float64) * 0.05
    z0 = torch.randn(1, 8, generator=generator, dtype=torch.float64)
    analysis = analysis_for(PROMPT, BINDINGS)
    composites = [s.composite for s in tome_subjects(analysis)]

    def maps_fn(z):
        return (z.flatten(1) @ weight).reshape(77, 4, 4).softmax(dim=0)

    def loss_fn(z):
        return tome_entropy(maps_fn(z), analysis.tokens.prompt_positions, composites)[0]

    step_size = 0.5 * 3.0 * 20  # a step that visibly lowers this entropy
    losses = []  # the entropy along the uncapped official loop
    z = z0.clone()
    for _ in range(cap):
        z = z.detach().requires_grad_(True)
        loss = loss_fn(z)
        losses.append(loss.item())
        z = z - step_size * torch.autograd.grad(loss, [z])[0]
    assert all(a > b for a, b in itertools.pairwise(losses))
    # a target between the losses of evaluations `stop_after - 1` and `stop_after`
    if stop_after is None:
        target = -1e9  # never met: the cap
    elif stop_after == 0:
        target = losses[0] + 1.0  # met at once: one update
    else:
        target = (losses[stop_after - 1] + losses[stop_after]) / 2
    table_value = 2 * (target / (math.log(16) / math.log(1024)) + 2) / 2  # inverse of the threshold's formula
    plugin = ToMeLoss({"thresholds": {0: table_value}, "refinement_steps": (cap, 1), "scale_factor": 60.0})
    threshold = entropy_threshold({0: table_value}, 0, 50, 2, 16)
    expected, updates = official_latent_loop(z0, loss_fn, step_size, threshold, cap)
    assert updates == (cap if stop_after is None else stop_after + 1)

    record = ImageRecord(0, PROMPT, 0)
    ctx = context_for(analysis)  # step 0 of 50, t = 999: the first cap
    got, _ = guide_image(run_plugin_manager([("tome", plugin)]), ctx, z0, maps_fn, {"tome": 1.0}, record)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    assert sum(r.logs["applied"] for r in record.losses) == updates
    assert all(r.step_size == step_size for r in record.losses)


# --- layers and families -------------------------------------------------------------------------


def test_sdxl_reads_tomes_layers_and_sd3_and_flux_are_refused():
    registry = make_plugin_manager().registry
    (sdxl,) = build_losses([{"name": "tome"}], registry, family="sdxl")
    assert sdxl.params.layers == TOME_SDXL_LAYERS
    assert sdxl.map_requests() == (MapRequest("cross", layers=TOME_SDXL_LAYERS),)
    (sd,) = build_losses([{"name": "tome"}], registry, family="sd")
    assert sd.map_requests() == ()  # the run's default maps
    with pytest.raises(ConfigError, match=r"loss plugin 'tome' cannot run on sd3 models .*needs a UNet"):
        build_losses([ToMeLoss()], registry, family="sd3")
    with pytest.raises(ConfigError, match=r"cannot run on flux models .*CLIP text embeddings .*a UNet"):
        build_losses([{"name": "tome"}], registry, family="flux")


def test_a_run_on_tiny_sd3_is_refused_before_it_starts():
    engine = Engine(load_pipeline("tiny-sd3"), parser="manual")
    analysis = analysis_for(PROMPT, BINDINGS, text_tokenizer(engine.pipe))
    with pytest.raises(ConfigError, match=r"'tome' cannot run on sd3 models"):
        engine.generate(PROMPT, [0], losses=[ToMeLoss()], analyses=[analysis], steps=1, output_type="latent",
                        progress=False)


# --- end to end ----------------------------------------------------------------------------------


def _generate(engine, prompt, bindings, losses=(), steps=2, **kwargs):
    analysis = analysis_for(prompt, bindings, text_tokenizer(engine.pipe))
    return engine.generate(prompt, [0], losses=list(losses), analyses=[analysis], steps=steps,
                           output_type="latent", progress=False, **kwargs)


def _finite_and_moved(result, plain, plugin="tome"):
    rows = [r for r in result.records[0].losses if r.plugin == plugin]
    assert rows and {r.step for r in rows} == {0}
    assert all(math.isfinite(r.value) and all(math.isfinite(v) for v in r.logs.values()) for r in rows)
    assert torch.isfinite(result.latents).all()
    assert (result.latents - plain.latents).abs().max() > 1e-4
    return rows


def test_tome_runs_end_to_end_on_tiny():
    engine = tiny_engine()
    plain = _generate(engine, PROMPT, BINDINGS, height=256, width=256)
    plugin = ToMeLoss({**FAST, "eot_replace_step": 0}, window=(0.0, 0.5))  # step 0 of 2
    result = _generate(engine, PROMPT, BINDINGS, [plugin], height=256, width=256)
    rows = _finite_and_moved(result, plain)
    first = rows[0].logs
    assert {"binding_mse.0.cat", "binding_mse.1.dog", "embedding_entropy", "end_substituted"} <= set(first)
    assert 1 <= first["embedding_updates"] <= 2 and sum(r.logs["applied"] for r in rows) <= 2
    assert first["threshold"] == pytest.approx(24 * 0.8)  # the tiny model's 16x16 maps
    state = result.run.plugin_state[0]["tome"]
    assert state["delta"].shape == (77, engine.pipe.text_encoder.config.hidden_size)


def test_tome_runs_end_to_end_on_tiny_sdxl_with_its_layers():
    pm = make_plugin_manager()
    engine = Engine(load_pipeline("tiny-sdxl"), parser="manual", plugin_manager=pm)
    plain = _generate(engine, PROMPT, BINDINGS, steps=1, height=256, width=256)
    spec = {"name": "tome", "window": [0.0, 1.0], **FAST}
    result = _generate(engine, PROMPT, BINDINGS, [spec], steps=1, height=256, width=256)
    assert result.config["losses"][0]["params"]["layers"] == list(TOME_SDXL_LAYERS)
    rows = _finite_and_moved(result, plain)
    # tiny-sdxl has transformer block 1 of up_blocks.0.attentions.1 only, at 8x8 for 256 px:
    # the latent phase reads those maps (threshold scaled by log(64) / log(1024) = 0.6)
    assert rows[0].logs["threshold"] == pytest.approx(24 * 0.6)
    assert "binding_mse.0.cat" in rows[0].logs


def test_tome_runs_on_the_toyworld_model():
    engine = Engine(load_pipeline("toyworld"), parser="manual")
    prompt, bindings = "a red circle and a blue square", {"circle": ["red"], "square": ["blue"]}
    plain = _generate(engine, prompt, bindings, steps=1)
    result = _generate(engine, prompt, bindings, [ToMeLoss(FAST, window=(0.0, 1.0))], steps=1)
    _finite_and_moved(result, plain)


def test_tome_composes_with_syngen_in_one_run():
    engine = tiny_engine()
    plain = _generate(engine, PROMPT, BINDINGS, ["syngen"], height=256, width=256)
    result = _generate(engine, PROMPT, BINDINGS, [ToMeLoss(FAST, window=(0.0, 0.5)), "syngen"],
                       height=256, width=256)
    rows = result.records[0].losses
    assert {r.plugin for r in rows} == {"tome", "syngen"}
    assert all(math.isfinite(r.value) for r in rows)
    # every evaluation holds both terms, ToMe's first (run order)
    evaluations = sorted({(r.step, r.refinement) for r in rows})
    for key in evaluations:
        assert [r.plugin for r in rows if (r.step, r.refinement) == key] == ["tome", "syngen"]
    assert (result.latents - plain.latents).abs().max() > 1e-4
