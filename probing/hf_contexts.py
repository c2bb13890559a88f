"""Contexts as a Hugging Face ``datasets`` dataset: written with ``save_to_disk``, read from one, a file or the Hub.

``--contexts dataset:PATH`` reads a folder written by ``Dataset.save_to_disk`` or a ``.parquet``, ``.csv``,
``.json``/``.jsonl`` file through ``datasets``; ``--contexts hf:NAME[:CONFIG][@SPLIT]`` a dataset on the Hub (with
internet; refused at once offline, :mod:`probing.datasets.hub`). Columns are mapped by name: ``word``, ``sense``,
``context`` (required) and ``start`` (optional: the occurrence's character offset; without it the ``[bracketed]``
or first whole-word occurrence is used, :func:`probing.contexts.locate`), ``source`` and ``surface`` (optional:
the written form where it differs from the word, e.g. a plural); ``--columns
word=lemma,context=sentence`` names other columns for those roles; other columns are ignored. A ContextSet written
by :func:`to_dataset` and read back is identical (word, sense, context, start, source). :func:`vectors_dataset`
writes extracted contextual vectors as one (Arrow) dataset: a row per context, a ``layer_<L>`` column per layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mcicl.probing.contexts import ContextsError, ContextSet, SenseContext, make_context
from mcicl.probing.datasets.concepts import ConceptSetError
from mcicl.probing.datasets.hub import DATASET_PREFIXES, map_columns, parse_columns, read_dataset

COLUMNS = ("word", "sense", "context")  # required roles; start, source, surface optional


def to_dataset(ctx: ContextSet) -> Any:
    """A ``datasets.Dataset`` with one row per context: word, sense, context, start, source, surface."""
    import datasets  # deferred: heavy (pyarrow), only for dataset: contexts

    return datasets.Dataset.from_list([{**r, "surface": c.surface} for r, c in zip(ctx.rows(), ctx.contexts,
                                                                                   strict=True)])


def from_dataset(data: Any, name: str, columns: str | dict[str, str] | None = None) -> ContextSet:
    """A ContextSet from a dataset with columns word, sense, context (and optionally start, source); ``columns``
    (``word=lemma,...``) names other columns for those roles."""
    mapping = columns if isinstance(columns, dict) else parse_columns(columns)
    try:
        data = map_columns(data, mapping, name, COLUMNS)
    except ConceptSetError as err:
        raise ContextsError(str(err)) from None
    out = []
    for n, row in enumerate(data):
        word, sense, text = row["word"], row["sense"], row["context"]
        source = str(row.get("source") or "")
        start, surface = row.get("start"), str(row.get("surface") or "")
        written = surface or word
        try:
            if start is None:
                out.append(make_context(word, sense, text, source))
            elif not (isinstance(start, int) and 0 <= start
                      and text[start:start + len(written)].lower() == written.lower()):
                raise ContextsError(f"word {written!r}: start={start!r} does not point at it in {text!r}")
            else:
                out.append(SenseContext(word, sense, text, start, source, surface))
        except ContextsError as err:
            raise ContextsError(f"{name}: row {n}: {err}") from None
    return ContextSet(name, out)


def load_dataset_contexts(spec: str, columns: str | dict[str, str] | None = None) -> ContextSet:
    """The ContextSet named by ``dataset:PATH`` or ``hf:NAME[:CONFIG][@SPLIT]``."""
    if not spec.startswith(DATASET_PREFIXES):
        raise ContextsError(f"contexts={spec!r}: accepted: dataset:PATH (a save_to_disk folder or a "
                            ".parquet/.csv/.json file) or hf:NAME[:CONFIG][@SPLIT]")
    try:
        data = read_dataset(spec)
    except ConceptSetError as err:
        raise ContextsError(f"contexts={err}") from None
    return from_dataset(data, spec, columns)


def vectors_dataset(contexts: list[SenseContext], vectors: dict[str, np.ndarray],
                    n_tokens: list[int] | None = None) -> Any:
    """A ``datasets.Dataset``: one row per context (word, sense, context, start, source, surface, n_tokens) and a
    ``layer_<L>`` column of float32 vectors per layer (``vectors``: layer -> (len(contexts), d))."""
    import datasets  # deferred: heavy (pyarrow), only when vectors are written as a dataset

    n = len(contexts)
    bad = {layer: v.shape for layer, v in vectors.items() if v.shape[0] != n}
    if bad:
        raise ValueError(f"vectors {bad} do not have one row per context ({n})")
    columns: dict[str, Any] = {key: [c.__dict__[key] for c in contexts] for key in ("word", "sense", "context",
                                                                                     "start", "source", "surface")}
    columns["n_tokens"] = list(n_tokens) if n_tokens is not None else [0] * n
    features = {"word": datasets.Value("string"), "sense": datasets.Value("string"),
                "context": datasets.Value("string"), "start": datasets.Value("int64"),
                "source": datasets.Value("string"), "surface": datasets.Value("string"),
                "n_tokens": datasets.Value("int64")}
    for layer, v in vectors.items():
        columns[f"layer_{layer}"] = np.asarray(v, dtype=np.float32)
        features[f"layer_{layer}"] = datasets.Sequence(datasets.Value("float32"), length=int(v.shape[1]))
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))
