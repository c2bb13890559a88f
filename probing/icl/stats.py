"""Accuracy with a bootstrap 95% interval, resampling episodes (queries of one episode share demonstrations)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class AccuracyCI:
    """Accuracy, its bootstrap interval and the number of prompts."""

    mean: float
    ci_low: float
    ci_high: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        """{mean, ci_low, ci_high, n}."""
        return asdict(self)


def bootstrap_accuracy(correct: Sequence[bool] | np.ndarray, clusters: Sequence[int] | np.ndarray | None = None, *,
                       n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> AccuracyCI:
    """Mean of ``correct`` with a percentile bootstrap interval over ``clusters`` (default: each prompt).

    Resampling whole episodes keeps the interval honest when several queries share one set of demonstrations.
    """
    correct = np.asarray(correct, dtype=float)
    if correct.size == 0:
        return AccuracyCI(float("nan"), float("nan"), float("nan"), 0)
    clusters = np.arange(correct.size) if clusters is None else np.asarray(clusters)
    ids, inverse = np.unique(clusters, return_inverse=True)
    sums = np.bincount(inverse, weights=correct, minlength=len(ids))
    counts = np.bincount(inverse, minlength=len(ids)).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(ids), size=(n_boot, len(ids)))
    boot = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    alpha = (1.0 - level) / 2
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    return AccuracyCI(float(correct.mean()), float(low), float(high), int(correct.size))
