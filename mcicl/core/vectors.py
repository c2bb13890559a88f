"""Labelled vector sets: the one file format the geometry engine reads, from either world.

A ``.npz`` holding ``vectors`` (n, d) float32, ``words`` (n,) str, ``labels`` (n,) str (concept name of each
row; "" when unlabelled), optional ``signs`` (n,) int8 (synthetic semantic sign, 0 when not applicable)
and ``meta`` (a JSON string: model, space, layer, pooling, template, ...). ``mcicl synthetic train`` writes
``features.npz`` and ``mcicl probe extract`` writes ``vectors.npz`` in this format.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class LabelledVectors:
    """Vectors with a word and a concept label per row, plus free-form metadata."""

    vectors: np.ndarray
    words: np.ndarray
    labels: np.ndarray
    signs: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.vectors = np.asarray(self.vectors)
        self.words = np.asarray(self.words, dtype=str)
        self.labels = np.asarray(self.labels, dtype=str)
        n = len(self.vectors)
        if self.vectors.ndim != 2:
            raise ValueError(f"vectors must be 2-D (n, d); got shape {self.vectors.shape}")
        for name, arr in (("words", self.words), ("labels", self.labels), ("signs", self.signs)):
            if arr is not None and len(arr) != n:
                raise ValueError(f"{name} has {len(arr)} rows but vectors has {n}")

    def save(self, path: str | Path) -> Path:
        """Write the set to ``path`` (.npz)."""
        arrays = {"vectors": self.vectors.astype(np.float32), "words": self.words, "labels": self.labels,
                  "meta": np.array(json.dumps(self.meta, default=str))}
        if self.signs is not None:
            arrays["signs"] = np.asarray(self.signs, dtype=np.int8)
        np.savez_compressed(path, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> LabelledVectors:
        """Read a set written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"vector file not found: {path}")
        accepted = "accepted: a .npz written by mcicl (arrays vectors, words, labels)"
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = {"vectors", "words", "labels"} - set(z.files)
                if missing:
                    raise ValueError(f"{path} is not a labelled-vector file: missing {sorted(missing)}; {accepted}")
                return cls(z["vectors"], z["words"], z["labels"], z["signs"] if "signs" in z.files else None,
                           json.loads(str(z["meta"])) if "meta" in z.files else {})
        except (OSError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as err:
            raise ValueError(f"{path} is not a readable labelled-vector file ({type(err).__name__}); {accepted}") \
                from None
        except ValueError as err:
            if "labelled-vector" in str(err):
                raise
            raise ValueError(f"{path} is not a labelled-vector file (not an .npz of plain arrays); {accepted}") \
                from None


@dataclass
class Space:
    """One space to measure, from either world: concept words, and optionally polysemous words, monosemous
    control words and a whitening reference sample (rows of the same space)."""

    name: str
    concepts: LabelledVectors
    world: str = "real"  # "synthetic" or "real"
    polysemy: LabelledVectors | None = None
    controls: LabelledVectors | None = None
    reference: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
