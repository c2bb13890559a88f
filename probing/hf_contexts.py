"""Contexts as a Hugging Face ``datasets`` dataset: written with ``save_to_disk``, read from one or from a file.

``--contexts dataset:PATH`` reads a folder written by ``Dataset.save_to_disk`` or a ``.parquet``, ``.csv``,
``.json``/``.jsonl`` file through ``datasets``. Columns are mapped by name: ``word``, ``sense``, ``context``
(required) and ``start`` (optional: the occurrence's character offset; without it the ``[bracketed]`` or first
whole-word occurrence is used, :func:`probing.contexts.locate`); other columns are ignored. A ContextSet written by
:func:`to_dataset` and read back is identical (word, sense, context, start, source).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mcicl.probing.contexts import ContextsError, ContextSet, SenseContext, make_context

SPEC_PREFIX = "dataset:"
COLUMNS = ("word", "sense", "context")
FILE_TYPES = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json"}


def to_dataset(ctx: ContextSet) -> Any:
    """A ``datasets.Dataset`` with one row per context: word, sense, context, start, source."""
    import datasets  # deferred: heavy (pyarrow), only for dataset: contexts

    return datasets.Dataset.from_list(ctx.rows())


def read_dataset(path: str | Path) -> Any:
    """The ``datasets.Dataset`` at ``path`` (a save_to_disk folder, or a parquet/csv/json file)."""
    import datasets  # deferred: heavy (pyarrow), only for dataset: contexts

    path = Path(path).expanduser()
    if path.is_dir():
        try:
            loaded = datasets.load_from_disk(str(path))
        except FileNotFoundError as err:
            raise ContextsError(f"contexts='dataset:{path}': not a folder written by save_to_disk ({err})") from None
        if isinstance(loaded, datasets.DatasetDict):
            raise ContextsError(f"contexts='dataset:{path}': holds splits {list(loaded)}; accepted: one split's "
                                "folder")
        return loaded
    if not path.is_file():
        raise FileNotFoundError(f"contexts='dataset:{path}': no such file or folder; accepted: a save_to_disk "
                                "folder or a .parquet/.csv/.json file")
    kind = FILE_TYPES.get(path.suffix.lower())
    if kind is None:
        raise ContextsError(f"contexts='dataset:{path}': unknown file type {path.suffix!r}; accepted: "
                            f"{', '.join(FILE_TYPES)} or a save_to_disk folder")
    return datasets.load_dataset(kind, data_files=str(path), split="train")


def from_dataset(data: Any, name: str) -> ContextSet:
    """A ContextSet from a dataset with columns word, sense, context (and optionally start, source)."""
    missing = [c for c in COLUMNS if c not in data.column_names]
    if missing:
        raise ContextsError(f"{name}: columns {data.column_names} lack {missing}; accepted: word, sense, context "
                            "(start, source optional, others ignored)")
    out = []
    for n, row in enumerate(data):
        word, sense, text = row["word"], row["sense"], row["context"]
        source = str(row.get("source") or "")
        start = row.get("start")
        try:
            if start is None:
                out.append(make_context(word, sense, text, source))
            elif not (isinstance(start, int) and 0 <= start and text[start:start + len(word)].lower() == word.lower()):
                raise ContextsError(f"word {word!r}: start={start!r} does not point at the word in {text!r}")
            else:
                out.append(SenseContext(word, sense, text, start, source))
        except ContextsError as err:
            raise ContextsError(f"{name}: row {n}: {err}") from None
    return ContextSet(name, out)


def load_dataset_contexts(spec: str) -> ContextSet:
    """The ContextSet named by ``dataset:PATH``."""
    path = spec[len(SPEC_PREFIX):].strip()
    if not spec.startswith(SPEC_PREFIX) or not path:
        raise ContextsError(f"contexts={spec!r}: accepted: dataset:PATH (a save_to_disk folder or a "
                            ".parquet/.csv/.json file)")
    return from_dataset(read_dataset(path), spec)
