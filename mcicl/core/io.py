"""Strict JSON and JSON-lines files, and the library versions a run records."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from collections.abc import Mapping
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any

from mcicl import __version__
from mcicl.core.configuration import to_dict


def _numpy() -> Any:
    # numpy objects exist only once numpy is imported: so the command line (which has none) never imports it
    return sys.modules.get("numpy")


def json_default(obj: Any) -> Any:
    np = _numpy()
    if np is not None and isinstance(obj, np.generic):
        return obj.item()
    if np is not None and isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if is_dataclass(obj):
        return to_dict(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None, so the file is strict JSON (no bare NaN)."""
    np = _numpy()
    if isinstance(obj, float) or (np is not None and isinstance(obj, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    if np is not None and isinstance(obj, np.ndarray):
        return strict_json(obj.tolist())
    if is_dataclass(obj) and not isinstance(obj, type):
        return strict_json(to_dict(obj))
    return obj


def write_json(path: str | Path, data: Any) -> None:
    """Write strict JSON atomically; NaN and infinities become null (not measured), never a bare NaN.

    NumPy scalars/arrays, Paths and dataclasses are allowed.
    """
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(strict_json(data), indent=2, default=json_default, allow_nan=False) + "\n")
    os.replace(tmp, path)


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSON-lines file into a list of dicts."""
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def versions() -> dict[str, str]:
    """Versions of Python, mcicl and the main libraries, for run records and reports."""
    out = {"python": platform.python_version(), "mcicl": __version__, "platform": platform.platform()}
    for name in ("torch", "transformers", "numpy", "scipy", "sklearn", "umap"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - a missing optional library is just not listed
            continue
    return out


def cell_float(value: Any) -> float:
    """A table cell (CSV text, JSON value) as a float; NaN when it is missing or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
