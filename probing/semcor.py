"""SemCor 3.0: naturally occurring sense-tagged sentences (the Brown Corpus, WordNet 3.0 senses), read as contexts.

The distribution format (docs/semcor.md), one tag per line, attribute values unquoted::

    <s snum=1>
    <wf cmd=done pos=NN lemma=bank wnsn=1 lexsn=1:17:01::>bank</wf>
    <wf cmd=ignore pos=DT>the</wf>
    <punc>.</punc>
    </s>

``lemma%lexsn`` is a WordNet 3.0 sense key; several senses are joined by ``;`` (``wnsn=2;1
lexsn=1:28:02::;1:28:01::``); ``wnsn=0`` marks a sense WordNet 3.0 dropped; multiword expressions are joined
by ``_``. NLTK's XML rendering of SemCor (``nltk_data/corpora/semcor``: the same tags, attribute values in double
quotes, ``&amp;`` entities, an optional ``<?xml ...?>`` line; files ``*.xml``) is read the same way.
:func:`read_semcor` reads a folder holding ``brown1``/``brown2``/``brownv`` (each with ``tagfiles/``),
a ``tagfiles/`` folder, a folder of tag files or one file; a line it cannot read is one
:class:`SemcorFormatError` naming the file and line. Each sentence is rebuilt as text (:func:`rebuild`:
multiword ``_`` -> space, no space before ``, . ; : ? ! ) ] '' ' %`` and clitics such as ``'s`` / ``n't``, none after
``( [ `` ` $``, the quotes `````` and ``''`` written ``"``) with every token's character span.

:func:`semcor_contexts` turns the tagged nouns into a :class:`~probing.contexts.ContextSet` for a concept
set: each occurrence labelled by its sense's concept (a supersense ``noun.*`` for ``--concepts supersenses``;
for a WordNet synset set, the word's sense concept above the tagged synset). Every tagged noun is either
kept or counted under one skip reason (:data:`SKIP_REASONS`) in :class:`SemcorReport`; nothing is dropped
silently. An occurrence written in another form than its lemma (``banks`` for ``bank``, ``men`` for ``man``) is
kept with that written form as its span (``SenseContext.surface``: the vector pools the written form's tokens) and
counted (``inflected_found`` / ``inflected_kept``). At most ``max_per_sense`` occurrences per (word, sense) are
kept, drawn with a seeded generator.
"""

from __future__ import annotations

import functools
import html
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mcicl.probing.contexts import ContextsError, ContextSet, SenseContext
from mcicl.probing.datasets import wordnet_reader
from mcicl.probing.datasets.concepts import ConceptSet

SPEC_PREFIX = "semcor:"
MAX_PER_SENSE = 10     # occurrences kept per (word, sense), drawn with a seeded generator
SAMPLE_SEED = 0
MAX_CHARS = 600        # longer sentences are skipped (a transformer's position limit; counted, not silent)
NOUN_TAGS = ("NN", "NNS", "NNP", "NNPS")

_NO_SPACE_BEFORE = {",", ".", ";", ":", "?", "!", ")", "]", "''", "'", "%"}
_NO_SPACE_AFTER = {"(", "[", "``", "`", "$"}
_QUOTES = {"``": '"', "''": '"'}
_CLITIC = re.compile(r"^(?:'(?:s|S|ll|d|re|ve|m|LL|D|RE|VE|M)|n't|N'T)$")

# Attribute values unquoted (the distribution) or double-quoted (NLTK's XML rendering).
_VALUE = r'(?:"[^"]*"|[^\s>"]*)'
_WF = re.compile(rf"^<wf((?:\s+[A-Za-z_]+={_VALUE})*)\s*>(.*)</wf>$")
_PUNC = re.compile(r"^<punc>(.*)</punc>$")
_ATTR = re.compile(rf"([A-Za-z_]+)=({_VALUE})")
_S_OPEN = re.compile(r'^<s\s+snum="?(\d+)"?\s*>$')
_WNSN = re.compile(r"\d+(;\d+)*")
_LEXSN = re.compile(r"\d:\d\d:\d\d:[^:;]*:(\d\d)?")
_IGNORED = re.compile(r"^(?:<\?xml\b[^>]*\?>|<contextfile\b[^>]*>|</contextfile>|<context\b[^>]*>|</context>|"
                      r"<p\b[^>]*>|</p>)$")

SKIP_REASONS = {
    "dropped_sense": "wnsn=0: the sense was dropped in WordNet 3.0",
    "unknown_key": "sense key not found in WordNet 3.0",
    "multiword": "multiword expression (lemma joined by _)",
    "not_in_concept_set": "lemma is not a polysemous or control word of the concept set",
    "ambiguous_tag": "several senses (;-joined) with different concepts",
    "unlabelled": "tagged synset under none of the word's concepts",
    "too_long": f"sentence longer than {MAX_CHARS} characters",
    "over_cap": f"more than max_per_sense occurrences of the (word, sense) (default {MAX_PER_SENSE}, seeded draw)",
    "short_sense": "its (word, sense) has fewer than min_per_sense occurrences",
    "one_sense_left": "a polysemous word left with fewer than two senses",
}


class SemcorFormatError(ContextsError):
    """A SemCor file is malformed; the message names the file and the line."""


@dataclass(frozen=True)
class Token:
    """One ``<wf>`` or ``<punc>`` of a sentence: its text (``_`` kept) and attributes (empty for punctuation)."""

    text: str
    attrs: dict[str, str]
    line: int
    punc: bool = False

    @property
    def tagged(self) -> bool:
        """True for a word with a lemma and a sense (``cmd=done`` with ``lemma`` and ``lexsn``)."""
        return "lemma" in self.attrs and "lexsn" in self.attrs

    def sense_keys(self) -> list[tuple[int, str]]:
        """(wnsn, sense key ``lemma%lexsn``) of each ``;``-joined sense."""
        lemma = self.attrs["lemma"]
        return [(int(n), f"{lemma}%{lex}")
                for n, lex in zip(self.attrs["wnsn"].split(";"), self.attrs["lexsn"].split(";"), strict=True)]


@dataclass
class Sentence:
    """One ``<s>``: its file, number, tokens, rebuilt text and each token's character span in it."""

    file: str
    snum: int
    line: int
    tokens: list[Token]
    text: str = ""
    spans: list[tuple[int, int]] = field(default_factory=list)


def display(token: str) -> str:
    """A token as written in the rebuilt sentence: ``````/``''`` -> ``"``; a multiword token's parts (joined by
    ``_``) spaced by the same rule as a sentence's tokens (``Opelika_,_Ala.`` -> ``Opelika, Ala.``)."""
    if "_" in token.strip("_"):
        return rebuild([p for p in token.split("_") if p])[0]
    return _QUOTES.get(token, token)


def rebuild(tokens: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """(sentence text, character span of each token) with English spacing around punctuation and clitics."""
    text, spans, glue = "", [], True
    for tok in tokens:
        shown = display(tok)
        if text and not glue and tok not in _NO_SPACE_BEFORE and not _CLITIC.match(tok):
            text += " "
        spans.append((len(text), len(text) + len(shown)))
        text += shown
        glue = tok in _NO_SPACE_AFTER
    return text, spans


def _parse_wf(path: Path, n: int, line: str, xml: bool = False) -> Token:
    m = _WF.match(line)
    if m is None:
        raise SemcorFormatError(f"{path}: line {n}: cannot read {line[:100]!r}; accepted: <wf attr=value ...>"
                                "text</wf> on one line")
    attrs = {k: v[1:-1] if v.startswith('"') else v for k, v in _ATTR.findall(m.group(1))}
    text = m.group(2)
    if xml:
        attrs, text = {k: html.unescape(v) for k, v in attrs.items()}, html.unescape(text)
    if not text or "<" in text:
        raise SemcorFormatError(f"{path}: line {n}: <wf> holds {text!r}; accepted: the word's text, no tags")
    if ("lemma" in attrs) != ("lexsn" in attrs):
        raise SemcorFormatError(f"{path}: line {n}: <wf> has {'lemma' if 'lemma' in attrs else 'lexsn'} without "
                                f"{'lexsn' if 'lemma' in attrs else 'lemma'}: {line[:100]!r}")
    if "lexsn" in attrs:
        wnsn, lexsn = attrs.get("wnsn", ""), attrs["lexsn"]
        if not _WNSN.fullmatch(wnsn) or len(wnsn.split(";")) != len(lexsn.split(";")):
            raise SemcorFormatError(f"{path}: line {n}: wnsn={wnsn!r} and lexsn={lexsn!r} do not pair up; "
                                    "accepted: sense numbers and lexsn values joined by ';', as many of each")
        if not all(_LEXSN.fullmatch(x) for x in lexsn.split(";")):
            raise SemcorFormatError(f"{path}: line {n}: lexsn={lexsn!r} is not ss_type:lex_filenum:lex_id:head:"
                                    "head_id (e.g. 1:17:01::)")
    return Token(text, attrs, n)


def read_tagfile(path: str | Path) -> list[Sentence]:
    """The sentences of one tag file, each rebuilt (SemcorFormatError naming the file and line if malformed)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="ascii", errors="strict").splitlines()
    except UnicodeDecodeError as err:
        raise SemcorFormatError(f"{path}: byte {err.start}: not ASCII text (SemCor tag files are ASCII)") from None
    out: list[Sentence] = []
    current: Sentence | None = None
    # NLTK's XML rendering: quoted attributes, entities (&amp;) in text.
    xml = path.suffix.lower() == ".xml" or any(ln.lstrip().startswith("<?xml") for ln in lines[:2])
    for n, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or _IGNORED.match(line):
            if current is not None and line.startswith(("</p", "<p", "</context", "<context")):
                raise SemcorFormatError(f"{path}: line {n}: {line!r} inside sentence {current.snum} (opened at "
                                        f"line {current.line}); accepted: </s> first")
            continue
        if line.startswith("<s"):
            m = _S_OPEN.match(line)
            if m is None:
                raise SemcorFormatError(f"{path}: line {n}: cannot read {line!r}; accepted: <s snum=N>")
            if current is not None:
                raise SemcorFormatError(f"{path}: line {n}: sentence {m.group(1)} opens inside sentence "
                                        f"{current.snum} (opened at line {current.line}); accepted: </s> first")
            current = Sentence(path.name, int(m.group(1)), n, [])
        elif line == "</s>":
            if current is None:
                raise SemcorFormatError(f"{path}: line {n}: </s> closes no sentence")
            if not current.tokens:
                raise SemcorFormatError(f"{path}: line {n}: sentence {current.snum} is empty")
            current.text, current.spans = rebuild([t.text for t in current.tokens])
            out.append(current)
            current = None
        elif line.startswith(("<wf", "<punc")):
            if current is None:
                raise SemcorFormatError(f"{path}: line {n}: {line[:60]!r} outside a sentence; accepted: inside "
                                        "<s snum=N> ... </s>")
            if line.startswith("<wf"):
                current.tokens.append(_parse_wf(path, n, line, xml))
            else:
                m = _PUNC.match(line)
                if m is None or not m.group(1):
                    raise SemcorFormatError(f"{path}: line {n}: cannot read {line[:100]!r}; accepted: "
                                            "<punc>.</punc>")
                current.tokens.append(Token(html.unescape(m.group(1)) if xml else m.group(1), {}, n, punc=True))
        else:
            raise SemcorFormatError(f"{path}: line {n}: unknown line {line[:100]!r}; accepted: <s>, </s>, <wf>, "
                                    "<punc>, <p>, <context> and <contextfile> tags")
    if current is not None:
        raise SemcorFormatError(f"{path}: line {current.line}: sentence {current.snum} is never closed (</s>)")
    return out


def tag_files(path: str | Path) -> list[Path]:
    """The tag files named by ``path``: a file, a folder of ``br-*`` files, ``tagfiles/``, or a SemCor root."""
    path = Path(path).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"contexts='semcor:{path}': no such file or folder; accepted: semcor:PATH with "
                                "a SemCor 3.0 folder (brown1/brown2/brownv), a tagfiles/ folder or a tag file")
    parts = [path / p / "tagfiles" for p in ("brown1", "brown2", "brownv") if (path / p / "tagfiles").is_dir()]
    if not parts and (path / "tagfiles").is_dir():
        parts = [path / "tagfiles"]
    folders = parts or [path]
    files = sorted(f for d in folders for f in d.iterdir() if f.is_file() and not f.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"contexts='semcor:{path}': no tag files found; accepted: a SemCor 3.0 folder "
                                "(brown1/brown2/brownv with tagfiles/), a tagfiles/ folder or a tag file")
    return files


def read_semcor(path: str | Path) -> list[Sentence]:
    """Every sentence of the tag files named by ``path`` (see :func:`tag_files`), in file order."""
    return [s for f in tag_files(path) for s in read_tagfile(f)]


@dataclass
class SemcorReport:
    """What was read and what became of each tagged noun: kept, or skipped for one reason (counts)."""

    files: int = 0
    sentences: int = 0
    words: int = 0
    punctuation: int = 0
    tagged: int = 0
    tagged_nouns: int = 0
    kept: int = 0
    inflected_found: int = 0  # labelled occurrences written in another form than the lemma (plural, ...): kept
    inflected_kept: int = 0   # ... of them among the kept contexts
    skipped: Counter = field(default_factory=Counter)
    per_word: dict[str, dict[str, int]] = field(default_factory=dict)  # word -> sense -> occurrences found

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: the counts and the skip reasons with their meaning."""
        return {"files": self.files, "sentences": self.sentences, "words": self.words,
                "punctuation": self.punctuation, "tagged": self.tagged, "tagged_nouns": self.tagged_nouns,
                "kept": self.kept, "inflected_found": self.inflected_found, "inflected_kept": self.inflected_kept,
                "skipped": dict(sorted(self.skipped.items())),
                "skip_reasons": {k: SKIP_REASONS[k] for k in sorted(self.skipped)}}


@dataclass
class SemcorContextSet(ContextSet):
    """A ContextSet read from SemCor, with the report of what was kept and skipped."""

    report: SemcorReport = field(default_factory=SemcorReport)
    synsets: dict[str, str] = field(default_factory=dict)  # occurrence source (file:line) -> tagged synset(s)


def sense_resolver(wn: Any) -> Callable[[str], Any | None]:
    """A function sense key -> WordNet synset (None when WordNet 3.0 lacks the key), cached per lemma."""
    cache: dict[str, dict[str, Any]] = {}

    def resolve(key: str) -> Any | None:
        lemma = key.split("%", 1)[0]
        if lemma not in cache:
            cache[lemma] = {lem.key(): lem.synset() for lem in wn.lemmas(lemma)}
        return cache[lemma].get(key)
    return resolve


def concept_labeller(cs: ConceptSet) -> Callable[[str, Any], str | None]:
    """A function (word, synset) -> the word's concept in ``cs`` for that sense, or None.

    Supersense sets (every concept a lexicographer file name ``noun.*``): the synset's lexname. Synset sets
    (``bird.n.01``): the one sense concept of the word that is the synset or lies above it.
    """
    if all(c.startswith("noun.") for c in cs.concepts):
        known = set(cs.concepts)
        return lambda word, synset: synset.lexname() if synset.lexname() in known else None
    inventory = {w: list(s) for w, s in cs.polysemy.items()}
    inventory.update({w: [c] for w, c in cs.controls.items()})

    def label(word: str, synset: Any) -> str | None:
        above = {synset.name()} | {s.name() for s in synset.closure(lambda s: s.hypernyms() + s.instance_hypernyms())}
        hits = [s for s in inventory.get(word, []) if s in above]
        return hits[0] if len(hits) == 1 else None
    return label


def semcor_contexts(sentences: Iterable[Sentence], cs: ConceptSet, wn: Any, *, min_per_sense: int = 3,
                    max_per_sense: int = MAX_PER_SENSE, seed: int = SAMPLE_SEED, name: str = "semcor",
                    files: int = 0) -> SemcorContextSet:
    """The tagged nouns of ``sentences`` that are polysemous or control words of ``cs``, labelled by concept.

    Polysemous words keep the senses with >= ``min_per_sense`` occurrences when two or more do; controls
    keep theirs when it has ``min_per_sense``. At most ``max_per_sense`` per (word, sense), drawn with
    ``numpy.random.default_rng(seed)`` in (word, sense) order, original order kept.
    """
    report = SemcorReport(files=files)
    resolve = sense_resolver(wn)
    label = concept_labeller(cs)
    wanted = set(cs.polysemy) | set(cs.controls)
    found: dict[tuple[str, str], list[SenseContext]] = {}
    synset_of: dict[str, str] = {}
    for s in sentences:
        report.sentences += 1
        for tok, (start, end) in zip(s.tokens, s.spans, strict=True):
            if tok.punc:
                report.punctuation += 1
                continue
            report.words += 1
            if not tok.tagged:
                continue
            report.tagged += 1
            if tok.attrs.get("pos") not in NOUN_TAGS:
                continue
            report.tagged_nouns += 1
            word = tok.attrs["lemma"]
            keys = [k for n, k in tok.sense_keys() if n != 0]
            if not keys:
                reason = "dropped_sense"
            elif "_" in word:
                reason = "multiword"
            elif word not in wanted:
                reason = "not_in_concept_set"
            elif len(s.text) > MAX_CHARS:
                reason = "too_long"
            else:
                synsets = [resolve(k) for k in keys]
                if any(x is None for x in synsets):
                    reason = "unknown_key"
                else:
                    labels = {label(word, x) for x in synsets}
                    if None in labels:
                        reason = "unlabelled"
                    elif len(labels) > 1:
                        reason = "ambiguous_tag"
                    else:
                        sense = labels.pop()
                        synset_of[f"{s.file}:{tok.line}"] = "|".join(sorted({x.name() for x in synsets}))
                        # A plural or other inflection ("banks"): the occurrence is the written form's span.
                        written = s.text[start:end]
                        surface = written if written.lower() != word.lower() else ""
                        report.inflected_found += bool(surface)
                        found.setdefault((word, sense), []).append(
                            SenseContext(word, sense, s.text, start, f"{s.file}:{tok.line}", surface))
                        continue
            report.skipped[reason] += 1
    for (word, sense), items in found.items():
        report.per_word.setdefault(word, {})[sense] = len(items)
    rng = np.random.default_rng(seed)
    kept: dict[tuple[str, str], list[SenseContext]] = {}
    for key in sorted(found):
        items = found[key]
        if len(items) < min_per_sense:
            report.skipped["short_sense"] += len(items)
            continue
        if len(items) > max_per_sense:
            pick = np.sort(rng.choice(len(items), size=max_per_sense, replace=False))
            report.skipped["over_cap"] += len(items) - max_per_sense
            items = [items[i] for i in pick]
        kept[key] = items
    out: list[SenseContext] = []
    for word in sorted({w for w, _ in kept}):
        senses = [s for w, s in kept if w == word]
        rows = [c for s in senses for c in kept[(word, s)]]
        if word in cs.polysemy and len(senses) < 2:
            report.skipped["one_sense_left"] += len(rows)
            continue
        out += rows
    report.kept = len(out)
    report.inflected_kept = sum(bool(c.surface) for c in out)
    return SemcorContextSet(name, out, report, {c.source: synset_of[c.source] for c in out})


def parse_spec(spec: str) -> Path:
    """The path of a ``semcor:PATH`` contexts spec."""
    if not spec.startswith(SPEC_PREFIX) or not spec[len(SPEC_PREFIX):].strip():
        raise ContextsError(f"contexts={spec!r}: accepted: semcor:PATH (a SemCor 3.0 folder or tag file)")
    return Path(spec[len(SPEC_PREFIX):].strip()).expanduser()


def load_semcor_contexts(spec: str, cs: ConceptSet, *, min_per_sense: int = 3,
                         max_per_sense: int = MAX_PER_SENSE, seed: int = SAMPLE_SEED,
                         max_files: int = 0, part: tuple[int, int] = (0, 1)) -> SemcorContextSet:
    """The SemcorContextSet of ``semcor:PATH`` for concept set ``cs`` (WordNet read from the usual place); with
    ``max_files``, only the first that many tag files (name order); with ``part=(k, n)``, of those the files
    ``k, k + n, k + 2n, ...`` (``(0, 2)`` and ``(1, 2)``: two disjoint halves that alternate across the corpus)."""
    path = parse_spec(spec)
    files = tag_files(path)
    files = files[:max_files] if max_files else files
    k, n = part
    if not (isinstance(n, int) and n >= 1 and isinstance(k, int) and 0 <= k < n):
        raise ValueError(f"part={part!r}: accepted: (k, n) with integers 0 <= k < n")
    files = files[k::n]
    sentences = [s for f in files for s in read_tagfile_cached(f)]
    ctx = semcor_contexts(sentences, cs, wordnet_reader(), min_per_sense=min_per_sense,
                          max_per_sense=max_per_sense, seed=seed, name=f"semcor:{path.name}", files=len(files))
    if not ctx.contexts:
        raise ContextsError(f"contexts={spec!r}: no tagged noun of {cs.name!r}'s words has {min_per_sense} "
                            f"occurrences in two senses; read {ctx.report.to_dict()}")
    return ctx


@functools.lru_cache(maxsize=512)
def _read_cached(path: str, mtime_ns: int, size: int) -> tuple[Sentence, ...]:
    return tuple(read_tagfile(path))


def read_tagfile_cached(path: str | Path) -> list[Sentence]:
    """:func:`read_tagfile`, parsed once per process while the file is unchanged (sentences are not modified
    downstream)."""
    st = Path(path).stat()
    return list(_read_cached(str(path), st.st_mtime_ns, st.st_size))


def default_semcor() -> Path | None:
    """SemCor 3.0 where mcicl's data usually lies: ``../shared/data/semcor3.0`` from the working folder or from
    the repository, else ``/work/shared/data/semcor3.0``; None when none holds ``brown1/tagfiles``."""
    repo = Path(__file__).resolve().parents[1]
    for cand in (Path.cwd().parent / "shared" / "data" / "semcor3.0", repo.parent / "shared" / "data" / "semcor3.0",
                 Path("/work/shared/data/semcor3.0")):
        if (cand / "brown1" / "tagfiles").is_dir():
            return cand
    return None
