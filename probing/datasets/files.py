"""User concept sets: JSON or CSV files, polysemy files, and Hugging Face ``datasets`` objects.

File formats (docs/datasets.md):
- concepts JSON: ``{"concept": ["word", ...], ...}``;
- concepts CSV: a header with columns ``word`` and ``concept`` (other columns ignored), one word per row;
- polysemy JSON: ``{"word": ["concept_a", "concept_b"], ...}``, or ``{"polysemy": {...}, "controls":
  {"word": "concept", ...}}`` to add monosemous controls too.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from mcicl.probing.datasets.concepts import ConceptSet, ConceptSetError

log = logging.getLogger("mcicl")


class ConceptFileError(ConceptSetError):
    """A concept or polysemy file is malformed; the message names the file, and the line where known."""


def _no_duplicate_keys(path: Path):
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        repeated = [k for k, n in Counter(k for k, _ in pairs).items() if n > 1]
        if repeated:
            raise ConceptFileError(f"{path}: key(s) {repeated} appear more than once in one JSON object (only "
                                   "the last would be kept); accepted: each concept or word once, its words in "
                                   "one list")
        return dict(pairs)
    return hook


def _warn_repeats(path: Path, concept: str, words: list[str]) -> None:
    repeated = sorted(w for w, n in Counter(w.strip() for w in words).items() if n > 1 and w)
    if repeated:
        log.warning("%s: concept %r lists %s more than once; each word is used once", path, concept, repeated)
    empty = sum(not w.strip() for w in words)
    if empty:
        log.warning("%s: concept %r lists %d empty word(s); they are left out", path, concept, empty)


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM is not part of the first word
    except FileNotFoundError:
        raise FileNotFoundError(f"concept file {str(path)!r} does not exist") from None
    except UnicodeDecodeError as err:
        raise ConceptFileError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys(path))
    except json.JSONDecodeError as err:
        raise ConceptFileError(f"{path}: line {err.lineno}, column {err.colno}: invalid JSON ({err.msg})") from None


def _check_word_list(path: Path, concept: Any, words: Any) -> list[str]:
    if not isinstance(concept, str) or not concept.strip():
        raise ConceptFileError(f"{path}: concept names must be non-empty strings, got {concept!r}")
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise ConceptFileError(f"{path}: concept {concept!r} must map to a list of word strings, got "
                               f"{type(words).__name__} {words!r:.80}; expected {{\"concept\": [\"word\", ...]}}")
    _warn_repeats(path, concept, words)
    return words


def _with_file(path: Path, build: Any) -> ConceptSet:
    # ConceptSet validates; prefix its message with the file so the user knows where to look.
    try:
        return build()
    except ConceptFileError:
        raise
    except ConceptSetError as err:
        raise ConceptFileError(f"{path}: {err}") from None


def load_concept_file(path: str | Path, *, min_words: int = 2) -> ConceptSet:
    """A ConceptSet read from a JSON ``{"concept": [words]}`` or CSV ``word,concept`` file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        data = _read_json(path)
        if not isinstance(data, dict):
            raise ConceptFileError(f"{path}: the top level must be a JSON object {{\"concept\": [\"word\", ...]}}, "
                                   f"got a {type(data).__name__}")
        # Also accept the built-in layout {"concepts": {...}, "parents": {...}} so a copy of it can be edited.
        parents: dict[str, str] = {}
        if isinstance(data.get("concepts"), dict):
            parents = data.get("parents") or {}
            if not isinstance(parents, dict):
                raise ConceptFileError(f"{path}: 'parents' must be an object {{\"child\": \"parent\"}}")
            data = data["concepts"]
        concepts = {c: _check_word_list(path, c, ws) for c, ws in data.items()}
        return _with_file(path, lambda: ConceptSet(path.stem, concepts, parents=parents, min_words=min_words))
    if suffix == ".csv":
        return _with_file(path, lambda: ConceptSet(path.stem, _read_csv(path), min_words=min_words))
    raise ConceptFileError(f"{path}: unknown concept file type {suffix!r}; accepted: .json "
                           f"({{\"concept\": [\"word\", ...]}}) or .csv (columns word,concept)")


def _read_csv(path: Path) -> dict[str, list[str]]:
    try:
        handle = path.open(encoding="utf-8-sig", newline="")  # a BOM is not part of the first word
    except FileNotFoundError:
        raise FileNotFoundError(f"concept file {str(path)!r} does not exist") from None
    concepts: dict[str, list[str]] = {}
    with handle:
        reader = csv.DictReader(handle)
        try:
            header = [h.strip() for h in (reader.fieldnames or [])]
        except UnicodeDecodeError as err:
            raise ConceptFileError(f"{path}: not UTF-8 text ({err.reason})") from None
        missing = [c for c in ("word", "concept") if c not in header]
        if missing:
            raise ConceptFileError(f"{path}: line 1: header {header} lacks column(s) {missing}; a concept CSV "
                                   f"needs a header with columns 'word' and 'concept'")
        reader.fieldnames = header
        try:
            for row in reader:
                line = reader.line_num
                word, concept = (row.get("word") or "").strip(), (row.get("concept") or "").strip()
                if None in row or not concept or not word:
                    raise ConceptFileError(f"{path}: line {line}: expected a word and a concept, got {row!r:.120}")
                concepts.setdefault(concept, []).append(word)
        except UnicodeDecodeError as err:
            raise ConceptFileError(f"{path}: not UTF-8 text ({err.reason})") from None
    if not concepts:
        raise ConceptFileError(f"{path}: no rows after the header; expected lines 'word,concept'")
    for concept, words in concepts.items():
        _warn_repeats(path, concept, words)
    return concepts


def load_polysemy(path: str | Path, concepts: ConceptSet) -> ConceptSet:
    """A copy of ``concepts`` with the polysemous words (and optional controls) of a JSON file added.

    Entries in the file replace entries of the same word already in ``concepts``. A polysemous word that is
    also in a concept's word list is removed from that list (concept lists hold monosemous words).
    """
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ConceptFileError(f"{path}: the top level must be a JSON object {{\"word\": [\"concept_a\", "
                               f"\"concept_b\"]}}, got a {type(data).__name__}")
    controls: dict[str, Any] = {}
    if set(data) <= {"polysemy", "controls"} and all(isinstance(v, dict) for v in data.values()):
        controls = data.get("controls", {})
        data = data.get("polysemy", {})
    for word, senses in data.items():
        if not isinstance(senses, list) or not all(isinstance(s, str) for s in senses):
            raise ConceptFileError(f"{path}: polysemous word {word!r} must map to a list of concept names, got "
                                   f"{senses!r:.80}")
    for word, concept in controls.items():
        if not isinstance(concept, str):
            raise ConceptFileError(f"{path}: control word {word!r} must map to one concept name, got {concept!r}")
    polysemy = {**concepts.polysemy, **{w.strip(): list(s) for w, s in data.items()}}
    merged_controls = {**concepts.controls, **{w.strip(): c for w, c in controls.items()}}
    lists = {c: [w for w in ws if w not in polysemy] for c, ws in concepts.concepts.items()}
    moved = sorted({w for ws in concepts.concepts.values() for w in ws if w in polysemy})
    if moved:
        log.warning("%s: %d word(s) of the concept lists are polysemous here and are measured as polysemous words "
                    "only: %s", path, len(moved), ", ".join(moved[:10]) + (" ..." if len(moved) > 10 else ""))
    return _with_file(path, lambda: ConceptSet(concepts.name, lists, polysemy, merged_controls,
                                               dict(concepts.parents), concepts.min_words))


def from_hf_dataset(ds: Any, word_column: str = "word", concept_column: str = "concept", *,
                    name: str | None = None, min_words: int = 2) -> ConceptSet:
    """A ConceptSet from a Hugging Face ``datasets.Dataset`` (or any mapping of columns) with word/concept columns.

    Concept columns holding ``ClassLabel`` integers are turned into their label names.
    """
    columns = list(getattr(ds, "column_names", None) or (ds.keys() if hasattr(ds, "keys") else []))
    missing = [c for c in (word_column, concept_column) if c not in columns]
    if missing:
        raise ConceptSetError(f"dataset lacks column(s) {missing}; it has {columns}. Pass word_column= and "
                              f"concept_column= naming the word and concept columns")
    words, labels = list(ds[word_column]), list(ds[concept_column])
    feature = getattr(ds, "features", {}).get(concept_column) if hasattr(ds, "features") else None
    if feature is not None and hasattr(feature, "int2str"):
        labels = [feature.int2str(int(x)) for x in labels]
    concepts: dict[str, list[str]] = {}
    for i, (word, label) in enumerate(zip(words, labels, strict=True)):
        if not isinstance(word, str):
            raise ConceptSetError(f"dataset row {i}: column {word_column!r} must hold strings, got {word!r}")
        concepts.setdefault(str(label), []).append(word)
    if not concepts:
        raise ConceptSetError("dataset has no rows")
    ds_name = name or getattr(getattr(ds, "info", None), "dataset_name", None) or "hf_dataset"
    return ConceptSet(ds_name, concepts, min_words=min_words)
