"""Words of bindings land on the token positions the text encoder sees, from character offsets."""

from __future__ import annotations

import re
import warnings

import pytest

from attnguide.prompts.alignment import TruncationWarning, align_bindings, tokenize_prompt
from attnguide.errors import ConfigError
from attnguide.models.tokenizer import clip_tokenizer
from attnguide.prompts.parsing import Parser, analyse_prompt
from attnguide.types import Binding, ParsedPrompt, Word, WordRef


@pytest.fixture(scope="module")
def tokenizer():
    return clip_tokenizer()


@pytest.fixture(scope="module")
def sd2_tokenizer():
    return clip_tokenizer(pad_token="!")


def ref(prompt: str, text: str, occurrence: int = 0) -> WordRef:
    starts = [m.start() for m in re.finditer(re.escape(text), prompt)]
    start = starts[occurrence]
    return WordRef(index=start, text=text, start=start, end=start + len(text))


def bind(prompt: str, entity: str, *modifiers: str, occurrence: int = 0) -> Binding:
    return Binding(
        ref(prompt, entity, occurrence), tuple(ref(prompt, m, occurrence) for m in modifiers)
    )


def pieces_of(tokens, positions) -> list[str]:
    return [tokens.pieces[p] for p in positions]


def test_simple_prompt_positions_follow_the_start_token(tokenizer):
    prompt = "a red car"
    result = align_bindings(prompt, [bind(prompt, "car", "red")], tokenizer)
    (b,) = result.bindings
    assert b.entity.tokens == (3,) and b.modifiers[0].tokens == (2,)
    pieces = ("<|startoftext|>", "a</w>", "red</w>", "car</w>", "<|endoftext|>")
    assert result.tokens.pieces == pieces
    assert result.tokens.prompt_positions == (1, 2, 3)
    assert result.tokens.eot_position == 4
    assert result.warnings == []


def test_multi_piece_word_gets_every_piece(tokenizer):
    prompt = "an antidisestablishmentarianism cat"
    binding = bind(prompt, "cat", "antidisestablishmentarianism")
    result = align_bindings(prompt, [binding], tokenizer)
    modifier = result.bindings[0].modifiers[0]
    assert len(modifier.tokens) > 1
    assert modifier.tokens == tuple(range(2, 2 + len(modifier.tokens)))
    joined = "".join(pieces_of(result.tokens, modifier.tokens)).replace("</w>", "")
    assert joined == "antidisestablishmentarianism"


def test_repeated_words_each_get_their_own_position(tokenizer):
    prompt = "a red car and a red bike"
    bindings = [bind(prompt, "car", "red"), Binding(ref(prompt, "bike"), (ref(prompt, "red", 1),))]
    car, bike = align_bindings(prompt, bindings, tokenizer).bindings
    assert car.modifiers[0].tokens == (2,) and bike.modifiers[0].tokens == (6,)


def test_casing_does_not_matter(tokenizer):
    prompt = "A RED Car"
    (b,) = align_bindings(prompt, [bind(prompt, "Car", "RED")], tokenizer).bindings
    assert (b.entity.tokens, b.modifiers[0].tokens) == ((3,), (2,))
    assert b.entity.text == "Car"


def test_punctuation_next_to_a_word_is_not_part_of_it(tokenizer):
    prompt = "a red car, a blue bike!"
    bindings = [bind(prompt, "car", "red"), bind(prompt, "bike", "blue")]
    result = align_bindings(prompt, bindings, tokenizer)
    tokens = result.tokens
    for b in result.bindings:
        assert pieces_of(tokens, b.entity.tokens) == [b.entity.text + "</w>"]


def test_accents_and_emoji_are_aligned(tokenizer):
    prompt = "a naïve café cat 🐱 and a crème brûlée"
    bindings = [
        bind(prompt, "cat", "naïve", "café"),
        bind(prompt, "brûlée", "crème"),
        bind(prompt, "🐱"),
    ]
    result = align_bindings(prompt, bindings, tokenizer)
    cat, dessert, emoji = result.bindings
    tokenized = tokenize_prompt(prompt, tokenizer)
    for b in result.bindings:
        for word in (b.entity, *b.modifiers):
            spans = [tokenized.spans[p - 1] for p in word.tokens]  # byte pieces may share a span
            assert (min(s for s, _ in spans), max(e for _, e in spans)) == (word.start, word.end)
    assert len(emoji.entity.tokens) == 1
    all_positions = [p for b in result.bindings for p in b.positions]
    assert len(all_positions) == len(set(all_positions))


def test_decomposed_accents_still_overlap_their_word(tokenizer):
    prompt = "an e\u0301clair"  # e + combining acute, NFC-normalised by the tokenizer
    (b,) = align_bindings(prompt, [bind(prompt, "e\u0301clair")], tokenizer).bindings
    assert b.entity.tokens == (2, 3)


def test_extra_whitespace_tabs_and_newlines(tokenizer):
    prompt = "  a   red\tcar\n\nand  a blue   bike  "
    bindings = [bind(prompt, "car", "red"), bind(prompt, "bike", "blue")]
    result = align_bindings(prompt, bindings, tokenizer)
    car, bike = result.bindings
    assert (car.modifiers[0].tokens, car.entity.tokens) == ((2,), (3,))
    assert (bike.modifiers[0].tokens, bike.entity.tokens) == ((6,), (7,))


def test_modifier_sharing_all_pieces_with_its_entity_is_dropped_with_a_note(tokenizer):
    prompt = "a redcar"
    binding = Binding(WordRef(0, "redcar", 2, 8), (WordRef(1, "red", 2, 5),))
    result = align_bindings(prompt, [binding], tokenizer)
    assert result.bindings[0].modifiers == ()
    assert "no tokens of its own" in result.warnings[0]


def long_prompt() -> str:
    return "a red car and a blue bike and " + "a very tall tree and " * 20 + "a green frog"


def test_truncation_keeps_77_positions_and_warns_once_naming_dropped_words(tokenizer):
    prompt = long_prompt()
    bindings = [
        bind(prompt, "car", "red"),
        Binding(ref(prompt, "frog"), (ref(prompt, "green"),)),
        Binding(ref(prompt, "tree", 19), (ref(prompt, "tall", 19),)),
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = align_bindings(prompt, bindings, tokenizer)
    truncation = [w for w in caught if issubclass(w.category, TruncationWarning)]
    assert len(truncation) == 1
    message = str(truncation[0].message)
    assert "'frog' (entity)" in message and "'tall' (modifier of 'tree')" in message
    assert result.warnings[0] == message
    assert [b.entity.text for b in result.bindings] == ["car"]
    assert len(result.tokens.pieces) == 77
    assert result.tokens.prompt_positions == tuple(range(1, 76))
    assert result.tokens.eot_position == 76


def test_a_binding_keeps_its_entity_when_only_a_modifier_is_cut(tokenizer):
    filler = "x " * 74
    prompt = filler + "car red"  # car at position 75, red past the window
    binding = Binding(ref(prompt, "car"), (ref(prompt, "red"),))
    with pytest.warns(TruncationWarning, match="'red' \\(modifier of 'car'\\)"):
        result = align_bindings(prompt, [binding], tokenizer)
    (b,) = result.bindings
    assert b.entity.tokens == (75,) and b.modifiers == ()


def test_word_cut_in_the_middle_is_dropped_whole(tokenizer):
    prompt = "x " * 74 + "antidisestablishmentarianism"
    with pytest.warns(TruncationWarning, match="antidisestablishmentarianism"):
        result = align_bindings(prompt, [bind(prompt, "antidisestablishmentarianism")], tokenizer)
    assert result.bindings == []


def test_sd2_openclip_variant_aligns_the_same_words(tokenizer, sd2_tokenizer):
    prompt = "wow! a red car!! and a blue bike"
    bindings = [bind(prompt, "car", "red"), bind(prompt, "bike", "blue")]
    sd1 = align_bindings(prompt, bindings, tokenizer)
    sd2 = align_bindings(prompt, bindings, sd2_tokenizer)
    for b1, b2 in zip(sd1.bindings, sd2.bindings):
        assert pieces_of(sd1.tokens, b1.entity.tokens) == pieces_of(sd2.tokens, b2.entity.tokens)
    assert sd2.tokens.pieces[0] == "<|startoftext|>"
    assert sd2.tokens.pieces[sd2.tokens.eot_position] == "<|endoftext|>"
    assert all(p <= 76 for b in sd2.bindings for p in b.positions)


def test_tokenize_prompt_matches_the_pipelines_padded_encoding(tokenizer, sd2_tokenizer):
    prompt = "a photo of an astronaut riding a horse on mars, " * 4
    for tok in (tokenizer, sd2_tokenizer):
        ids = tok(prompt, padding="max_length", max_length=77, truncation=True).input_ids
        tokens = tokenize_prompt(prompt, tok).tokens
        assert tuple(tok.convert_ids_to_tokens(ids[: tokens.eot_position + 1])) == tokens.pieces


def test_tokenizer_without_offsets_is_a_config_error():
    class Slow:
        model_max_length = 77

        def __call__(self, *args, **kwargs):
            raise NotImplementedError("return_offset_mapping is not available")

    with pytest.raises(ConfigError, match="no character offsets"):
        tokenize_prompt("a cat", Slow())


class WordsParser(Parser):
    """Every whitespace-separated word is a noun root: a parser stub for analyse_prompt."""

    name = "words"

    def parse(self, prompt: str) -> ParsedPrompt:
        words = [
            Word(i, m.group(), m.start(), m.end(), "NOUN", -1, "root")
            for i, m in enumerate(re.finditer(r"\S+", prompt))
        ]
        return ParsedPrompt(prompt, tuple(words), self.name)


def test_analyse_prompt_records_the_truncation_warning_in_the_analysis(tokenizer):
    with pytest.warns(TruncationWarning):
        analysis = analyse_prompt(long_prompt(), WordsParser(), tokenizer)
    assert any("words of bindings dropped" in w for w in analysis.warnings)
    assert all(1 <= p <= 75 for b in analysis.bindings for p in b.positions)


def test_analyse_prompt_rejects_an_empty_prompt(tokenizer):
    for prompt in ("", "   "):
        with pytest.raises(ConfigError, match="prompt .* is empty"):
            analyse_prompt(prompt, WordsParser(), tokenizer)


def test_prompt_without_nouns_gives_no_bindings_and_a_warning(tokenizer):
    class Nothing(WordsParser):
        def parse(self, prompt):
            return ParsedPrompt(prompt, (), self.name)

    analysis = analyse_prompt("very beautiful", Nothing(), tokenizer)
    assert analysis.bindings == []
    assert "no nouns" in analysis.warnings[0]
    assert analysis.tokens.eot_position == 3
