"""An activation store: a model's pooled (or token-level) activations for chosen layers, in shards on disk.

A store is a folder: ``manifest.json`` (what the activations are and which shards are finished) and
``shard-00000.safetensors``, ... (:mod:`mcicl.core.shards`: written atomically, read memory-mapped). Each shard
holds, per layer, ``layer.<name>`` (rows, d) float32, plus ``item`` (rows,) int64 (the item each row belongs
to; with token-level pooling several rows per item) and ``position`` (the token position, -1 when pooled), and
its items' words and labels in its metadata.

The manifest's ``key`` is everything that changes the numbers: the model fingerprint (class, location, weight
files, a weight hash, commit; :func:`probing.cache.model_fingerprint`), revision, tokenizer, space, layers,
pooling, template and dtype. Writing into a store whose key differs is refused with one error naming both keys'
differing fields; so is writing other items (the ``plan``: item count, shard size and a hash of the words).
Resuming: a shard listed in the manifest whose file is whole is never recomputed; a shard file the manifest
does not list (killed between the rename and the manifest update) is adopted when whole; a truncated shard is
rewritten when writing and refused, naming it, when reading. A full disk during a shard write leaves every
finished shard and the manifest as they were, and says so.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mcicl.analysis.engine.streaming import StreamingGeometry, permuted_codes, streaming_geometry
from mcicl.core.logs import progress
from mcicl.core.shards import ShardError, check_shard, read_shard, shard_metadata, write_atomic, write_shard
from mcicl.probing.cache import model_fingerprint
from mcicl.probing.extract import prepare_words
from mcicl.probing.extract_config import ExtractionConfig, resolve_layers
from mcicl.probing.forward import PoolItem, n_hidden_layers, padding_for, padding_token_id, pool_vectors
from mcicl.probing.models import LoadedModel

log = logging.getLogger("mcicl")
STORE_FORMAT = 1
MANIFEST = "manifest.json"
SHARD_ITEMS = 4096  # items per shard (a word, or a context with its token rows)


class StoreError(ValueError):
    """A store that cannot be used as asked (unknown path, another model or config, bad shard, full disk)."""


def _shard_name(i: int) -> str:
    return f"shard-{i:05d}.safetensors"


def _items_hash(words: Sequence[str], labels: Sequence[str]) -> str:
    h = hashlib.sha256()
    for w, lab in zip(words, labels, strict=True):
        h.update(w.encode("utf-8", "surrogatepass") + b"\x00" + lab.encode("utf-8", "surrogatepass") + b"\x01")
    return h.hexdigest()[:24]


def _differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """'field: A vs B' for every leaf where two keys differ."""
    out = []
    for name in sorted(set(a) | set(b)):
        x, y = a.get(name), b.get(name)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{name}.")
        elif json.dumps(x, default=str) != json.dumps(y, default=str):
            out.append(f"{prefix}{name}: {json.dumps(x, default=str)[:80]} vs {json.dumps(y, default=str)[:80]}")
    return out


@dataclass
class ActivationStore:
    """A store folder opened for reading: its manifest, layers and shards (memory-mapped on read)."""

    path: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path) -> ActivationStore:
        """The store at ``path``; StoreError naming it when there is none or it is unfinished or damaged."""
        path = Path(path)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise StoreError(f"store {str(path)!r} not found: no {MANIFEST} in it; accepted: a folder written by "
                             "mcicl.probing.store.write_store (or geometry --store with a model)")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise StoreError(f"store {str(path)!r}: {MANIFEST} is unreadable ({type(err).__name__}); accepted: "
                             "a manifest written by mcicl (rewrite the store)") from None
        if manifest.get("format") != STORE_FORMAT:
            raise StoreError(f"store {str(path)!r} has format {manifest.get('format')!r}; accepted: {STORE_FORMAT}")
        store = cls(path, manifest)
        missing = [i for i in range(store.n_shards) if str(i) not in manifest["shards"]]
        if missing:
            raise StoreError(f"store {str(path)!r} is unfinished: shard(s) {missing[:5]} of {store.n_shards} not "
                             "written; accepted: a finished store (rerun the same write to resume it)")
        return store

    @property
    def key(self) -> dict[str, Any]:
        """What the activations are (model fingerprint, revision, layers, pooling, template, ...)."""
        return self.manifest["key"]

    @property
    def layers(self) -> list[str]:
        """The stored layer names."""
        return list(self.key["layers"])

    @property
    def n_shards(self) -> int:
        """Planned (and, in an opened store, finished) shards."""
        return int(self.manifest["plan"]["n_shards"])

    @property
    def n_rows(self) -> int:
        """Rows over all shards."""
        return sum(int(s["rows"]) for s in self.manifest["shards"].values())

    @property
    def dim(self) -> int:
        """Vector width."""
        return int(self.manifest["dim"])

    def shard_path(self, i: int) -> Path:
        """The file of shard ``i``."""
        return self.path / _shard_name(i)

    def shard(self, i: int) -> dict[str, np.ndarray]:
        """Shard ``i``'s arrays, memory-mapped; StoreError naming the shard when it is truncated or changed."""
        path = self.shard_path(i)
        expected = int(self.manifest["shards"][str(i)]["bytes"])
        try:
            size = check_shard(path)
        except ShardError as err:
            raise StoreError(f"store {str(self.path)!r}: {err}; accepted: a whole shard (rerun the same write to "
                             "rewrite it)") from None
        if size != expected:
            raise StoreError(f"store {str(self.path)!r}: shard {path.name} has {size:,} bytes, the manifest says "
                             f"{expected:,}; accepted: the shard as written (rerun the same write to rewrite it)")
        return read_shard(path)

    def items(self, i: int) -> tuple[list[str], list[str]]:
        """(words, labels) of shard ``i``'s items, from its header."""
        meta = shard_metadata(self.shard_path(i))
        return json.loads(meta["words"]), json.loads(meta["labels"])

    def chunks(self, layer: str) -> Iterator[tuple[np.ndarray, np.ndarray, list[str], list[str]]]:
        """(rows, item index within the shard, the shard's words, labels) of ``layer``, shard by shard."""
        if layer not in self.layers:
            raise StoreError(f"layer {layer!r} is not in store {str(self.path)!r}; stored layers: "
                             + ", ".join(self.layers))
        for i in range(self.n_shards):
            arrays = self.shard(i)
            words, labels = self.items(i)
            yield arrays[f"layer.{layer}"], np.asarray(arrays["item"]) - int(arrays["first_item"][0]), words, labels

    def labels(self) -> list[str]:
        """Every item's label, in item order (headers only)."""
        return [lab for i in range(self.n_shards) for lab in self.items(i)[1]]


def store_key(loaded: LoadedModel, config: ExtractionConfig, names: list[str]) -> dict[str, Any]:
    """The manifest key of ``config``'s extraction from ``loaded``: what makes two stores hold the same numbers."""
    model, tokenizer = loaded.model, loaded.tokenizer
    return {"model": model_fingerprint(model, getattr(loaded.ref, "location", None)),
            "model_name": getattr(loaded.ref, "name", ""), "revision": getattr(config, "revision", None),
            "tokenizer": [type(tokenizer).__name__, len(tokenizer), tokenizer.name_or_path],
            "space": config.space, "layers": names, "pooling": config.pooling, "template": config.template,
            "dtype": str(model.dtype)}


def _read_manifest(path: Path) -> dict[str, Any] | None:
    file = path / MANIFEST
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StoreError(f"store {str(path)!r}: {MANIFEST} is unreadable ({type(err).__name__}); accepted: a "
                         "manifest written by mcicl, or an empty folder for a new store") from None


def _save_manifest(path: Path, manifest: dict[str, Any]) -> None:
    write_atomic(path / MANIFEST, (json.dumps(manifest, indent=1, default=str) + "\n").encode("utf-8"))


def write_store(path: str | Path, pairs: Sequence[tuple[str, str]], config: ExtractionConfig, loaded: LoadedModel,
                *, shard_items: int = SHARD_ITEMS, tokens: bool = False, show_progress: bool = True
                ) -> ActivationStore:
    """Extract ``pairs`` (word, label) as ``config`` says into the store at ``path`` (created, or resumed) and
    return it opened. One row per word pooled as ``config.pooling`` says, or with ``tokens`` one row per word
    token (``position``: the token's index in the templated text); the words are put in the template."""
    if config.space != "hidden":
        raise StoreError(f"store: space={config.space!r}; accepted: 'hidden' (input and unembedding rows are the "
                         "model's own weights: read them from the model)")
    words_all = [w for w, _ in pairs]
    kept, items, report = prepare_words(loaded.tokenizer, words_all, config.template)
    label_of: dict[str, str] = {}
    for w, lab in pairs:
        label_of.setdefault(w, lab)
    labels = [label_of[w] for w in kept]
    layer_idx = resolve_layers(config.layers, n_hidden_layers(loaded.model))
    key = store_key(loaded, config, [str(i) for i in layer_idx])
    key["pooling"] = "tokens" if tokens else config.pooling
    return write_items(path, key, items, kept, labels, loaded, layer_idx, batch_size=config.batch_size,
                       shard_items=shard_items, left_out={k: v for k, v in report.items() if v},
                       show_progress=show_progress)


def write_items(path: str | Path, key: dict[str, Any], items: Sequence[PoolItem], words: Sequence[str],
                labels: Sequence[str], loaded: LoadedModel, layer_idx: Sequence[int], *, batch_size: int | str,
                shard_items: int = SHARD_ITEMS, left_out: dict[str, Any] | None = None,
                show_progress: bool = True) -> ActivationStore:
    """Pool prepared ``items`` (one per word or context, named ``words`` with ``labels``) at ``layer_idx`` into
    the store at ``path`` under ``key`` (``key["pooling"]``: a pooling, or 'tokens' for one row per item token);
    created, or resumed shard by shard; a store of another key or other items is refused. Returned opened."""
    path = Path(path)
    model, tokenizer = loaded.model, loaded.tokenizer
    names = [str(i) for i in layer_idx]
    pooling = key["pooling"]
    tokens = pooling == "tokens"
    items, words, labels = list(items), list(words), list(labels)
    n_shards = -(-len(items) // shard_items)
    plan = {"n_items": len(items), "shard_items": shard_items, "n_shards": n_shards,
            "items_hash": _items_hash(words, labels)}
    path.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(path)
    if manifest is None:
        manifest = {"format": STORE_FORMAT, "key": key, "plan": plan, "dim": None, "shards": {},
                    "left_out": left_out or {}}
        _save_manifest(path, manifest)
    else:
        diff = _differences(manifest.get("key", {}), key)
        if diff:
            raise StoreError(f"store {str(path)!r} was written by another model or config: " + "; ".join(diff[:6])
                             + " (store vs this run); accepted: the same model and extraction settings to resume, "
                             "or a new store path")
        diff = _differences(manifest.get("plan", {}), plan)
        if diff:
            raise StoreError(f"store {str(path)!r} holds other items: " + "; ".join(diff) + " (store vs this run); "
                             "accepted: the same words and shard size to resume, or a new store path")
    side, pad = padding_for(model), padding_token_id(tokenizer)
    computed = 0
    bar = progress(range(n_shards), desc="store") if show_progress else range(n_shards)
    for i in bar:
        file = path / _shard_name(i)
        entry = manifest["shards"].get(str(i))
        if file.is_file():
            try:
                size = check_shard(file)
                if entry is None or int(entry["bytes"]) == size:
                    if entry is None:  # renamed before the manifest was updated: whole, so adopted
                        meta = shard_metadata(file)
                        manifest["shards"][str(i)] = {"rows": int(meta["rows"]), "bytes": size}
                        manifest["dim"] = manifest["dim"] or int(meta["dim"])
                        _save_manifest(path, manifest)
                    continue
                log.warning("store shard %s has %d bytes, the manifest says %s: rewriting it", file, size,
                            entry["bytes"])
            except ShardError as err:
                log.warning("%s: rewriting it", err)
        lo, hi = i * shard_items, min((i + 1) * shard_items, len(items))
        vectors = pool_vectors(model, items[lo:hi], "hidden", list(layer_idx), pooling, batch_size, side,
                               pad, show_progress=False)
        arrays = {f"layer.{n}": vectors[n] for n in names}
        if tokens:
            arrays["item"] = np.repeat(np.arange(lo, hi, dtype=np.int64), [len(it.positions) for it in items[lo:hi]])
            arrays["position"] = np.array([p for it in items[lo:hi] for p in it.positions], dtype=np.int64)
        else:
            arrays["item"] = np.arange(lo, hi, dtype=np.int64)
            arrays["position"] = np.full(hi - lo, -1, dtype=np.int64)
        n_rows = len(arrays["item"])
        arrays["first_item"] = np.array([lo], dtype=np.int64)
        dim = int(vectors[names[0]].shape[1])
        meta = {"words": json.dumps(words[lo:hi]), "labels": json.dumps(labels[lo:hi]), "rows": str(n_rows),
                "dim": str(dim), "shard": str(i)}
        try:
            size = write_shard(file, arrays, meta)
            manifest["shards"][str(i)] = {"rows": n_rows, "bytes": size}
            manifest["dim"] = dim
            _save_manifest(path, manifest)
        except OSError as err:
            manifest["shards"].pop(str(i), None)
            full = " (disk full)" if err.errno == errno.ENOSPC else ""
            raise StoreError(f"store {str(path)!r}: writing shard {i} failed{full}: {err}; the "
                             f"{len(manifest['shards'])} shard(s) already written and the manifest are intact; "
                             "accepted: free space and rerun the same write to resume") from None
        computed += 1
    log.info("store %s: %d shard(s) computed, %d already there", path, computed, n_shards - computed)
    return ActivationStore.open(path)


def store_geometry(store: ActivationStore, layer: str, *, center: bool = True, min_words: int = 2,
                   n_permutations: int = 0, seed: int = 0) -> tuple[StreamingGeometry, list[str]]:
    """(streamed statistics of ``layer``, concept names): two passes over the shards, one shard in memory at a
    time; rows of concepts with fewer than ``min_words`` items or an empty label are left out (as in memory).
    With ``n_permutations`` the label-permutation null of the cosine statistics is streamed in the second pass
    (the relabellings: :func:`permuted_codes` of :func:`store_codes` with ``seed``)."""
    labels = store.labels()
    names_all, counts = np.unique(np.asarray(labels, dtype=str), return_counts=True)
    small = {str(n) for n, c in zip(names_all, counts, strict=True) if c < min_words or n == ""}
    names = [n for n in dict.fromkeys(labels) if n not in small]
    index = {n: i for i, n in enumerate(names)}
    if len(names) < 2:
        raise StoreError(f"store {str(store.path)!r}: fewer than 2 concepts with >= {min_words} items; accepted: a "
                         "store of labelled words")

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for rows, item, _, shard_labels in store.chunks(layer):
            codes = np.array([index.get(shard_labels[j], -1) for j in item], dtype=np.int64)
            keep = codes >= 0
            yield np.asarray(rows)[keep], codes[keep]

    perms = permuted_codes(store_codes(store, names), n_permutations, seed) if n_permutations else None
    return streaming_geometry(chunks, len(names), store.dim, center=center, permutations=perms), names


def store_codes(store: ActivationStore, names: Sequence[str]) -> np.ndarray:
    """The concept code (position in ``names``) of every kept row, in shard order; rows of other labels are left
    out, as :func:`store_geometry` leaves them out. Reads the shards' item indices only, never their rows."""
    index = {n: i for i, n in enumerate(names)}
    out = []
    for i in range(store.n_shards):
        arrays = store.shard(i)
        _, labels = store.items(i)
        codes = np.array([index.get(labels[j], -1) for j in np.asarray(arrays["item"]) - int(arrays["first_item"][0])],
                         dtype=np.int64)
        out.append(codes[codes >= 0])
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
