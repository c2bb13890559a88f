"""ConceptSet: the one in-memory form of a concept dataset (curated, WordNet, user file, HF dataset).

Loaders elsewhere in ``probing`` produce a ConceptSet; extraction, the geometry engine and the ICL probes
consume one. Validation happens here, once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


class ConceptSetError(ValueError):
    """A concept set is malformed; the message names the concept or word and what is accepted."""


@dataclass
class ConceptSet:
    """Concepts with their words, polysemous words with their senses, and an optional hierarchy.

    - ``concepts``: concept name -> words (unique within a concept, order kept).
    - ``polysemy``: polysemous word -> the concepts of its senses (each a key of ``concepts``).
    - ``controls``: monosemous control word -> its one concept (a key of ``concepts``).
    - ``parents``: child concept -> parent concept (both keys of ``concepts``), for hierarchy tests.
    """

    name: str
    concepts: dict[str, list[str]]
    polysemy: dict[str, list[str]] = field(default_factory=dict)
    controls: dict[str, str] = field(default_factory=dict)
    parents: dict[str, str] = field(default_factory=dict)
    min_words: int = 2

    def __post_init__(self) -> None:
        if len(self.concepts) < 1:
            raise ConceptSetError(f"concept set {self.name!r} has no concepts")
        cleaned: dict[str, list[str]] = {}
        for concept, words in self.concepts.items():
            if not isinstance(concept, str) or not concept.strip():
                raise ConceptSetError(f"concept set {self.name!r}: concept names must be non-empty strings, "
                                      f"got {concept!r}")
            if isinstance(words, str) or not all(isinstance(w, str) for w in words):
                raise ConceptSetError(f"concept {concept!r}: words must be a list of strings, got {words!r}")
            unique = list(dict.fromkeys(w.strip() for w in words if w.strip()))
            if len(unique) < self.min_words:
                raise ConceptSetError(
                    f"concept {concept!r} has {len(unique)} usable word(s) {unique}; each concept needs at "
                    f"least {self.min_words} distinct non-empty words")
            cleaned[concept] = unique
        self.concepts = cleaned
        known = set(cleaned)
        for word, senses in self.polysemy.items():
            unknown = [s for s in senses if s not in known]
            if unknown:
                raise ConceptSetError(
                    f"polysemous word {word!r} names unknown concept(s) {unknown}; known concepts: "
                    f"{', '.join(sorted(known))}")
            if len(set(senses)) < 2:
                raise ConceptSetError(f"polysemous word {word!r} needs at least two distinct senses, got {senses}")
        for word, concept in self.controls.items():
            if concept not in known:
                raise ConceptSetError(f"control word {word!r} names unknown concept {concept!r}")
        for child, parent in self.parents.items():
            if child not in known or parent not in known:
                raise ConceptSetError(f"hierarchy edge {child!r} -> {parent!r} names an unknown concept")

    @property
    def names(self) -> list[str]:
        """Concept names, in order."""
        return list(self.concepts)

    def words_and_labels(self) -> tuple[list[str], list[str]]:
        """Flat (words, concept labels) over all concepts, in order (a word may repeat across concepts)."""
        words = [w for ws in self.concepts.values() for w in ws]
        labels = [c for c, ws in self.concepts.items() for _ in ws]
        return words, labels

    def filter_words(self, keep: Callable[[str], bool]) -> tuple[ConceptSet, dict[str, list[str]]]:
        """A copy keeping only words with ``keep(word)``, and the dropped words per concept.

        Raises ConceptSetError if a concept is left with fewer than ``min_words`` words.
        """
        dropped = {c: [w for w in ws if not keep(w)] for c, ws in self.concepts.items()}
        kept = {c: [w for w in ws if keep(w)] for c, ws in self.concepts.items()}
        polysemy = {w: s for w, s in self.polysemy.items() if keep(w)}
        controls = {w: c for w, c in self.controls.items() if keep(w)}
        subset = ConceptSet(self.name, kept, polysemy, controls, dict(self.parents), self.min_words)
        return subset, {c: ws for c, ws in dropped.items() if ws}
