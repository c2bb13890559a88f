"""Hugging Face ``datasets`` as an input format: a local dataset or one on the Hub, columns mapped by name.

Specs (for ``--concepts``, ``--suite`` and ``--contexts``):

- ``dataset:PATH``: a folder written by ``Dataset.save_to_disk``, or a ``.parquet``, ``.csv``, ``.json``/``.jsonl``
  file read through ``datasets.load_dataset``;
- ``hf:NAME[:CONFIG][@SPLIT]``: a dataset on the Hugging Face Hub (``datasets.load_dataset(NAME, CONFIG,
  split=SPLIT)``, split ``train`` by default). Needs internet: where the Hub cannot be reached (no DNS answer
  within a few seconds, or ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` set) it is refused at once with one error
  naming the spec, instead of ``datasets``' retries.

Columns are found by role name: ``word``, ``sense`` (a concept set may call it ``concept``), ``context``; a
mapping ``word=lemma,sense=label`` (the ``--columns`` option) names other columns for those roles.

A concept set from a dataset (:func:`load_dataset_concepts`): one row per (word, sense); a word with one sense is a
concept word of that sense, a word listed under two or more senses is polysemous with those senses as its
inventory.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from mcicl.probing.datasets.concepts import ConceptSet, ConceptSetError

DATASET_PREFIX = "dataset:"
HUB_PREFIX = "hf:"
DATASET_PREFIXES = (DATASET_PREFIX, HUB_PREFIX)
ROLES = ("word", "sense", "context", "start", "source", "surface")
FILE_TYPES = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json"}
HUB_HOST = "huggingface.co"
HUB_TIMEOUT_S = 3.0


def parse_columns(text: str | None) -> dict[str, str]:
    """role -> column from ``word=lemma,sense=label`` (empty or None: every role under its own name)."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        role, sep, column = (x.strip() for x in part.partition("="))
        if not sep or role not in ROLES or not column:
            raise ConceptSetError(f"columns={text!r}: cannot read {part.strip()!r}; accepted: comma-separated "
                                  f"ROLE=COLUMN with ROLE one of {', '.join(ROLES)} (e.g. word=lemma,sense=label)")
        out[role] = column
    return out


def parse_hub_spec(spec: str) -> tuple[str, str | None, str]:
    """(name, config or None, split) of ``hf:NAME[:CONFIG][@SPLIT]``."""
    body = spec[len(HUB_PREFIX):].strip() if spec.startswith(HUB_PREFIX) else ""
    body, _, split = body.partition("@")
    name, _, config = body.partition(":")
    if not name or (_ and not config) or ("@" in spec and not split):
        raise ConceptSetError(f"{spec!r}: accepted: hf:NAME[:CONFIG][@SPLIT], e.g. hf:super_glue:wic@validation")
    return name, config or None, split or "train"


def hub_reachable(host: str = HUB_HOST, timeout: float = HUB_TIMEOUT_S) -> bool:
    """Whether the Hub's host answers a TCP connection within ``timeout`` seconds (False when offline is set)."""
    if any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def read_dataset(spec: str) -> Any:
    """The ``datasets.Dataset`` named by ``dataset:PATH`` or ``hf:NAME[:CONFIG][@SPLIT]``."""
    import datasets  # deferred: heavy (pyarrow), only for dataset inputs

    if spec.startswith(HUB_PREFIX):
        name, config, split = parse_hub_spec(spec)
        if not hub_reachable():
            raise ConceptSetError(f"{spec!r}: the Hugging Face Hub ({HUB_HOST}) cannot be reached (offline); "
                                  "accepted offline: dataset:PATH (a save_to_disk folder or a .parquet/.csv/.json "
                                  "file)")
        try:
            return datasets.load_dataset(name, config, split=split)
        except (ConnectionError, FileNotFoundError, ValueError) as err:
            raise ConceptSetError(f"{spec!r}: datasets could not load it: {err}") from None
    path = Path(spec[len(DATASET_PREFIX):].strip()).expanduser() if spec.startswith(DATASET_PREFIX) else None
    if path is None or not str(path).strip() or str(path) == ".":
        raise ConceptSetError(f"{spec!r}: accepted: dataset:PATH (a save_to_disk folder or a .parquet/.csv/.json "
                              "file) or hf:NAME[:CONFIG][@SPLIT]")
    if path.is_dir():
        try:
            loaded = datasets.load_from_disk(str(path))
        except FileNotFoundError as err:
            raise ConceptSetError(f"{spec!r}: not a folder written by save_to_disk ({err})") from None
        if isinstance(loaded, datasets.DatasetDict):
            raise ConceptSetError(f"{spec!r}: holds splits {list(loaded)}; accepted: one split's folder")
        return loaded
    if not path.is_file():
        raise FileNotFoundError(f"{spec!r}: no such file or folder; accepted: a save_to_disk folder or a "
                                ".parquet/.csv/.json file")
    kind = FILE_TYPES.get(path.suffix.lower())
    if kind is None:
        raise ConceptSetError(f"{spec!r}: unknown file type {path.suffix!r}; accepted: {', '.join(FILE_TYPES)} or a "
                              "save_to_disk folder")
    return datasets.load_dataset(kind, data_files=str(path), split="train")


def map_columns(data: Any, columns: dict[str, str], name: str, needed: tuple[str, ...]) -> Any:
    """``data`` with each role's column renamed to the role (``columns``: role -> column); ``needed`` must exist."""
    renames = {col: role for role, col in columns.items() if col != role}
    missing = [col for col in renames if col not in data.column_names]
    if missing:
        raise ConceptSetError(f"{name}: columns={columns} name {missing}, not among its columns {data.column_names}")
    clash = [role for role in renames.values() if role in data.column_names and role not in renames]
    data = data.remove_columns(clash).rename_columns(renames) if renames else data
    lacking = [role for role in needed if role not in data.column_names]
    if lacking:
        raise ConceptSetError(f"{name}: columns {data.column_names} lack {lacking}; accepted: columns named "
                              f"{', '.join(needed)}, or --columns ROLE=COLUMN,... naming them")
    return data


def load_dataset_concepts(spec: str, columns: str | dict[str, str] | None = None, *, min_words: int = 2
                          ) -> ConceptSet:
    """A ConceptSet from a dataset with ``word`` and ``sense`` (or ``concept``) columns (module doc)."""
    data = read_dataset(spec)
    mapping = parse_columns(columns) if not isinstance(columns, dict) else dict(columns)
    if "sense" not in mapping and "sense" not in data.column_names and "concept" in data.column_names:
        mapping["sense"] = "concept"
    data = map_columns(data, mapping, spec, ("word", "sense"))
    feature = data.features.get("sense")
    senses_of: dict[str, list[str]] = {}
    for n, (word, sense) in enumerate(zip(data["word"], data["sense"], strict=True)):
        if hasattr(feature, "int2str"):
            sense = feature.int2str(int(sense))
        if not isinstance(word, str) or not word.strip() or sense is None or not str(sense).strip():
            raise ConceptSetError(f"{spec}: row {n}: word={word!r}, sense={sense!r}; accepted: a non-empty word and "
                                  "sense in every row")
        have = senses_of.setdefault(word.strip(), [])
        if str(sense).strip() not in have:
            have.append(str(sense).strip())
    if not senses_of:
        raise ConceptSetError(f"{spec}: no rows")
    lists: dict[str, list[str]] = {}
    polysemy: dict[str, list[str]] = {}
    for word, senses in senses_of.items():
        if len(senses) == 1:
            lists.setdefault(senses[0], []).append(word)
        else:
            polysemy[word] = senses
    for senses in polysemy.values():
        for s in senses:
            lists.setdefault(s, [])
    return ConceptSet(spec, lists, polysemy, min_words=min_words)
