"""ICL concept-classification prompts: one sampler, with each condition a setting of it.

A *task* is k concepts with one label each (semantic: the concept's name; arbitrary: "A"/"B", "foo"/"bar").
An *episode* is one set of demonstrations (``word -> label``) shared by a few query words, so a causal LM
scores all of an episode's queries from one cached prefix. Conditions differ only in how an episode is
drawn (Garg et al.'s "OOD evaluation is a different sampler"):

- ``in_distribution``: balanced demonstrations, a monosemous query from the task's concepts;
- ``polysemous_query``: monosemous demonstrations, a polysemous query whose sense is one of the task's
  concepts and none of its other senses is (``bat`` is *animal* under animal-vs-vehicle, *sports equipment*
  under sports-equipment-vs-furniture);
- ``skewed``: 80/20 demonstration labels; ``flipped_labels``: semantic labels swapped among the concepts;
  ``arbitrary_labels``: labels with no meaning, learnable only in context; ``novel_pair``: concept
  combinations held out of every other condition; ``zero_shot``: no demonstrations; ``shuffled_labels``:
  demonstration labels drawn at random (the gold label stays the concept's own);
- ``polysemous_in_context``: monosemous demonstrations, the query a polysemous word inside a sentence whose
  context selects the sense the task asks about (a sense-tagged context, :mod:`probing.contexts`); the gold
  label is that sense; ``polysemous_in_context_adversarial``: its twin, the same episodes (same word, task,
  demonstrations and gold label) with sentences whose context selects another sense of the word;
  ``polysemous_in_context_zero_shot``: the same queries in their sentences with no demonstrations.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mcicl.probing.contexts import ContextSet, SenseContext, builtin_contexts
from mcicl.probing.datasets import DATASET_PREFIXES, builtin_concepts, load_concept_set
from mcicl.probing.datasets.concepts import ConceptSet
from mcicl.probing.datasets.sets import descendants
from mcicl.probing.icl.episodes import (  # noqa: F401  (re-exported: the vocabulary lived here)
    CONDITIONS,
    CONTEXT_CONDITIONS,
    DEFAULT_ARBITRARY_LABELS,
    DEFAULT_CONDITIONS,
    SENTENCE_CONDITIONS,
    STREAM_OF,
    Condition,
    PromptTemplate,
)


@dataclass(frozen=True)
class IclPrompt:
    """One ICL prompt: demonstrations, a query, the candidate labels and the gold one."""

    condition: str
    shots: int
    episode: int
    task: str  # the task's concepts joined by "|", e.g. "animal|tool"
    labels: tuple[str, ...]  # candidate labels, in the order of the task's concepts
    demos: tuple[tuple[str, str], ...]  # (word, label)
    query: str
    query_concept: str
    gold: str
    demo_concepts: tuple[str, ...] = field(default=())
    query_context: str = ""  # in_context queries: the sentence holding the query word ...
    query_start: int = -1    # ... and the character where the occurrence starts
    context_sense: str = ""  # ... and the sense that sentence is tagged with
    query_surface: str = ""  # ... and the word as written there, where it differs (a plural): "" otherwise

    @property
    def query_key(self) -> str:
        """The query's identity for vector lookup: the word, or the word at its place in its sentence."""
        return f"{self.query}@{self.query_start}:{self.query_context}" if self.query_context else self.query


def concept_label(name: str) -> str:
    """The semantic label text of a concept name ('sports_equipment' -> 'sports equipment'; a WordNet supersense
    'noun.artifact' -> 'artifact')."""
    return name.removeprefix("noun.").replace("_", " ").strip()


def _stable_fraction(seed: int, combo: tuple[str, ...]) -> float:
    """A number in [0, 1) fixed by the seed and the (sorted) concept combination."""
    return zlib.crc32(f"{seed}|{'|'.join(sorted(combo))}".encode()) / 2**32


@dataclass
class IclSampler:
    """Draws episodes of prompts for any condition from one concept set; same seed, same prompts."""

    concepts: ConceptSet
    ways: int = 2
    queries_per_episode: int = 4
    novel_fraction: float = 0.25
    arbitrary_label_sets: tuple[str, ...] = DEFAULT_ARBITRARY_LABELS
    split_seed: int = 0
    contexts: ContextSet | None = None  # sense-tagged sentences for the in_context conditions; None: built-in

    def __post_init__(self) -> None:
        poly = set(self.concepts.polysemy)
        # Demonstrations and monosemous queries never use a word listed as polysemous.
        self.pools = {c: [w for w in ws if w not in poly] for c, ws in self.concepts.concepts.items()}
        self.names = list(self.pools)
        if self.ways < 2:
            raise ValueError(f"ways={self.ways}: a classification task needs at least 2 concepts; accepted: >= 2")
        if len(self.names) < self.ways:
            raise ValueError(
                f"concept set {self.concepts.name!r} has {len(self.names)} concept(s) ({', '.join(self.names)}); "
                f"a {self.ways}-way ICL task needs at least {self.ways} concepts")
        for labels in self.arbitrary_label_sets:
            if len(set(labels.split())) < self.ways:
                raise ValueError(f"arbitrary label set {labels!r} has fewer than {self.ways} distinct labels")
        # A concept with its ancestor or descendant makes an ambiguous task (plants vs trees): never combined.
        self.family = {c: {c, *descendants(self.concepts, c)} for c in self.names}
        for c in self.names:
            for d in self.family[c] - {c}:
                self.family.setdefault(d, {d}).add(c)

    def is_novel(self, combo: tuple[str, ...]) -> bool:
        """Whether a concept combination is held out for ``novel_pair`` (fixed by ``split_seed``)."""
        return _stable_fraction(self.split_seed, combo) < self.novel_fraction

    def max_demos_per_concept(self, condition: Condition, shots: int) -> int:
        """The most demonstrations one concept can need in an episode of ``shots`` shots."""
        if condition.zero_shot or shots == 0:
            return 0
        if condition.majority_fraction is not None:
            return max(1, round(condition.majority_fraction * shots)) if shots else 0
        return math.ceil(shots / self.ways)

    def check_shots(self, condition_name: str, shots: int) -> None:
        """Raise ValueError when the concepts have too few words for ``shots`` demonstrations plus the queries."""
        need = self.max_demos_per_concept(CONDITIONS[condition_name], shots)
        small = {c: len(ws) for c, ws in self.pools.items() if len(ws) < need + 1}
        if small:
            c, n = min(small.items(), key=lambda kv: kv[1])
            most = self._max_shots(CONDITIONS[condition_name], n)
            raise ValueError(
                f"{shots} shots ({condition_name}) need {need} demonstration words plus a query word per concept, "
                f"but concept {c!r} has only {n} monosemous word(s) ({len(small)} concept(s) are too small); "
                f"accepted: shots <= {most} for this concept set, or a concept set with more words")
        if CONDITIONS[condition_name].query in ("polysemous", "in_context"):
            return  # polysemous queries are not drawn from the concepts' word lists
        # An episode's queries are words its demonstrations left over; the tightest task is the smallest concepts.
        smallest = sorted(len(ws) for ws in self.pools.values())[:self.ways]
        left = sum(smallest) - shots
        if left < self.queries_per_episode:
            raise ValueError(
                f"{shots} shots ({condition_name}) with queries_per_episode={self.queries_per_episode}: the "
                f"{self.ways} smallest concepts have {sum(smallest)} monosemous words, leaving {left} for queries; "
                f"accepted: shots <= {sum(smallest) - self.queries_per_episode} for this concept set, fewer "
                "queries per episode (queries_per_episode), or a concept set with more words")

    def _max_shots(self, condition: Condition, n_words: int) -> int:
        best = 0
        for s in range(1, 10 * n_words + 1):
            if self.max_demos_per_concept(condition, s) + 1 <= n_words:
                best = s
        return best

    def _combo(self, rng: np.random.Generator, mode: str, must: str | None = None,
               avoid: frozenset[str] = frozenset()) -> tuple[str, ...]:
        """A random k-concept combination (containing ``must``, none of ``avoid``) from the mode's pool."""
        candidates = [c for c in self.names if c != must and c not in avoid]
        k = self.ways - (must is not None)
        if len(candidates) < k:
            raise ValueError(f"not enough concepts besides {must!r} and {sorted(avoid)} for a {self.ways}-way task")
        for _ in range(10_000):
            picked = tuple(rng.choice(candidates, size=k, replace=False).tolist())
            combo = tuple(sorted(((must,) if must else ()) + picked))
            if self._related(combo):
                continue
            if mode == "any" or self.is_novel(combo) == (mode == "novel"):
                return combo
        raise ValueError(f"no {mode} {self.ways}-way concept combination found (one never pairs a concept with its "
                         "ancestor); "
                         f"change --novel-fraction (now {self.novel_fraction}) or use a concept set with more "
                         "unrelated concepts")

    def _related(self, combo: tuple[str, ...]) -> bool:
        """Whether two concepts of ``combo`` are one the other's ancestor."""
        return any(b in self.family.get(a, {a}) for i, a in enumerate(combo) for b in combo[i + 1:])

    def _labels(self, rng: np.random.Generator, combo: tuple[str, ...], kind: str) -> dict[str, str]:
        """concept -> label text for one episode."""
        semantic = [concept_label(c) for c in combo]
        if kind == "semantic":
            return dict(zip(combo, semantic, strict=True))
        if kind == "flipped":
            # A derangement: every concept gets another concept's name (a swap for two concepts).
            shift = int(rng.integers(1, len(combo)))
            return {c: semantic[(i + shift) % len(combo)] for i, c in enumerate(combo)}
        names = self.arbitrary_label_sets[int(rng.integers(len(self.arbitrary_label_sets)))].split()
        chosen = rng.permutation(list(dict.fromkeys(names))[:len(combo)]).tolist()
        return dict(zip(combo, chosen, strict=True))

    def episode(self, rng: np.random.Generator, condition_name: str, shots: int, episode: int) -> list[IclPrompt]:
        """The prompts of one episode (one set of demonstrations, several queries)."""
        cond = CONDITIONS[condition_name]
        if cond.zero_shot:
            shots = 0
        poly_word: str | None = None
        if cond.query == "in_context":
            poly_word, combo = self._in_context_task(rng)
        elif cond.query == "polysemous":
            words = sorted(self.concepts.polysemy)
            if not words:
                raise ValueError(f"concept set {self.concepts.name!r} lists no polysemous words; the "
                                 "polysemous_query condition needs suite='polysemy' or a polysemy=FILE")
            poly_word = words[int(rng.integers(len(words)))]
            senses = self.concepts.polysemy[poly_word]
            sense = senses[int(rng.integers(len(senses)))]
            # Nor a concept above or below another sense (turkey: foods vs animals, birds being another sense).
            combo = self._combo(rng, "any", must=sense,
                                avoid=frozenset(r for s in senses for r in self.family.get(s, {s})))
        else:
            combo = self._combo(rng, cond.combos)
        mapping = self._labels(rng, combo, cond.labels)
        labels = tuple(mapping[c] for c in combo)

        # demonstration counts per concept
        counts = dict.fromkeys(combo, 0)
        if shots:
            if cond.majority_fraction is not None:
                major = combo[int(rng.integers(len(combo)))]
                counts[major] = max(1, round(cond.majority_fraction * shots))
                rest = [c for c in combo if c != major]
                for i in range(shots - counts[major]):
                    counts[rest[i % len(rest)]] += 1
            else:
                order = rng.permutation(len(combo))
                for i in range(shots):
                    counts[combo[order[i % len(combo)]]] += 1
        demo_words: dict[str, list[str]] = {}
        for c in combo:
            pool = self.pools[c]
            if counts[c] + 1 > len(pool):
                self.check_shots(condition_name, shots)
            demo_words[c] = rng.choice(pool, size=counts[c], replace=False).tolist() if counts[c] else []
        demos = [(w, c) for c in combo for w in demo_words[c]]
        demos = [demos[i] for i in rng.permutation(len(demos))]
        shown = [mapping[c] for _, c in demos]
        if cond.shuffle_labels:
            shown = [labels[int(rng.integers(len(labels)))] for _ in demos]
        demo_pairs = tuple((w, lab) for (w, _), lab in zip(demos, shown, strict=True))
        demo_concepts = tuple(c for _, c in demos)

        # queries: never a word of the demonstrations
        queries: list[tuple[str, str]] = []
        if cond.query == "in_context":
            return self._in_context_queries(rng, cond, condition_name, shots, episode, poly_word, combo, mapping,
                                            labels, demo_pairs, demo_concepts)
        if poly_word is not None:
            sense = next(c for c in combo if c in self.concepts.polysemy[poly_word])
            others = set(combo) - {sense}
            compatible = [w for w, s in sorted(self.concepts.polysemy.items())
                          if w != poly_word and sense in s
                          and not others & {r for t in s if t != sense for r in self.family.get(t, {t})}]
            extra = rng.permutation(compatible)[:self.queries_per_episode - 1].tolist() if compatible else []
            queries = [(poly_word, sense)] + [(w, sense) for w in extra]
        else:
            used = {w for ws in demo_words.values() for w in ws}
            for _ in range(self.queries_per_episode):
                open_concepts = [c for c in combo if any(w not in used for w in self.pools[c])]
                c = open_concepts[int(rng.integers(len(open_concepts)))]
                left = [w for w in self.pools[c] if w not in used]
                w = left[int(rng.integers(len(left)))]
                used.add(w)
                queries.append((w, c))
        task = "|".join(combo)
        return [IclPrompt(condition_name, shots, episode, task, labels, demo_pairs, w, c, mapping[c], demo_concepts)
                for w, c in queries]

    def _context_words(self) -> dict[str, list[str]]:
        """Polysemous word -> its senses that have tagged contexts (words with >= 2 such senses); computed once."""
        if self.contexts is None:
            self.contexts = builtin_contexts()
        cached = getattr(self, "_context_index", None)
        if cached is not None and cached[0] is self.contexts:
            return cached[1]
        pools: dict[tuple[str, str], list[SenseContext]] = {}
        for c in self.contexts.contexts:
            pools.setdefault((c.word, c.sense), []).append(c)
        out = {}
        for word, senses in sorted(self.concepts.polysemy.items()):
            have = [s for s in senses if (word, s) in pools]
            if len(have) >= 2:
                out[word] = have
        self._context_index = (self.contexts, out, pools)
        if not out:
            raise ValueError(f"contexts {self.contexts.name!r} hold no polysemous word of {self.concepts.name!r} in "
                             "two of its senses; accepted: contexts for at least one word's two senses")
        return out

    def _in_context_task(self, rng: np.random.Generator) -> tuple[str, tuple[str, ...]]:
        """(polysemous word, task concepts holding exactly one of its senses: the one the task asks about)."""
        words = self._context_words()
        names = sorted(words)
        word = names[int(rng.integers(len(names)))]
        senses = self.concepts.polysemy[word]
        sense = words[word][int(rng.integers(len(words[word])))]
        combo = self._combo(rng, "any", must=sense,
                            avoid=frozenset(r for s in senses for r in self.family.get(s, {s})))
        return word, combo

    def _in_context_queries(self, rng: np.random.Generator, cond: Condition, condition_name: str, shots: int,
                            episode: int, word: str, combo: tuple[str, ...], mapping: dict[str, str],
                            labels: tuple[str, ...], demo_pairs: tuple[tuple[str, str], ...],
                            demo_concepts: tuple[str, ...]) -> list[IclPrompt]:
        """The episode's queries: ``word`` in up to queries_per_episode sentences selecting the task's sense
        (or, adversarial, another sense); the gold label is the task's sense in both."""
        assert self.contexts is not None
        sense = next(c for c in combo if c in self.concepts.polysemy[word])
        # One draw from the shared stream, whatever the condition, so the twins stay in step.
        sub = np.random.default_rng(int(rng.integers(2**32)))
        others = [s for s in self._context_words()[word] if s != sense]
        other = others[int(sub.integers(len(others)))]
        selected = sense if cond.context_sense == "task" else other
        pool = self._context_index[2][(word, selected)]
        chosen = [pool[i] for i in sub.permutation(len(pool))[:self.queries_per_episode]]
        task = "|".join(combo)
        return [IclPrompt(condition_name, shots, episode, task, labels, demo_pairs, word, sense, mapping[sense],
                          demo_concepts, c.context, c.start, c.sense, c.surface) for c in chosen]

    def sample(self, condition_name: str, shots: int, n_episodes: int, seed: int) -> list[IclPrompt]:
        """``n_episodes`` episodes of one (condition, shots); the same seed gives the same prompts."""
        if condition_name not in CONDITIONS:
            raise ValueError(f"unknown ICL condition {condition_name!r}; accepted: {', '.join(CONDITIONS)}")
        if shots < 0:
            raise ValueError(f"shots={shots}; accepted: a non-negative number of demonstrations")
        self.check_shots(condition_name, 0 if CONDITIONS[condition_name].zero_shot else shots)
        # One stream per (seed, condition, shots), so adding a condition never changes another's prompts.
        key = zlib.crc32(f"{STREAM_OF.get(condition_name, condition_name)}|{shots}".encode())
        rng = np.random.default_rng([seed, key])
        return [p for e in range(n_episodes) for p in self.episode(rng, condition_name, shots, e)]


def majority_label(prompt: IclPrompt, rng: np.random.Generator) -> str:
    """The most frequent demonstration label (ties broken at random; no demonstrations: a random label)."""
    if not prompt.demos:
        return prompt.labels[int(rng.integers(len(prompt.labels)))]
    counts = {lab: 0 for lab in prompt.labels}
    for _, lab in prompt.demos:
        counts[lab] += 1
    top = max(counts.values())
    tied = [lab for lab, n in counts.items() if n == top]
    return tied[int(rng.integers(len(tied)))]


def load_suite(suite: str, polysemy: str | None = None, columns: str | None = None) -> ConceptSet:
    """The concept set of ``--suite``: 'polysemy' (built-in, with polysemy), 'concepts' (built-in, none), a named
    set ('supersenses', 'wordnet'), a dataset (``dataset:PATH``, ``hf:NAME``) or a file."""
    if suite in ("wordnet", "supersenses") or suite.startswith(DATASET_PREFIXES):
        return load_concept_set(suite, polysemy=polysemy, columns=columns)
    if suite == "polysemy":
        cs = builtin_concepts()
        return load_concept_set(cs, polysemy=polysemy) if polysemy else cs
    if suite == "concepts":
        cs = builtin_concepts()
        return ConceptSet(cs.name, cs.concepts, {}, {}, dict(cs.parents), cs.min_words)
    if not Path(suite).is_file():
        raise FileNotFoundError(f"suite={suite!r}: accepted: 'polysemy', 'concepts', 'supersenses', 'wordnet', "
                                "dataset:PATH, hf:NAME, or a concept-set file "
                                "(the JSON/CSV that `mcicl probe geometry --concepts` takes)")
    return load_concept_set(suite, polysemy=polysemy)
