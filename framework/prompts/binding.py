"""Which modifier belongs to which noun: one set of rules on a UD parse, shared by every parser.

The rules follow SynGen's reference (Rassin et al., 2023) - noun phrases, copulas and relative
clauses - restated on Universal Dependencies (see ``attnguide.prompts.ud`` for how spaCy's labels get
there) and with the reference's bugs fixed (see docs/parsers.md):

1. **noun phrase** - for every entity, its children that are modifiers (``amod``, ``compound``,
   ``advmod``, case-less ``nmod``, ``*:npmod``/``*:tmod``/``*:unmarked``, adjectival ``xcomp``)
   and, below them, further modifiers and coordinated attributes (``conj``):
   "a very bright red and blue table" -> table: very, bright, red, blue.
2. **relative clause** - the same walk also entering ``acl:relcl``, whose verbs and auxiliaries
   are skipped: "a dog that is red" -> dog: red; done for *every* noun.
3. **predicate** - an adjectival (or bare-noun) predicate of a copula binds to its nominal
   subjects: "the car and the bike are red" -> car: red, bike: red; an adjectival ``xcomp``
   binds to the verb's object, else its subject, else the noun a participle modifies:
   "paint the fence red" -> fence: red, "a cat looking happy" -> cat: happy.

Entities are nouns and proper nouns that are not themselves modifiers; every entity gives one
``Binding`` (possibly with no modifiers), in prompt order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ..types import Binding, ParsedPrompt, Word, WordRef

ENTITY_UPOS = frozenset({"NOUN", "PROPN"})
VERBAL_UPOS = frozenset({"VERB", "AUX"})
ATTRIBUTIVE = frozenset({"amod", "compound", "advmod"})
BARE_NOMINAL = frozenset(
    {"nmod:npmod", "obl:npmod", "nmod:tmod", "obl:tmod", "nmod:unmarked", "obl:unmarked"}
)
RELATIVE_CLAUSE = "acl:relcl"
SUBJECTS = frozenset({"nsubj", "nsubj:pass"})
OBJECTS = frozenset({"obj"})
DETERMINERS = frozenset({"det", "nmod:poss", "nummod", "det:poss"})


def extract_bindings(parsed: ParsedPrompt) -> list[Binding]:
    """Every entity of the parse with the modifiers that belong to it.

    Args:
        parsed: a UD parse (``Word.deprel`` in UD vocabulary, heads as word indices).

    Returns:
        One ``Binding`` per entity, in prompt order, each entity once; modifiers in prompt
        order, without duplicates. Nouns that are modifiers of another noun ("tennis" in
        "a tennis ball") are not entities.
    """
    rules = _Rules(parsed)
    nouns = [w.index for w in parsed.words if w.upos in ENTITY_UPOS and not rules.is_modifier(w)]
    collected: dict[int, set[int]] = {n: set() for n in nouns}
    for n in nouns:
        collected[n] |= rules.noun_phrase(n) | rules.relative_clause(n)
    for controller, modifiers in rules.predicates():
        if controller in collected:
            collected[controller] |= modifiers
    claimed = set().union(*collected.values()) if collected else set()
    bindings = []
    for n in nouns:
        if n in claimed:  # a noun inside another noun's modifiers: "cotton" in "cotton and silk"
            continue
        ordered = sorted(collected[n] - {n})
        bindings.append(Binding(rules.ref(n), tuple(rules.ref(m) for m in ordered)))
    return bindings


class _Rules:
    """The binding rules over one parse (children indexed once)."""

    def __init__(self, parsed: ParsedPrompt) -> None:
        self.words = parsed.words
        self.kids: dict[int, list[Word]] = {w.index: [] for w in parsed.words}
        for w in parsed.words:
            if w.head in self.kids:
                self.kids[w.head].append(w)

    def ref(self, index: int) -> WordRef:
        w = self.words[index]
        return WordRef(index=w.index, text=w.text, start=w.start, end=w.end)

    def has_child(self, word: Word, labels: Iterable[str]) -> bool:
        wanted = set(labels)
        return any(k.deprel in wanted for k in self.kids[word.index])

    def is_modifier(self, word: Word) -> bool:
        """Whether ``word`` is an attribute of its head (the reference's modifier labels, in UD)."""
        if word.deprel == "advmod":
            # "not" is no attribute; "next" in "next to a table" heads a location, not an attribute
            return word.upos != "PART" and not self._heads_prepositional_phrase(word)
        if word.deprel in ATTRIBUTIVE or word.deprel in BARE_NOMINAL:
            return True
        if word.deprel == "nmod":  # ClearNLP's case-less nmod: "knee" in "a knee high sock"
            return not self.has_child(word, ("case",))
        return word.deprel == "xcomp" and word.upos == "ADJ"  # spaCy's acomp outside a copula

    def _heads_prepositional_phrase(self, word: Word) -> bool:
        return any(
            k.deprel in ("obl", "nmod", "obl:agent") and self.has_child(k, ("case",))
            for k in self.kids[word.index]
        )

    def is_coordinated_attribute(self, word: Word) -> bool:
        """A ``conj`` that is not a clause of its own ("and the bike is blue" has a subject)."""
        return word.deprel == "conj" and not self.has_child(word, SUBJECTS | {"cop"})

    def noun_phrase(self, noun: int) -> set[int]:
        """Rule 1: modifiers of ``noun`` and, below them, modifiers and coordinated attributes."""
        starts = [k for k in self.kids[noun] if self.is_modifier(k)]
        return self._walk(starts, relative=False)

    def relative_clause(self, noun: int) -> set[int]:
        """Rule 2: as rule 1, also entering relative clauses, skipping verbs and auxiliaries."""
        starts = [
            k for k in self.kids[noun] if self.is_modifier(k) or k.deprel == RELATIVE_CLAUSE
        ]
        return self._walk(starts, relative=True)

    def _walk(self, starts: list[Word], relative: bool) -> set[int]:
        found: set[int] = set()
        stack = list(starts)
        seen: set[int] = set()
        while stack:
            node = stack.pop()
            if node.index in seen:
                continue
            seen.add(node.index)
            if not relative or node.upos not in VERBAL_UPOS:
                found.add(node.index)
            stack.extend(k for k in self.kids[node.index] if self._follows(k, relative))
        return found

    def _follows(self, word: Word, relative: bool) -> bool:
        if self.is_modifier(word) or self.is_coordinated_attribute(word):
            return True
        return relative and word.deprel == RELATIVE_CLAUSE

    def predicates(self) -> Iterator[tuple[int, set[int]]]:
        """Rule 3: ``(entity, modifiers)`` for adjectival predicates and their subjects."""
        for word in self.words:
            controllers = self._controllers(word)
            if not controllers:
                continue
            starts = [k for k in self.kids[word.index] if self._follows(k, relative=False)]
            modifiers = {word.index} | self._walk(starts, relative=False)
            for c in controllers:
                yield c, modifiers

    def _controllers(self, word: Word) -> list[int]:
        """The entities an adjectival predicate ``word`` is said of (empty if it is none)."""
        if self.has_child(word, ("cop",)) and self._is_attribute_predicate(word):
            return self._nominal_arguments(word, SUBJECTS)
        if word.deprel != "xcomp" or word.upos != "ADJ" or word.head < 0:
            return []
        verb = self.words[word.head]
        found = self._nominal_arguments(verb, OBJECTS) or self._nominal_arguments(verb, SUBJECTS)
        no_subject = not self.has_child(verb, SUBJECTS)
        if not found and no_subject and verb.deprel == "acl" and verb.head >= 0:
            head = self.words[verb.head]
            found = [head.index] if head.upos in ENTITY_UPOS else []
        return found

    def _is_attribute_predicate(self, word: Word) -> bool:
        """Adjectives, and bare nouns ("the wall is gold"), not "the car is a vehicle"."""
        if word.upos == "ADJ":
            return True
        return word.upos == "NOUN" and not self.has_child(word, DETERMINERS)

    def _nominal_arguments(self, word: Word, labels: frozenset[str]) -> list[int]:
        """Nouns attached to ``word`` with ``labels``, and the nouns coordinated with them."""
        out: list[int] = []
        stack = [k for k in self.kids[word.index] if k.deprel in labels]
        while stack:
            node = stack.pop()
            if node.upos in ENTITY_UPOS and node.index not in out:
                out.append(node.index)
                stack.extend(k for k in self.kids[node.index] if k.deprel == "conj")
        return sorted(out)
