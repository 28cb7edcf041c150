"""The shipped T5-convention Unigram tokenizer and alignment on it (no start token)."""

from __future__ import annotations

import warnings

import pytest

from attnguide.models.t5_tokenizer import VOCAB_SIZE, t5_tokenizer, train_t5_unigram
from attnguide.prompts.alignment import TruncationWarning, align_bindings, tokenize_prompt
from attnguide.testing import analysis_for, positions

PROMPT = "a pink sunflower and a yellow flamingo"


@pytest.fixture(scope="module")
def t5():
    return t5_tokenizer()


def test_it_follows_t5s_conventions(t5):
    assert (t5.pad_token_id, t5.eos_token_id, t5.unk_token_id) == (0, 1, 2)
    assert t5.bos_token is None and len(t5) == VOCAB_SIZE
    ids = t5("a cat").input_ids
    assert ids[-1] == 1 and t5.convert_ids_to_tokens(ids[:-1]) == ["▁a", "▁cat"]
    assert t5.convert_ids_to_tokens(t5("🐱").input_ids)[-2] == "<unk>"  # no byte fallback, as T5


def test_words_align_from_position_0_and_multi_piece_words_get_every_piece(t5):
    tokenized = tokenize_prompt(PROMPT, t5)
    assert tokenized.first == 0
    assert tokenized.tokens.pieces[-1] == "</s>" and tokenized.tokens.pieces[0] == "▁a"
    analysis = analysis_for(PROMPT, {"sunflower": ["pink"], "flamingo": ["yellow"]}, t5)
    pieces = analysis.tokens.pieces
    assert positions(analysis, "pink") == (1,) and pieces[1] == "▁pink"
    flamingo = positions(analysis, "flamingo")
    assert len(flamingo) >= 2 and "".join(pieces[p] for p in flamingo) == "▁flamingo"
    assert analysis.tokens.prompt_positions == tuple(range(0, analysis.tokens.eot_position))


def test_truncation_keeps_the_window_minus_the_end_token(t5):
    prompt = " ".join(["cat"] * 300) + " and a red frog"
    with pytest.warns(TruncationWarning, match="'frog'"):
        from attnguide.types import Binding, WordRef

        start = prompt.index("frog")
        result = align_bindings(prompt, [Binding(WordRef(0, "frog", start, start + 4))], t5)
    assert result.tokens.eot_position == 255 and result.bindings == []


def test_manual_positions_on_t5_start_at_0(t5):
    from attnguide.prompts.parsing import analyse_prompt, get_parser

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        analysis = analyse_prompt("a cat and a frog", get_parser("manual", {"bindings": [1, 4]}), t5)
    assert [b.entity.text for b in analysis.bindings] == ["cat", "frog"]


@pytest.mark.slow
def test_the_build_command_trains_a_tokenizer_with_the_same_conventions():
    tok = train_t5_unigram()
    assert tok.get_vocab_size() == VOCAB_SIZE
    assert [tok.id_to_token(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]
    assert tok.encode("a cat").tokens == ["▁a", "▁cat", "</s>"]
