"""Word-in-Context (WiC) pairs as input: the same word in two sentences, labelled same sense (T) or not (F).

Two layouts are read:

- the official WiC TSV (Pilehvar & Camacho-Collados 2019), ``word <TAB> pos <TAB> idx1-idx2 <TAB> sentence1 <TAB>
  sentence2`` per line, ``idx`` the target's position among the whitespace-separated tokens of each sentence; the
  gold labels ``T``/``F`` one per line in a separate file (``train.data.txt`` beside ``train.gold.txt``, found by
  that name or given);
- SuperGLUE's JSONL (``WiC/train.jsonl``): fields ``word``, ``sentence1``, ``sentence2``, ``start1``, ``end1``,
  ``start2``, ``end2`` (character offsets) and ``label`` (true/false); ``pos`` and ``idx`` optional.

Each line becomes a :class:`WicPair` whose two occurrences are :class:`~probing.contexts.SenseContext` s (the target
as written, e.g. a plural, is the occurrence's ``surface``), so the contextual extraction reads the written form's
tokens. :func:`wic_pair_auc` measures the pooled AUC of the contextual cosine for same- vs different-sense pairs per
layer, with the cluster bootstrap over words of :mod:`analysis.engine.wic` (every word enters, also words with
one pair). A malformed line is one error naming the file and line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mcicl.analysis.engine.wic import Pairs, pair_auc
from mcicl.probing.contexts import ContextsError, SenseContext

LABELS = {"T": True, "F": False, "true": True, "false": False, "True": True, "False": False}


class WicFormatError(ContextsError):
    """A WiC file is malformed; the message names the file and the line."""


@dataclass(frozen=True)
class WicPair:
    """One WiC item: the word (lemma), its part of speech, its two occurrences, same sense or not (None: unlabelled)."""

    word: str
    pos: str
    first: SenseContext
    second: SenseContext
    label: bool | None


def _token_span(sentence: str, index: int) -> tuple[int, int]:
    """Character span of the ``index``-th whitespace-separated token of ``sentence``."""
    pos, k = 0, -1
    for tok in sentence.split():
        pos = sentence.index(tok, pos)
        k += 1
        if k == index:
            return pos, pos + len(tok)
        pos += len(tok)
    raise IndexError(index)


def _occurrence(word: str, sentence: str, start: int, end: int, source: str) -> SenseContext:
    written = sentence[start:end]
    return SenseContext(word, "", sentence, start, source, "" if written.lower() == word.lower() else written)


def gold_path(path: Path) -> Path | None:
    """The gold file beside a WiC ``*.data.txt`` (``*.gold.txt``), or None when there is none."""
    if path.name.endswith(".data.txt"):
        cand = path.with_name(path.name[: -len(".data.txt")] + ".gold.txt")
        return cand if cand.is_file() else None
    return None


def read_wic_tsv(path: str | Path, gold: str | Path | None = None) -> list[WicPair]:
    """The pairs of a WiC TSV, labelled from ``gold`` (default: the ``*.gold.txt`` beside it; none: unlabelled)."""
    path = Path(path)
    gold_file = Path(gold) if gold is not None else gold_path(path)
    labels: list[bool] | None = None
    if gold_file is not None:
        raw = [ln.strip() for ln in gold_file.read_text(encoding="utf-8").splitlines() if ln.strip()]
        bad = next(((n, x) for n, x in enumerate(raw, 1) if x not in ("T", "F")), None)
        if bad:
            raise WicFormatError(f"{gold_file}: line {bad[0]}: label {bad[1]!r}; accepted: T or F")
        labels = [x == "T" for x in raw]
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if labels is not None and len(labels) != len(lines):
        raise WicFormatError(f"{gold_file}: {len(labels)} labels for the {len(lines)} lines of {path}; accepted: one "
                             "T/F per line")
    out = []
    for n, line in enumerate(lines, start=1):
        parts = line.split("\t")
        if len(parts) != 5:
            raise WicFormatError(f"{path}: line {n}: {len(parts)} tab-separated fields; accepted: word, pos, "
                                 "idx1-idx2, sentence1, sentence2")
        word, pos, idx, s1, s2 = parts
        try:
            i1, i2 = (int(x) for x in idx.split("-"))
            (a1, b1), (a2, b2) = _token_span(s1, i1), _token_span(s2, i2)
        except (ValueError, IndexError):
            raise WicFormatError(f"{path}: line {n}: indices {idx!r} do not name a token of each sentence; "
                                 "accepted: idx1-idx2, positions among the whitespace-separated tokens (from 0)"
                                 ) from None
        out.append(WicPair(word, pos, _occurrence(word, s1, a1, b1, f"{path.name}:{n}:1"),
                           _occurrence(word, s2, a2, b2, f"{path.name}:{n}:2"),
                           None if labels is None else labels[n - 1]))
    return out


def read_wic_jsonl(path: str | Path) -> list[WicPair]:
    """The pairs of a SuperGLUE WiC JSONL file (character offsets start/end; label true/false)."""
    path = Path(path)
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row: dict[str, Any] = json.loads(line)
            word, s1, s2 = row["word"], row["sentence1"], row["sentence2"]
            spans = [(int(row["start1"]), int(row["end1"])), (int(row["start2"]), int(row["end2"]))]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise WicFormatError(f"{path}: line {n}: {type(err).__name__}: {err}; accepted: a JSON object with word, "
                                 "sentence1, sentence2, start1, end1, start2, end2 (label optional)") from None
        for (a, b), s in zip(spans, (s1, s2), strict=True):
            if not (0 <= a < b <= len(s)):
                raise WicFormatError(f"{path}: line {n}: span {a}..{b} lies outside {s!r}")
        label = row.get("label")
        if label is not None and str(label) not in LABELS:
            raise WicFormatError(f"{path}: line {n}: label {label!r}; accepted: true or false")
        out.append(WicPair(word, str(row.get("pos", "")), _occurrence(word, s1, *spans[0], f"{path.name}:{n}:1"),
                           _occurrence(word, s2, *spans[1], f"{path.name}:{n}:2"),
                           None if label is None else LABELS[str(label)]))
    return out


def read_wic(path: str | Path, gold: str | Path | None = None) -> list[WicPair]:
    """The pairs of a WiC file: ``.jsonl``/``.json`` (SuperGLUE) or the TSV (``*.txt``/``*.tsv``, gold beside it)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"wic={str(path)!r}: no such file; accepted: a SuperGLUE WiC .jsonl or a WiC "
                                "*.data.txt (with *.gold.txt beside it)")
    pairs = read_wic_jsonl(path) if path.suffix.lower() in (".jsonl", ".json") else read_wic_tsv(path, gold)
    if not pairs:
        raise WicFormatError(f"{path}: no pairs")
    return pairs


def wic_contexts(pairs: list[WicPair]) -> tuple[list[SenseContext], Pairs]:
    """The occurrences (first and second of each pair, interleaved) and the :class:`Pairs` over them (labelled
    pairs only)."""
    labelled = [p for p in pairs if p.label is not None]
    if not labelled:
        raise WicFormatError("no labelled WiC pair (the gold file is missing?); accepted: pairs with T/F labels")
    contexts = [c for p in labelled for c in (p.first, p.second)]
    names, codes = np.unique(np.array([p.word for p in labelled], dtype=str), return_inverse=True)
    k = np.arange(len(labelled))
    return contexts, Pairs(2 * k, 2 * k + 1, codes, np.array([bool(p.label) for p in labelled]), names)


def wic_pair_auc(vectors: dict[str, np.ndarray], pairs: Pairs, *, n_bootstrap: int = 1000, seed: int = 0
                 ) -> list[dict[str, Any]]:
    """Per layer: the pooled AUC of the cosine of same- vs different-sense WiC pairs (``vectors``: layer ->
    (2 n_pairs, d), rows as :func:`wic_contexts` orders them), cluster bootstrap over words (all words)."""
    rows = []
    for k, (layer, v) in enumerate(vectors.items()):
        v = np.asarray(v, dtype=np.float64)
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        scores = np.einsum("pd,pd->p", v[pairs.i], v[pairs.j])
        rows.append({"layer": layer, **pair_auc(scores, pairs, n_bootstrap=n_bootstrap, seed=seed + k,
                                                 all_words=True).to_dict()})
    return rows
