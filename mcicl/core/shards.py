"""Shards of an activation store: safetensors files written atomically and read back memory-mapped (numpy only).

A shard is one safetensors file: an 8-byte little-endian header length, a JSON header (each tensor's dtype,
shape and byte range; ``__metadata__`` holds string metadata), then the raw bytes. Safetensors is chosen over
Arrow (Hugging Face ``datasets``) because a shard is a handful of dense 2-D arrays: the format holds them with no
extra dependency or cache folder, any safetensors reader opens them, and a tensor is a plain byte range, so
:func:`read_shard` maps it with ``np.memmap`` (nothing is read until a row is used) and :func:`check_shard` finds a
truncated file from the header alone (file size != header length + the last tensor's end).

Writes go to a temporary file in the same folder, are flushed to disk (fsync), then renamed over the final name
(:func:`write_atomic`): a full disk or a killed process leaves the temporary file, never a half shard under the
final name, and nothing already written is touched.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save as safetensors_bytes

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
           "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


class ShardError(OSError):
    """A shard that cannot be read as written (missing, truncated, not safetensors); the message names it."""


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename; on failure the temporary is removed
    and ``path`` is as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_shard(path: str | Path, arrays: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> int:
    """Write ``arrays`` (name -> contiguous array) as one safetensors shard at ``path``; returns its bytes."""
    data = safetensors_bytes({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata=metadata)
    write_atomic(path, data)
    return len(data)


def _header(path: Path) -> tuple[dict[str, Any], int]:
    """(JSON header, offset of the data) of a safetensors file; ShardError when it is not one or is cut short."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ShardError(f"shard {path} is truncated ({len(head)} bytes, no safetensors header)")
            (n,) = struct.unpack("<Q", head)
            if n > 100_000_000:
                raise ShardError(f"shard {path} is not a safetensors file (header length {n:,})")
            raw = fh.read(n)
    except FileNotFoundError:
        raise ShardError(f"shard {path} is missing") from None
    if len(raw) < n:
        raise ShardError(f"shard {path} is truncated (its header is cut short)")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ShardError(f"shard {path} is not a safetensors file (its header is not JSON)") from None
    return header, 8 + n


def check_shard(path: str | Path) -> int:
    """The byte size of a whole shard at ``path``; ShardError naming it when it is missing, truncated or bad."""
    path = Path(path)
    header, start = _header(path)
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    size = path.stat().st_size
    if size != start + end:
        raise ShardError(f"shard {path} is truncated: {size:,} bytes on disk, its header says {start + end:,}")
    return size


def shard_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a shard (``__metadata__``), read from its header only."""
    return dict(_header(Path(path))[0].get("__metadata__") or {})


def read_shard(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a shard as a read-only ``np.memmap`` (checked whole first)."""
    path = Path(path)
    check_shard(path)
    header, start = _header(path)
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        if t["dtype"] not in _DTYPES:
            raise ShardError(f"shard {path}: tensor {name} has dtype {t['dtype']}; accepted: "
                             + ", ".join(_DTYPES))
        lo, hi = t["data_offsets"]
        shape = tuple(t["shape"])
        if hi == lo:
            out[name] = np.empty(shape, dtype=_DTYPES[t["dtype"]])
        else:
            out[name] = np.memmap(path, dtype=_DTYPES[t["dtype"]], mode="r", offset=start + lo, shape=shape)
    return out
