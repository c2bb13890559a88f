"""Sense-tagged contexts: sentences holding a word, each tagged with the concept of the sense it uses.

One in-memory form, :class:`ContextSet`, a list of :class:`SenseContext` (word, sense, sentence, and the
character span of the occurrence to read). Three sources produce it:

- files (docs/contexts.md): CSV with a header holding ``word``, ``sense`` and ``context`` (other columns
  ignored), or JSON ``{"word": {"sense": ["sentence", ...]}}`` (optionally under a ``"contexts"`` key);
- the built-in contexts (``data/contexts.json``, written for mcicl): >= 3 sentences per sense of every
  built-in polysemous word and 3 per monosemous control word;
- WordNet's own example sentences (:func:`wordnet_contexts`), for a WordNet concept set: each noun synset
  of the word whose examples contain the lemma, tagged with the word's sense concept above that synset.

The occurrence to read is the one written in square brackets (``"the [bat] flew"``; the brackets are
removed), else the first whole-word, case-insensitive occurrence. :func:`check_contexts` validates a set
against a concept set once: every sense a concept, a polysemous word's senses among its inventory, a
control's sense its concept, and at least ``min_per_sense`` contexts per (word, sense).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcicl.core.textfiles import read_user_text
from mcicl.probing.contexts_config import CONTEXT_SOURCES  # one wording of the accepted sources
from mcicl.probing.datasets.builtin import DATA
from mcicl.probing.datasets.concepts import ConceptSet, ConceptSetError

BUILTIN_CONTEXTS = DATA / "contexts.json"
MARK = re.compile(r"\[([^\[\]]+)\]")


class ContextsError(ConceptSetError):
    """A contexts file or set is malformed; the message names the file or word, the sense and the problem."""


@dataclass(frozen=True)
class SenseContext:
    """One sentence holding ``word`` at characters ``[start, start + len(word))``, used in sense ``sense``; where the
    text writes another form of the word (``surface``: "banks" for the lemma "bank") the occurrence is
    ``[start, start + len(surface))``."""

    word: str
    sense: str
    context: str
    start: int
    source: str = ""
    surface: str = ""  # the written form where it differs from ``word`` (plural, other inflection); "" otherwise

    @property
    def end(self) -> int:
        """The character just past the occurrence."""
        return self.start + len(self.surface or self.word)


def check_brackets(word: str, context: str) -> None:
    """Refuse mark-up that is not one well-formed ``[span]``: unclosed, closed without opening, empty, nested."""
    depth, opened = 0, -1
    for i, ch in enumerate(context):
        if ch == "[":
            if depth:
                raise ContextsError(f"word {word!r}: context {context!r} nests brackets at character {i}; accepted: "
                                    f"one mark like [{word}], not nested")
            depth, opened = 1, i
        elif ch == "]":
            if not depth:
                raise ContextsError(f"word {word!r}: context {context!r} closes a bracket at character {i} that "
                                    f"was not opened; accepted: one mark like [{word}]")
            if not context[opened + 1:i].strip():
                raise ContextsError(f"word {word!r}: context {context!r} marks an empty span []; accepted: one "
                                    f"mark like [{word}]")
            depth = 0
    if depth:
        raise ContextsError(f"word {word!r}: context {context!r} opens a bracket at character {opened} that is "
                            f"never closed; accepted: one mark like [{word}]")


def locate(word: str, context: str) -> tuple[str, int]:
    """(sentence without brackets, start of the occurrence): the bracketed one, else the first whole word.

    Raises ContextsError when the sentence does not contain the word (or brackets something else).
    """
    if not isinstance(word, str) or not word.strip():
        raise ContextsError(f"word {word!r}: words must be non-empty strings")
    if not isinstance(context, str) or not context.strip():
        raise ContextsError(f"word {word!r}: context {context!r} must be a non-empty string")
    check_brackets(word, context)
    marks = list(MARK.finditer(context))
    if len(marks) > 1:
        raise ContextsError(f"word {word!r}: context {context!r} marks {len(marks)} occurrences; mark at most one "
                            "with [brackets]")
    if marks:
        m = marks[0]
        if m.group(1).lower() != word.lower():
            raise ContextsError(f"word {word!r}: context {context!r} marks [{m.group(1)}], not the word; accepted: "
                                f"[{word}] (case-insensitive) or no mark (the first occurrence is used)")
        return context[:m.start()] + m.group(1) + context[m.end():], m.start()
    found = re.search(r"(?<![^\W\d_])" + re.escape(word) + r"(?![^\W\d_])", context, flags=re.IGNORECASE)
    if found is None:
        raise ContextsError(f"word {word!r}: context {context!r} does not contain the word (as a whole word, any "
                            "case); accepted: a sentence holding the word, optionally marked [like this]")
    return context, found.start()


def make_context(word: str, sense: str, context: str, source: str = "") -> SenseContext:
    """A SenseContext with its occurrence located (see :func:`locate`)."""
    if not isinstance(sense, str) or not sense.strip():
        raise ContextsError(f"word {word!r}: sense {sense!r} must be a concept name")
    text, start = locate(word, context)
    return SenseContext(word.strip(), sense.strip(), text, start, source)


@dataclass
class ContextSet:
    """Sense-tagged contexts, in order, with the name of their source."""

    name: str
    contexts: list[SenseContext]

    def __len__(self) -> int:
        return len(self.contexts)

    @property
    def words(self) -> list[str]:
        """The words, in first-occurrence order."""
        return list(dict.fromkeys(c.word for c in self.contexts))

    def senses(self, word: str) -> list[str]:
        """The senses ``word``'s contexts use, in first-occurrence order."""
        return list(dict.fromkeys(c.sense for c in self.contexts if c.word == word))

    def counts(self) -> Counter[tuple[str, str]]:
        """How many contexts each (word, sense) has."""
        return Counter((c.word, c.sense) for c in self.contexts)

    def subset(self, words: Iterable[str]) -> ContextSet:
        """The contexts of ``words`` only."""
        keep = set(words)
        return ContextSet(self.name, [c for c in self.contexts if c.word in keep])

    def rows(self) -> list[dict[str, Any]]:
        """One dict per context (word, sense, context, start, source), for CSV files."""
        return [{"word": c.word, "sense": c.sense, "context": c.context, "start": c.start, "source": c.source}
                for c in self.contexts]


def check_contexts(ctx: ContextSet, cs: ConceptSet, *, min_per_sense: int = 3) -> None:
    """Raise ContextsError unless every context fits ``cs`` and each (word, sense) has >= min_per_sense contexts.

    A sense must be a concept of ``cs``; a polysemous word's senses must be among its inventory in
    ``cs.polysemy``; a control word's sense must be its concept in ``cs.controls``. Other words are allowed
    (a user's own word) when their senses are concepts.
    """
    if not isinstance(min_per_sense, int) or min_per_sense < 1:
        raise ContextsError(f"min_per_sense={min_per_sense!r}; accepted: an integer >= 1")
    if not ctx.contexts:
        raise ContextsError(f"contexts {ctx.name!r}: no contexts")
    known = set(cs.concepts)
    for c in ctx.contexts:
        if c.sense not in known:
            raise ContextsError(f"contexts {ctx.name!r}: word {c.word!r} has sense {c.sense!r}, which is not a concept "
                                f"of the concept set {cs.name!r}; accepted: one of {', '.join(sorted(known))}")
        if c.word in cs.polysemy and c.sense not in cs.polysemy[c.word]:
            raise ContextsError(f"contexts {ctx.name!r}: word {c.word!r} has sense {c.sense!r}; its senses in "
                                f"{cs.name!r} are {cs.polysemy[c.word]}")
        if c.word in cs.controls and c.sense != cs.controls[c.word]:
            raise ContextsError(f"contexts {ctx.name!r}: control word {c.word!r} has sense {c.sense!r}; its concept "
                                f"in {cs.name!r} is {cs.controls[c.word]!r}")
    short = [f"{w}/{s} ({n})" for (w, s), n in ctx.counts().items() if n < min_per_sense]
    if short:
        raise ContextsError(f"contexts {ctx.name!r}: {len(short)} (word, sense) pair(s) have fewer than "
                            f"{min_per_sense} contexts: {', '.join(short[:10])}{' ...' if len(short) > 10 else ''}; "
                            "add contexts or lower min_per_sense")


def _from_nested(name: str, data: Any, source: str) -> ContextSet:
    if isinstance(data, dict) and "contexts" in data:
        data = data["contexts"]
    if not isinstance(data, dict):
        raise ContextsError(f"{name}: expected a JSON object {{\"word\": {{\"sense\": [\"sentence\", ...]}}}}, "
                            f"got {type(data).__name__}")
    out = []
    for word, senses in data.items():
        if not isinstance(senses, dict):
            raise ContextsError(f"{name}: word {word!r} must map to {{\"sense\": [\"sentence\", ...]}}, got "
                                f"{type(senses).__name__} {senses!r:.80}")
        for sense, sentences in senses.items():
            if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
                raise ContextsError(f"{name}: word {word!r}, sense {sense!r} must map to a list of sentences, got "
                                    f"{sentences!r:.80}")
            try:
                out += [make_context(word, sense, s, source) for s in sentences]
            except ContextsError as err:
                raise ContextsError(f"{name}: {err}") from None
    return ContextSet(name, out)


def load_contexts_file(path: str | Path) -> ContextSet:
    """A ContextSet read from a CSV (columns word, sense, context) or JSON ({word: {sense: [sentences]}}) file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"contexts={str(path)!r}: no such file; accepted: {CONTEXT_SOURCES}")
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(read_user_text(path, "contexts file"))
        except json.JSONDecodeError as err:
            raise ContextsError(f"{path}: line {err.lineno}, column {err.colno}: invalid JSON ({err.msg})") from None
        return _from_nested(str(path), data, path.name)
    if suffix == ".csv":
        with io.StringIO(read_user_text(path, "contexts file"), newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in ("word", "sense", "context") if c not in (reader.fieldnames or [])]
            if missing:
                raise ContextsError(f"{path}: header {reader.fieldnames} lacks column(s) {missing}; accepted: a "
                                    "header with word, sense and context (other columns ignored)")
            out = []
            for line, row in enumerate(reader, start=2):
                try:
                    out.append(make_context(row["word"] or "", row["sense"] or "", row["context"] or "", path.name))
                except ContextsError as err:
                    raise ContextsError(f"{path}: line {line}: {err}") from None
        return ContextSet(str(path), out)
    raise ContextsError(f"{path}: unknown contexts file type {suffix!r}; accepted: .json or .csv")


@functools.lru_cache(maxsize=1)
def _builtin_raw() -> dict:
    return json.loads(BUILTIN_CONTEXTS.read_text(encoding="utf-8"))


def builtin_contexts() -> ContextSet:
    """The built-in contexts for the built-in concept set (>= 3 per sense of each polysemous word, controls)."""
    return _from_nested("builtin", _builtin_raw(), "builtin")


def wordnet_contexts(cs: ConceptSet, wn: Any, *, words: Iterable[str] | None = None) -> ContextSet:
    """WordNet's example sentences for the polysemous and control words of a WordNet concept set ``cs``.

    For each noun synset of a word, the examples that contain the word (whole word, any case) are tagged with
    the word's sense concept (a synset name in ``cs``) that lies above that synset (itself or a hypernym,
    instance hypernyms included); a synset under none of the word's senses, or under two, is skipped.
    ``wn`` is a WordNet reader (:func:`probing.datasets.wordnet_reader`). No minimum count is applied here.
    """
    inventory: dict[str, list[str]] = {w: list(s) for w, s in cs.polysemy.items()}
    inventory.update({w: [c] for w, c in cs.controls.items()})
    if words is not None:
        inventory = {w: inventory[w] for w in words if w in inventory}
    not_synsets = [s for s in {s for ss in inventory.values() for s in ss} if not re.fullmatch(r".+\.n\.\d+", s)]
    if not_synsets:
        raise ContextsError(f"contexts 'wordnet' need a WordNet concept set (concepts named by synsets such as "
                            f"'bird.n.01'); {cs.name!r} has concepts {sorted(not_synsets)[:5]}; use --concepts "
                            "wordnet, or contexts='builtin' or a file")
    out = []
    for word, senses in inventory.items():
        for synset in wn.synsets(word, pos="n"):
            if not any(lem.name().lower() == word.lower() for lem in synset.lemmas()):
                continue
            above = {synset.name()} | {s.name() for s in synset.closure(
                lambda s: s.hypernyms() + s.instance_hypernyms())}
            hits = [s for s in senses if s in above]
            if len(hits) != 1:
                continue
            for example in synset.examples():
                try:
                    out.append(make_context(word, hits[0], example, f"wordnet:{synset.name()}"))
                except ContextsError:
                    continue  # the example uses another form (plural, compound): not this word's occurrence
    return ContextSet("wordnet", out)


def drop_short(ctx: ContextSet, min_per_sense: int) -> tuple[ContextSet, list[str]]:
    """The contexts of (word, sense) pairs with >= min_per_sense contexts, of words keeping >= 1 sense; dropped."""
    counts = ctx.counts()
    keep = [c for c in ctx.contexts if counts[(c.word, c.sense)] >= min_per_sense]
    dropped = sorted(f"{w}/{s}" for (w, s), n in counts.items() if n < min_per_sense)
    return ContextSet(ctx.name, keep), dropped
