"""On-disk cache of pooled word vectors, one ``.npy`` per (chunk of words, layer), written atomically.

The cache folder is keyed by everything that changes the numbers: the model and its weights' identity, the
tokenizer, template, space, pooling and dtype. Inside it, a chunk is keyed by the exact words it holds, so a
second run with the same words reads every chunk back, and an interrupted run recomputes only the chunks it
had not finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger("mcicl")
CACHE_FORMAT = 1
WEIGHT_SAMPLE = 64  # values hashed per tensor: cheap even for billions of weights
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_fingerprint(model: Any, location: str | None = None, revision: str | None = None) -> dict[str, Any]:
    """What identifies a model's weights: class, location, Hub revision, weight files (name, size, mtime), a weight
    hash.

    The weight hash covers every state_dict tensor (name, shape, dtype and a strided sample of at most
    ``WEIGHT_SAMPLE`` values), so weights changed in memory (fine-tuned, re-initialised, scaled) change the
    key, in any layer; an edit of single entries between the sampled ones would not. The file list catches
    re-saved checkpoints; a Hub model adds the revision asked for (``--revision``) and the commit it resolved to,
    so two revisions of one repository never share cached vectors.
    """
    config = getattr(model, "config", None)
    out: dict[str, Any] = {
        "class": type(model).__name__,
        "location": str(location or getattr(config, "_name_or_path", "")),
        "commit": getattr(config, "_commit_hash", None),
        **({"revision": revision} if revision is not None else {}),  # absent without one: older keys still hold
        "dtype": str(getattr(model, "dtype", "")),
    }
    if location and Path(location).is_dir():
        out["files"] = sorted(
            (p.name, p.stat().st_size, p.stat().st_mtime_ns)
            for p in Path(location).iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    out["weight_hash"] = weight_hash(model)
    return out


def weight_hash(model: Any) -> str:
    """A short hash of every state_dict tensor's name, shape, dtype and a strided sample of its values."""

    h = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            h.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
            if tensor.device.type == "meta" or tensor.numel() == 0:  # offloaded: no values to read
                continue
            flat = tensor.detach().reshape(-1)
            step = max(1, flat.numel() // WEIGHT_SAMPLE)
            h.update(flat[::step][:WEIGHT_SAMPLE].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class ExtractionCache:
    """Pooled vectors for chunks of words under ``root/<settings key>/<chunk key>/<layer>.npy``."""

    def __init__(self, root: str | Path, settings: dict[str, Any]):
        self.settings = {"cache_format": CACHE_FORMAT, **settings}
        text = json.dumps(self.settings, sort_keys=True, default=str)
        self.folder = Path(root).expanduser() / _digest(text.encode())[:20]
        self.folder.mkdir(parents=True, exist_ok=True)
        settings_file = self.folder / "settings.json"
        if not settings_file.is_file():  # for people inspecting the cache; never read back for the key
            _atomic_write_bytes(settings_file, (json.dumps(self.settings, indent=2, default=str) + "\n").encode())

    @staticmethod
    def chunk_key(words: list[str]) -> str:
        """The key of a chunk: a hash of its words, in order."""
        return _digest("\x00".join(words).encode("utf-8", "surrogatepass"))[:24]

    def load(self, words: list[str], layers: list[str]) -> dict[str, np.ndarray] | None:
        """The cached (len(words), d) array of every layer, or None when any is missing or bad.

        A chunk is used only if it is whole and right: readable files, one row per word, the cache's vector
        width, finite values, and (where the chunk records them) the same words. Anything else is recomputed,
        with a warning naming the file, so a damaged cache never changes the numbers.
        """
        chunk = self.folder / self.chunk_key(words)
        recorded = chunk / "words.json"
        if recorded.is_file():
            try:
                same = json.loads(recorded.read_text(encoding="utf-8")) == list(words)
            except (OSError, ValueError):
                same = False
            if not same:
                return self._bad(recorded, "holds other words than its key says")
        width = self._width()
        out = {}
        for layer in layers:
            path = chunk / f"{layer}.npy"
            if not path.is_file():
                return None
            try:
                arr = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as err:  # a truncated file from a killed run: recompute it
                return self._bad(path, f"is unreadable ({err})")
            if arr.ndim != 2 or len(arr) != len(words):
                return self._bad(path, f"has shape {arr.shape}, not ({len(words)}, d)")
            if width is not None and arr.shape[1] != width:
                return self._bad(path, f"has vectors of width {arr.shape[1]}, not the cache's {width}")
            if not np.isfinite(arr).all():
                return self._bad(path, "holds NaN or infinite values")
            out[layer] = arr
        return out

    @staticmethod
    def _bad(path: Path, problem: str) -> None:
        log.warning("cache file %s %s; recomputing that chunk", path, problem)
        return None

    def _width(self) -> int | None:
        """The vector width every chunk of this cache has (recorded by the first save), or None."""
        try:
            return json.loads((self.folder / "width.json").read_text())["width"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, words: list[str], arrays: dict[str, np.ndarray]) -> None:
        """Store one chunk's arrays (one file per layer, each written atomically) and the words it holds."""
        chunk = self.folder / self.chunk_key(words)
        chunk.mkdir(parents=True, exist_ok=True)
        for layer, arr in arrays.items():
            tmp = chunk / f".{layer}.{os.getpid()}.tmp.npy"
            np.save(tmp, np.ascontiguousarray(arr, dtype=np.float32))
            os.replace(tmp, chunk / f"{layer}.npy")
            if arr.ndim == 2 and self._width() is None:
                _atomic_write_bytes(self.folder / "width.json", json.dumps({"width": int(arr.shape[1])}).encode())
        _atomic_write_bytes(chunk / "words.json", json.dumps(list(words)).encode("utf-8", "surrogatepass"))


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
