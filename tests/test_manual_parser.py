"""The manual parser: bindings from the configuration, checked against each prompt."""

from __future__ import annotations

import pytest

from attnguide.errors import ConfigError
from attnguide.models.tokenizer import clip_tokenizer
from attnguide.parsers.manual import ManualParser
from attnguide.prompts.parsing import analyse_prompt, get_parser


@pytest.fixture(scope="module")
def tokenizer():
    return clip_tokenizer()


def analyse(prompt: str, bindings, tokenizer):
    return analyse_prompt(prompt, ManualParser({"bindings": bindings}), tokenizer)


def summary(analysis) -> list[tuple[str, tuple[int, ...], list[tuple[str, tuple[int, ...]]]]]:
    return [
        (b.entity.text, b.entity.tokens, [(m.text, m.tokens) for m in b.modifiers])
        for b in analysis.bindings
    ]


def test_token_positions_are_entities_as_in_attend_and_excite(tokenizer):
    analysis = analyse("a cat and a frog", [2, 5], tokenizer)
    assert summary(analysis) == [("cat", (2,), []), ("frog", (5,), [])]


def test_position_outside_the_prompt_is_a_config_error_naming_prompt_and_position(tokenizer):
    for position in (0, 6, 80):
        with pytest.raises(ConfigError, match=rf"position {position} .*'a cat and a frog'.*1\.\.5"):
            analyse("a cat and a frog", [2, position], tokenizer)


def test_position_given_twice_is_a_config_error(tokenizer):
    with pytest.raises(ConfigError, match="twice"):
        analyse("a cat and a frog", [2, 2], tokenizer)


def test_positions_past_the_truncated_window_are_rejected(tokenizer):
    prompt = "x " * 80 + "cat"
    with pytest.raises(ConfigError, match=r"1\.\.75"):
        analyse(prompt, [76], tokenizer)


def test_words_are_entities_found_whole_and_case_insensitively(tokenizer):
    analysis = analyse("A Cat on a catalogue and a frog", ["cat", "frog"], tokenizer)
    assert summary(analysis) == [("Cat", (2,), []), ("frog", (8,), [])]


def test_pairs_give_entities_with_their_modifiers(tokenizer):
    pairs = {"crown": ["red"], "strawberry": ["golden"]}
    analysis = analyse("a red crown and a golden strawberry", pairs, tokenizer)
    assert summary(analysis) == [
        ("crown", (3,), [("red", (2,))]),
        ("strawberry", (7,), [("golden", (6,))]),
    ]


def test_repeated_modifier_goes_to_the_occurrence_nearest_its_entity(tokenizer):
    analysis = analyse(
        "a red crown and a red strawberry", {"strawberry": ["red"], "crown": ["red"]}, tokenizer
    )
    assert summary(analysis) == [
        ("crown", (3,), [("red", (2,))]),
        ("strawberry", (7,), [("red", (6,))]),
    ]


def test_single_modifier_may_be_a_string_and_words_may_be_phrases(tokenizer):
    analysis = analyse("a brown teddy bear", {"teddy bear": "brown"}, tokenizer)
    assert summary(analysis) == [("teddy bear", (3, 4), [("brown", (2,))])]


def test_word_not_in_the_prompt_is_a_config_error_naming_prompt_and_word(tokenizer):
    with pytest.raises(ConfigError, match=r"'dog' is not in prompt 'a cat and a frog'"):
        analyse("a cat and a frog", ["cat", "dog"], tokenizer)
    with pytest.raises(ConfigError, match=r"'blue' is not in prompt 'a red crown'"):
        analyse("a red crown", {"crown": ["blue"]}, tokenizer)


def test_word_named_more_often_than_it_occurs_is_a_config_error(tokenizer):
    with pytest.raises(ConfigError, match="more often than it occurs"):
        analyse("a cat", ["cat", "cat"], tokenizer)
    assert len(analyse("a cat and a cat", ["cat", "cat"], tokenizer).bindings) == 2


def test_no_bindings_gives_a_warning_not_an_error(tokenizer):
    analysis = analyse("a cat", [], tokenizer)
    assert analysis.bindings == [] and "no nouns" in analysis.warnings[0]


def test_bad_params_are_config_errors_naming_the_parser():
    with pytest.raises(ConfigError, match="parser 'manual'"):
        ManualParser({"bindings": [2, "cat"]})
    with pytest.raises(ConfigError, match="parser 'manual'.*unknown"):
        ManualParser({"bindings": [2], "unknown": 1})


def test_parse_lists_the_named_words_in_prompt_order():
    parser = ManualParser({"bindings": {"crown": ["red"]}})
    parsed = parser.parse("a red crown")
    assert [(w.index, w.text, w.start) for w in parsed.words] == [(0, "red", 2), (1, "crown", 6)]
    (binding,) = parser.bindings("a red crown")
    assert binding.entity.index == 1 and binding.modifiers[0].index == 0


def test_registered_under_manual_and_cached_per_params():
    one = get_parser("manual", {"bindings": ["cat"]})
    assert isinstance(one, ManualParser)
    assert get_parser("manual", {"bindings": ["cat"]}) is one
    assert get_parser("manual", {"bindings": ["dog"]}) is not one


def test_get_parser_looks_up_the_plugin_managers_registry():
    from attnguide.plugin.manager import make_plugin_manager

    registry = make_plugin_manager().registry
    assert isinstance(get_parser("manual", {"bindings": ["cat"]}, registry), ManualParser)


def test_unknown_parser_name_is_a_plugin_error_listing_the_known_ones():
    from attnguide.errors import PluginError

    with pytest.raises(PluginError, match="manual, spacy, stanza"):
        get_parser("spacey")
