"""Operations on concept sets: the vocabulary check, hierarchy extensions, polysemous ICL task pairs."""

from __future__ import annotations

import re
from collections.abc import Iterable

from mcicl.probing.datasets.concepts import ConceptSet

_LOWER = re.compile(r"^[a-z]+$")
_PROPER = re.compile(r"^[A-Z][A-Za-z]*$")


def vocabulary_problems(cs: ConceptSet, proper_noun_concepts: Iterable[str] = ()) -> list[str]:
    """Every way ``cs`` breaks the curated-set vocabulary rules, as readable lines (empty when clean).

    The rules: a word is one alphabetic word; lowercase, except in the declared proper-noun concepts, whose
    words start with a capital (``France``, ``BMW``, ``JavaScript``); no word (compared case-insensitively)
    appears in two concepts, in both a concept and the polysemy inventory, or among the controls as well as
    anywhere else (controls are held out); polysemous words and controls are lowercase unless their concept
    is a proper-noun concept (controls) - polysemous words are written in their common lowercase form.
    """
    proper = set(proper_noun_concepts)
    problems: list[str] = []
    seen: dict[str, str] = {}

    def check_form(word: str, where: str, allow_proper: bool) -> None:
        if _LOWER.match(word) or (allow_proper and _PROPER.match(word)):
            return
        kind = "a lowercase or capitalised alphabetic word" if allow_proper else "a lowercase alphabetic word"
        problems.append(f"{where}: {word!r} is not {kind}")

    def claim(word: str, where: str) -> None:
        key = word.lower()
        if key in seen:
            problems.append(f"{where}: {word!r} also appears in {seen[key]}")
        else:
            seen[key] = where

    for concept, words in cs.concepts.items():
        for word in words:
            check_form(word, f"concept {concept!r}", concept in proper)
            claim(word, f"concept {concept!r}")
    for word in cs.polysemy:
        check_form(word, "polysemy", False)
        claim(word, "polysemy")
    for word, concept in cs.controls.items():
        check_form(word, f"control of {concept!r}", concept in proper)
        claim(word, f"control of {concept!r}")
    return problems


def children(cs: ConceptSet, concept: str) -> list[str]:
    """The direct children of ``concept`` in ``cs.parents``, in concept order."""
    return [c for c in cs.concepts if cs.parents.get(c) == concept]


def descendants(cs: ConceptSet, concept: str) -> list[str]:
    """All concepts below ``concept`` in the hierarchy (children first, then theirs), excluding itself."""
    out: list[str] = []
    frontier = [concept]
    while frontier:
        nxt = [c for p in frontier for c in children(cs, p) if c not in out and c != concept]
        out.extend(nxt)
        frontier = nxt
    return out


def extension(cs: ConceptSet, concept: str) -> list[str]:
    """The words of ``concept`` and of all its descendants, deduplicated, in order.

    In the curated set word lists are disjoint, so a parent's full extension (all animals, all foods) is its
    own list plus its children's; use this for parent vectors in hierarchy tests. In WordNet sets lists are
    already nested (Park et al.), so the extension equals the concept's own list.
    """
    if concept not in cs.concepts:
        raise KeyError(f"unknown concept {concept!r}; known: {', '.join(cs.names)}")
    words = list(cs.concepts[concept])
    for child in descendants(cs, concept):
        words.extend(cs.concepts[child])
    return list(dict.fromkeys(words))


def polysemous_task_pairs(cs: ConceptSet) -> list[tuple[str, str, str]]:
    """(word, sense_concept, other_concept) triples: ICL tasks in which the same word needs different labels.

    Each triple is a binary task "``sense_concept`` vs ``other_concept``" whose query is ``word`` with correct
    label ``sense_concept``. A word with senses (a, b) yields one triple per sense, so its triples pair up
    into tasks where the same word must get different labels (bat is an animal in "animals vs vehicles" and
    sports equipment in "sports_equipment vs furniture"). ``other_concept`` is never a sense of the word and
    never in the same hierarchy branch as ``sense_concept`` (birds vs animals would be ambiguous); it is the
    next such concept after ``sense_concept`` in set order, so contrasts vary across senses.
    """
    triples: list[tuple[str, str, str]] = []
    for word, senses in cs.polysemy.items():
        for sense in senses:
            other = _contrast_concept(cs, sense, senses)
            if other is not None:
                triples.append((word, sense, other))
    return triples


def _root(cs: ConceptSet, concept: str) -> str:
    seen = {concept}
    while concept in cs.parents and cs.parents[concept] not in seen:
        concept = cs.parents[concept]
        seen.add(concept)
    return concept


def _contrast_concept(cs: ConceptSet, sense: str, senses: list[str]) -> str | None:
    # The contrast class comes from a hierarchy branch holding none of the word's senses, so the task is
    # unambiguous (turkey vs fruits would be unfair: fruits sit under foods, another sense of turkey).
    # Deterministic: the next such concept after the sense in set order.
    banned = {_root(cs, s) for s in senses}
    names = cs.names
    start = names.index(sense)
    for name in names[start + 1:] + names[:start]:
        if _root(cs, name) not in banned:
            return name
    return None
