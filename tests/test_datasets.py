"""Prompt sets: sizes checked against the source files, seeded sampling, DVMP, CLI, recipes."""

from __future__ import annotations

import argparse
import io
import re
from importlib import resources
from pathlib import Path

import pytest

from attnguide.datasets import (
    SETS,
    generate_dvmp,
    get_prompt_set,
    load_prompt_items,
    load_prompt_set,
)
from attnguide.datasets import dvmp as dvmp_module
from attnguide.errors import ConfigError

DOCS = Path(__file__).resolve().parents[1] / "docs" / "datasets.md"


@pytest.mark.parametrize(("name", "size"), [
    ("attend-and-excite", 276),
    ("attend-and-excite/animals", 66),
    ("attend-and-excite/animals-objects", 144),
    ("attend-and-excite/objects", 66),
    ("abc-6k", 6434),
    ("cc-500", 602),
    ("t2i-compbench", 900),
    ("t2i-compbench/color", 300),
    ("t2i-compbench/shape", 300),
    ("t2i-compbench/texture", 300),
    ("dvmp", 200),
])
def test_each_set_has_the_size_of_its_source(name, size):
    prompts = load_prompt_set(name)
    assert len(prompts) == size
    assert all(p and p == p.strip() for p in prompts)


def test_attend_and_excite_items_carry_group_subject_nouns_and_phrases():
    items = load_prompt_items("attend-and-excite")
    assert [i.category for i in items[:1]] == ["animals"] and items[-1].category == "objects"
    assert [i.index for i in items] == list(range(276))
    by_prompt = {i.prompt: i for i in items}
    assert by_prompt["a dog and a frog"].subjects == ("dog", "frog")
    assert by_prompt["a horse with a glasses"].phrases == ("a horse", "a glasses")
    assert by_prompt["a pink crown and a purple bow"].subjects == ("crown", "bow")
    for item in items:
        assert len(item.subjects) == 2
        assert all(p.split()[-1] == s for p, s in zip(item.phrases, item.subjects))


def test_group_sets_are_the_slices_of_the_whole_set():
    whole = load_prompt_set("attend-and-excite")
    groups = [load_prompt_set(f"attend-and-excite/{g}") for g in ("animals", "animals-objects", "objects")]
    assert sum(groups, []) == whole


def test_a_seed_shuffles_deterministically_before_the_limit():
    full = load_prompt_set("cc-500")
    shuffled = load_prompt_set("cc-500", seed=7)
    assert shuffled == load_prompt_set("cc-500", seed=7)
    assert shuffled != full and sorted(shuffled) == sorted(full)
    assert load_prompt_set("cc-500", limit=5, seed=7) == shuffled[:5]
    assert load_prompt_set("cc-500", limit=5, seed=8) != shuffled[:5]
    assert load_prompt_set("cc-500", limit=5) == full[:5]


def test_names_ignore_case_and_underscores():
    assert load_prompt_set("Attend_And_Excite/Animals_Objects", limit=3) == \
        load_prompt_set("attend-and-excite/animals-objects", limit=3)


def test_an_unknown_set_is_a_config_error_listing_every_name():
    with pytest.raises(ConfigError) as info:
        load_prompt_set("abc-6000")
    message = str(info.value)
    assert "did you mean 'abc-6k'" in message
    assert all(name in message for name in SETS)


def test_a_negative_limit_is_a_config_error():
    with pytest.raises(ConfigError, match="limit"):
        load_prompt_set("cc-500", limit=-1)


def test_every_set_ships_its_licence_and_is_documented_with_source_and_licence():
    root = resources.files("attnguide.datasets")
    docs = DOCS.read_text(encoding="utf-8")
    for prompt_set in SETS.values():
        if prompt_set.licence_file:
            licence = root.joinpath(prompt_set.licence_file).read_text(encoding="utf-8")
            assert "MIT License" in licence
            assert root.joinpath(prompt_set.licence_file).parent.joinpath("SOURCE.md").is_file()
        assert f"`{prompt_set.name}`" in docs
    for source in ("Attend-and-Excite", "Structured-Diffusion-Guidance", "T2I-CompBench", "dvmp.py", "MIT"):
        assert source in docs


# -- DVMP -------------------------------------------------------------------------------
def test_dvmp_vocabulary_has_the_sizes_of_syngens():
    assert (len(dvmp_module.OBJECTS), len(dvmp_module.FRUITS), len(dvmp_module.ANIMALS), len(dvmp_module.COLORS)) == \
        (18, 4, 16, 13)
    assert {k: len(v) for k, v in dvmp_module.MODIFIERS.items()} == {"animal": 4, "object": 7, "fruit": 2}


def test_dvmp_is_reproducible_per_seed_and_differs_across_seeds():
    first = [p.text for p in generate_dvmp(50, seed=3)]
    assert first == [p.text for p in generate_dvmp(50, seed=3)]
    assert first != [p.text for p in generate_dvmp(50, seed=4)]
    assert [p.text for p in generate_dvmp(20, seed=3)] == first[:20]  # a prefix, not a new draw


def test_dvmp_prompts_follow_the_sampling_rules():
    prompts = generate_dvmp(400, seed=0)
    assert len({p.text for p in prompts}) == 400
    counts, kinds, with_colour = set(), set(), 0
    for prompt in prompts:
        counts.add(len(prompt.phrases))
        assert prompt.text == " and ".join(ph.text for ph in prompt.phrases)
        assert len({ph.text for ph in prompt.phrases}) == len(prompt.phrases)
        for phrase in prompt.phrases:
            kinds.add(phrase.kind)
            assert phrase.noun in dvmp_module.NOUNS[phrase.kind]
            colours = [m for m in phrase.modifiers if m in dvmp_module.COLORS]
            others = [m for m in phrase.modifiers if m not in dvmp_module.COLORS]
            assert phrase.modifiers, "every phrase has at least one modifier"
            assert len(colours) <= 1 and (not colours or phrase.modifiers[0] == colours[0])
            with_colour += bool(colours)
            assert set(others) <= set(dvmp_module.MODIFIERS[phrase.kind]) and len(set(others)) == len(others)
            assert len(others) <= dvmp_module.MAX_EXTRA_MODIFIERS[phrase.kind]
            article = phrase.text.split()[0]
            assert article == ("an" if phrase.modifiers[0][0] in "aeiou" else "a")
    assert counts == {1, 2, 3} and kinds == {"animal", "fruit", "object"}
    assert 0.2 < with_colour / sum(len(p.phrases) for p in prompts) < 0.6


def test_dvmp_set_is_seed_zero_of_the_generator():
    assert load_prompt_set("dvmp", limit=10) == [p.text for p in generate_dvmp(10, seed=0)]
    item = load_prompt_items("dvmp", limit=1)[0]
    assert item.subjects == generate_dvmp(1, 0)[0].subjects


def test_dvmp_that_cannot_be_made_distinct_is_a_config_error(monkeypatch):
    monkeypatch.setattr(dvmp_module, "MAX_MISSES", 50)
    with pytest.raises(ConfigError, match="distinct"):
        generate_dvmp(100_000, seed=0, max_phrases=1)


# -- CLI and recipes ----------------------------------------------------------------------
def cli(*argv: str) -> str:
    from attnguide.cli import datasets_cmd

    parser = argparse.ArgumentParser(prog="attnguide")
    datasets_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["datasets", *argv])
    out = io.StringIO()
    assert args.func(args, out=out) == 0
    return out.getvalue()


def test_cli_list_shows_every_set_with_size_and_source():
    text = cli("list")
    for name in SETS:
        assert re.search(rf"^{re.escape(name)}\s+{len(get_prompt_set(name).read())}\s", text, re.M), name
    assert text.count("source:") == len(SETS)


def test_cli_show_and_dvmp_print_the_prompts():
    assert cli("show", "attend-and-excite", "--limit", "2").splitlines() == load_prompt_set("attend-and-excite", 2)
    assert cli("show", "cc-500", "--limit", "3", "--seed", "1").splitlines() == load_prompt_set("cc-500", 3, 1)
    assert cli("dvmp", "--n", "5", "--seed", "2").splitlines() == [p.text for p in generate_dvmp(5, 2)]
    assert '"subjects"' in cli("dvmp", "--n", "1", "--json")


def test_cli_unknown_set_exits_2_with_the_names(capsys):
    from attnguide.cli.main import main

    assert main(["datasets", "show", "nope"]) == 2
    assert "cc-500" in capsys.readouterr().err


def test_a_recipe_takes_prompts_from_a_named_set(tmp_path):
    from attnguide.runs.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text("name: r\nmodel: {id: tiny}\nprompts: {set: attend-and-excite, limit: 3, seed: 5}\n"
                    f"seeds: [0]\noutput_dir: {tmp_path}\n", encoding="utf-8")
    assert load_recipe(str(path)).prompts == load_prompt_set("attend-and-excite", limit=3, seed=5)
