"""Property: alignment never fails on odd prompts, and its positions are always usable.

Each example is one hypothesis byte string decoded into a prompt (colours, objects, animals,
punctuation, emoji, random code points, odd whitespace) and bindings built from the words' own
spans - one draw per example keeps 10,000 examples within seconds.
"""

from __future__ import annotations

import random
import warnings

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnguide.prompts.alignment import TruncationWarning, align_bindings
from attnguide.models.t5_tokenizer import t5_tokenizer
from attnguide.models.tokenizer import clip_tokenizer
from attnguide.types import Binding, WordRef

TOKENIZERS = (clip_tokenizer(), clip_tokenizer(pad_token="!"))
T5 = t5_tokenizer()

COLOURS = ["red", "blue", "Green", "YELLOW", "pink", "sky-blue", "golden", "naïve", "crème"]
OBJECTS = ["car", "bike", "table", "antidisestablishmentarianism", "crown", "Eiffel", "café"]
ANIMALS = ["cat", "frog", "flamingo", "dog", "bird", "e\u0301clair", "ﬁsh"]
PUNCT = [",", ".", "!", "!!", ";", "(", ")", '"', "...", "-", "'s", "<|endoftext|>"]
EMOJI = ["🐱", "🦩", "👩\u200d🚀", "🇫🇷", "❤️"]
SEPARATORS = [" ", " ", " ", "  ", "\t", "\n", "", " \u3000 ", "\u200b", " \r\n "]
VOCABULARY = COLOURS + OBJECTS + ANIMALS


def random_word(data: bytes, at: int) -> tuple[str, int]:
    """1-4 code points from the bytes at ``at`` (no surrogates, no whitespace)."""
    length, at = 1 + data[at % len(data)] % 4, at + 1
    chars = []
    for _ in range(length):
        code = (data[at % len(data)] << 8 | data[(at + 1) % len(data)]) * 17 % 0x2FFFF + 1
        at += 2
        char = chr(code)
        chars.append("x" if char.isspace() or 0xD800 <= code <= 0xDFFF else char)
    return "".join(chars), at


def decode(data: bytes) -> tuple[str, list[Binding], object]:
    """A prompt and bindings from a byte string (two or more bytes per word)."""
    prompt, spans, at = "", [], 0
    while at < len(data):
        kind, pick, at = data[at] % 8, data[(at + 1) % len(data)], at + 2
        if kind <= 4:
            word = VOCABULARY[pick % len(VOCABULARY)]
        elif kind == 5:
            word = PUNCT[pick % len(PUNCT)]
        elif kind == 6:
            word = EMOJI[pick % len(EMOJI)]
        else:
            word, at = random_word(data, at)
        spans.append((len(prompt), len(prompt) + len(word)))
        prompt += word + SEPARATORS[pick % len(SEPARATORS)]
    refs = [WordRef(i, prompt[s:e], s, e) for i, (s, e) in enumerate(spans)]
    rnd = random.Random(data)
    pool = rnd.sample(range(len(refs)), len(refs))
    bindings, wanted = [], rnd.randint(0, 6)
    while pool and len(bindings) < wanted:
        entity, pool = pool[0], pool[1:]
        take = rnd.randint(0, min(3, len(pool)))
        modifiers, pool = sorted(pool[:take]), pool[take:]
        bindings.append(Binding(refs[entity], tuple(refs[m] for m in modifiers)))
    return prompt, bindings, TOKENIZERS[data[0] % 2]


def check_alignment(prompt, bindings, tokenizer, first, window):
    """Positions are unique, inside the window, after the start token (``first``) if any."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        result = align_bindings(prompt, bindings, tokenizer)
    tokens = result.tokens
    assert tokens.eot_position <= window - 1
    assert len(tokens.pieces) == tokens.eot_position + 1
    assert tokens.prompt_positions == tuple(range(first, tokens.eot_position))
    for binding in result.bindings:
        positions = binding.positions
        assert all(first <= p < tokens.eot_position for p in positions)
        assert len(positions) == len(set(positions))
        assert binding.entity.tokens and all(m.tokens for m in binding.modifiers)
    assert len(result.bindings) <= len(bindings)


FUZZ = settings(
    max_examples=10_000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(st.binary(min_size=2, max_size=260).map(decode))
def test_alignment_never_raises_and_positions_are_in_range_and_unique(case):
    prompt, bindings, tokenizer = case
    check_alignment(prompt, bindings, tokenizer, first=1, window=77)


@FUZZ
@given(st.binary(min_size=2, max_size=260).map(decode))
def test_alignment_on_the_t5_sentencepiece_tokenizer_never_raises_and_starts_at_position_0(case):
    prompt, bindings, _ = case
    check_alignment(prompt, bindings, T5, first=0, window=T5.model_max_length)


def test_decoded_examples_cover_truncation_unicode_and_bindings():
    rnd = random.Random(0)
    cases = [decode(bytes(rnd.randrange(256) for _ in range(260))) for _ in range(50)]
    assert any(len(TOKENIZERS[0](p, add_special_tokens=False).input_ids) > 75 for p, _, _ in cases)
    assert any(any(ord(c) > 0x2000 for c in p) for p, _, _ in cases)
    assert sum(len(b) for _, b, _ in cases) > 50
