"""ICL statistics: accuracy with a bootstrap 95% interval over episodes or a multi-way cluster bootstrap (episodes,
query words, query concepts), the episode-level sign-flip test of a paired difference, and the near-tie rule for
choosing a knob (beta) on held-out episodes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

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


def cluster_bootstrap(values: Sequence[float] | np.ndarray, factors: Sequence[Sequence[Any]], *, n_boot: int = 1000,
                      level: float = 0.95, seed: int = 0) -> AccuracyCI:
    """Mean of ``values`` with a percentile interval from a multi-way cluster (pigeonhole) bootstrap.

    Each factor (e.g. episode, query word, query concept) has its clusters resampled with replacement,
    independently of the other factors; an observation's weight in a resample is the product of its clusters'
    multiplicities, and the statistic is the weighted mean (Owen 2007; McCullagh 2000). With one factor this is the
    ordinary cluster bootstrap, with one factor of singleton clusters the ordinary bootstrap (the same draws give
    the same resamples as :func:`bootstrap_accuracy`). Crossing nested factors (words within concepts) counts the
    outer factor's variance twice: the interval is conservative, never too narrow.
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return AccuracyCI(float("nan"), float("nan"), float("nan"), 0)
    if not factors:
        raise ValueError("cluster_bootstrap needs at least one factor (e.g. the episode of each value)")
    rng = np.random.default_rng(seed)
    weights = np.ones((n_boot, x.size))
    for factor in factors:
        labels = np.asarray([str(f) for f in factor])
        if labels.size != x.size:
            raise ValueError(f"a factor has {labels.size} labels for {x.size} values")
        ids, inverse = np.unique(labels, return_inverse=True)
        draws = rng.integers(0, len(ids), size=(n_boot, len(ids)))
        counts = np.zeros((n_boot, len(ids)))
        np.add.at(counts, (np.repeat(np.arange(n_boot), len(ids)), draws.ravel()), 1.0)
        weights *= counts[:, inverse]
    total = weights.sum(1)
    boot = np.where(total > 0, (weights * x[None]).sum(1) / np.where(total > 0, total, 1.0), np.nan)
    alpha = (1.0 - level) / 2
    low, high = np.nanquantile(boot, [alpha, 1.0 - alpha])
    return AccuracyCI(float(x.mean()), float(low), float(high), int(x.size))


def sign_flip_p(differences: Sequence[float] | np.ndarray, units: Sequence[Any], *, permutations: int = 1000,
                seed: int = 0) -> float:
    """Two-sided permutation p of a mean paired difference, flipping signs per unit (the episode: its prompts share
    demonstrations, so they flip together); the smallest p is 1/(permutations+1)."""
    d = np.asarray(differences, dtype=float)
    labels = np.asarray([str(u) for u in units])
    ids, inverse = np.unique(labels, return_inverse=True)
    sums = np.bincount(inverse, weights=d, minlength=len(ids))
    observed = abs(sums.sum())
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(permutations, len(ids)))
    null = np.abs(signs @ sums)
    return float((1 + (null >= observed - 1e-12).sum()) / (permutations + 1))


def choose_near_median(knobs: Sequence[float], scores: Sequence[float], se: float) -> tuple[float, list[float]]:
    """(chosen knob, near-tied knobs): the knobs scoring within ``se`` of the best, and their median (the upper
    middle one of an even count), so neither a tie-break nor an extreme of the near-tied set decides."""
    best = max(scores)
    near = sorted(k for k, s in zip(knobs, scores, strict=True) if s >= best - se - 1e-12)
    return near[len(near) // 2], near
