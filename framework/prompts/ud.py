"""Normalise a spaCy (ClearNLP-style) dependency parse to Universal Dependencies.

The binding rules (``attnguide.prompts.binding``) read UD only, so that every parser is held to one set
of rules. spaCy's English models use the ClearNLP scheme, which differs from UD in labels *and*
in tree shape; ``clearnlp_to_ud`` converts both:

* **copula** - ClearNLP makes "is" the head of "the car is red" (``nsubj`` car, ``acomp``/``attr``
  red); UD makes the predicate the head (red: ``nsubj`` car, ``cop`` is). The predicate takes
  the copula's head and label, the copula's other dependents move to the predicate.
* **prepositions** - ClearNLP: ``photo -prep-> of -pobj-> cat``; UD: ``photo -nmod-> cat
  -case-> of``. The object takes the preposition's place as ``nmod`` (nominal head) or ``obl``
  (anything else), the preposition becomes its ``case``.
* **coordinating conjunctions** - ClearNLP attaches ``cc`` to the first conjunct, UD to the
  conjunct that follows it.
* **labels** - the table ``CLEARNLP_TO_UD`` plus a few that depend on the head
  (``npadvmod`` -> ``nmod:npmod`` under a nominal, ``obl:npmod`` elsewhere; ``acomp`` outside a
  copula -> ``xcomp``; ``attr`` with an expletive -> ``nsubj``).

A restructuring that would not give a tree (never seen, guarded anyway) falls back to the
label-only mapping on the original heads. The full table is in docs/parsers.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from ..types import Word

NOMINAL_UPOS = frozenset({"NOUN", "PROPN", "PRON", "NUM"})
VERBAL_UPOS = frozenset({"VERB", "AUX"})
BE_FORMS = frozenset({"be", "is", "are", "was", "were", "am", "been", "being", "'s", "'re", "'m"})

CLEARNLP_TO_UD: Mapping[str, str] = {
    "root": "root",
    "acl": "acl",
    "acomp": "xcomp",  # outside a copula: "the dog looks happy"; a copula's acomp becomes its head
    "advcl": "advcl",
    "advmod": "advmod",
    "agent": "case",  # "by" of a passive; its object becomes obl:agent
    "amod": "amod",
    "appos": "appos",
    "attr": "xcomp",  # outside a copula ("become a doctor"); with an expletive -> nsubj
    "aux": "aux",
    "auxpass": "aux:pass",
    "case": "case",
    "cc": "cc",
    "ccomp": "ccomp",
    "compound": "compound",
    "conj": "conj",
    "csubj": "csubj",
    "csubjpass": "csubj:pass",
    "dative": "iobj",
    "dep": "dep",
    "det": "det",
    "dobj": "obj",
    "expl": "expl",
    "intj": "discourse",
    "mark": "mark",
    "meta": "discourse",
    "neg": "advmod",
    "nmod": "nmod",  # ClearNLP's nmod is case-less ("a knee high sock"); the rules read it so
    "npadvmod": "obl:npmod",  # nmod:npmod under a nominal head
    "nsubj": "nsubj",
    "nsubjpass": "nsubj:pass",
    "nummod": "nummod",
    "oprd": "xcomp",
    "parataxis": "parataxis",
    "pcomp": "obl",  # only when its preposition could not be restructured
    "pobj": "obl",  # idem
    "poss": "nmod:poss",
    "preconj": "cc:preconj",
    "predet": "det:predet",
    "prep": "dep",  # only a stranded preposition (no object) keeps a label of its own
    "prt": "compound:prt",
    "punct": "punct",
    "quantmod": "advmod",
    "relcl": "acl:relcl",
    "xcomp": "xcomp",
}
"""Context-free part of the ClearNLP -> UD label mapping (lower-case ClearNLP keys)."""

_PREPOSITIONAL = frozenset({"prep", "agent", "dative"})


def clearnlp_to_ud(words: Sequence[Word]) -> tuple[Word, ...]:
    """Convert a ClearNLP-labelled parse to UD labels and UD tree shape.

    Args:
        words: the parse, ``words[i].index == i``, heads as word indices (``-1`` for a root),
            ``deprel`` in ClearNLP vocabulary (any case; ``ROOT`` for roots).

    Returns:
        The same words (text, span, upos, lemma unchanged) with UD heads and labels.
    """
    original = [w.head for w in words]
    labels = [w.deprel.lower() or "dep" for w in words]
    heads = list(original)
    fixed: dict[int, str] = {}  # labels already decided by a restructuring
    _restructure_copulas(words, heads, labels, fixed)
    _restructure_prepositions(words, heads, labels, fixed)
    _reattach_coordinators(heads, labels)
    if not _is_forest(heads):  # pragma: no cover - defensive; no known parse triggers it
        heads, fixed = list(original), {}
        labels = [w.deprel.lower() or "dep" for w in words]
    out = []
    for i, word in enumerate(words):
        label = fixed.get(i) or _map_label(i, words, heads, labels)
        out.append(dataclasses.replace(word, head=heads[i], deprel=label))
    return tuple(out)


def _children(heads: Sequence[int], index: int) -> list[int]:
    return [i for i, h in enumerate(heads) if h == index]


def _is_copula(word: Word) -> bool:
    return (word.lemma or word.text).lower() in BE_FORMS or word.text.lower() in BE_FORMS


def _restructure_copulas(
    words: Sequence[Word], heads: list[int], labels: list[str], fixed: dict[int, str]
) -> None:
    """Make the predicate of "X is Y" the head, with the copula as its ``cop``."""
    for v, word in enumerate(words):
        if not _is_copula(word):
            continue
        kids = _children(heads, v)
        if any(labels[k] == "expl" for k in kids):  # "there is a cat": existential, no copula
            continue
        predicates = [k for k in kids if labels[k] in ("acomp", "attr")]
        if not predicates:
            continue
        p = predicates[0]
        heads[p], labels[p] = heads[v], labels[v]
        for k in kids:
            if k != p:
                heads[k] = p
        heads[v], labels[v] = p, "cop"
        fixed[v] = "cop"
        fixed.pop(p, None)


def _restructure_prepositions(
    words: Sequence[Word], heads: list[int], labels: list[str], fixed: dict[int, str]
) -> None:
    """Turn ``head -prep-> ADP -pobj-> obj`` into ``head -nmod/obl-> obj -case-> ADP``."""
    for q in range(len(words)):
        kids = _children(heads, q)
        has_object = any(labels[k] == "pobj" for k in kids)  # also a root "on the table"
        if fixed.get(q) or not (labels[q] in _PREPOSITIONAL or has_object):
            continue
        if labels[q] == "dative" and words[q].upos != "ADP":
            continue  # "give him a book": him is a plain indirect object
        objects = [k for k in kids if labels[k] == "pobj"]
        objects = objects or [k for k in kids if labels[k] == "pcomp"]
        if not objects:
            continue
        o, head = objects[0], heads[q]
        heads[o] = head
        fixed[o] = _oblique_label(words, head, o, agent=labels[q] == "agent")
        for k in kids:
            if k != o:
                heads[k] = o
        heads[q] = o
        fixed[q] = "mark" if words[o].upos in VERBAL_UPOS else "case"  # "before eating": mark


def _oblique_label(words: Sequence[Word], head: int, obj: int, agent: bool) -> str:
    if head < 0:  # "on the table": the preposition was the root
        return "root"
    head_is_nominal = words[head].upos in NOMINAL_UPOS
    if words[obj].upos in VERBAL_UPOS:
        return "acl" if head_is_nominal else "advcl"
    if head_is_nominal:
        return "nmod"
    return "obl:agent" if agent else "obl"


def _reattach_coordinators(heads: list[int], labels: list[str]) -> None:
    """Attach each ``cc`` to the first conjunct after it (UD), not to the first conjunct."""
    for c, label in enumerate(labels):
        if label != "cc" or heads[c] < 0:
            continue
        following = [k for k in _children(heads, heads[c]) if labels[k] == "conj" and k > c]
        if following:
            heads[c] = following[0]


def _map_label(i: int, words: Sequence[Word], heads: Sequence[int], labels: Sequence[str]) -> str:
    label, head = labels[i], heads[i]
    if head < 0:
        return "root"
    if label == "npadvmod":
        return "nmod:npmod" if words[head].upos in NOMINAL_UPOS else "obl:npmod"
    if label == "attr" and any(labels[k] == "expl" for k in _children(heads, head)):
        return "nsubj"
    return CLEARNLP_TO_UD.get(label, "dep")


def _is_forest(heads: Sequence[int]) -> bool:
    """True when every head chain ends at a root (``-1``) without a cycle."""
    n = len(heads)
    for start in range(n):
        node, steps = start, 0
        while node != -1:
            if not -1 <= heads[node] < n or steps > n:
                return False
            node, steps = heads[node], steps + 1
    return True
