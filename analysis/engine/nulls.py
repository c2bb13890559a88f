"""Nulls for geometry statistics: permutation and shuffled-embedding nulls, bootstrap CIs, p-values, baselines.

Every headline statistic of :mod:`analysis.geometry` is reported as a :class:`Stat`: the observed value, its
permutation null (labels shuffled: the same vectors, concepts assigned at random with the same sizes), a
shuffled-embedding null (each vector's coordinates permuted independently: norms and value distributions
kept, shared directions destroyed), the analytic isotropic baseline where one exists, a bootstrap 95%
interval over the statistic's units (concepts, concept pairs or hierarchy edges), a permutation p-value and
an effect size ``(value - null mean) / null sd``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

Alternative = Literal["greater", "less", "two-sided"]
ALTERNATIVES = ("greater", "less", "two-sided")


@dataclass
class Stat:
    """One statistic with its nulls, bootstrap interval, p-value and effect size."""

    value: float
    null_mean: float
    null_low: float
    null_high: float
    p_value: float
    ci_low: float
    ci_high: float
    effect_size: float
    n: int
    alternative: str = "greater"
    n_permutations: int = 0
    shuffled_mean: float = math.nan
    shuffled_low: float = math.nan
    shuffled_high: float = math.nan
    isotropic: float = math.nan

    @property
    def null(self) -> float:
        """The permutation-null mean (the ``null`` of summary.json)."""
        return self.null_mean

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; ``null`` is the permutation-null mean."""
        out = {"value": self.value, "null": self.null_mean}
        out.update({k: v for k, v in asdict(self).items() if k not in ("value",)})
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


def isotropic_abs_cos(d: int) -> float:
    """Expected |cos| of two independent isotropic vectors in ``d`` dimensions, ~sqrt(2/(pi d)).

    Exact value: Gamma(d/2) / (sqrt(pi) Gamma((d+1)/2)); it tends to sqrt(2/(pi d)) for large d.
    """
    if d < 1:
        raise ValueError(f"d must be >= 1, got {d}")
    if d == 1:
        return 1.0
    return math.exp(math.lgamma(d / 2) - math.lgamma((d + 1) / 2)) / math.sqrt(math.pi)


def isotropic_abs_cos_asymptotic(d: int) -> float:
    """The large-d isotropic baseline sqrt(2/(pi d)) quoted in the issue."""
    return math.sqrt(2.0 / (math.pi * d))


def permutation_p_value(value: float, null: np.ndarray, alternative: Alternative = "greater") -> float:
    """Permutation p-value with the +1 correction: (1 + #as-extreme) / (1 + n)."""
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative={alternative!r}; accepted: {', '.join(ALTERNATIVES)}")
    null = np.asarray(null, dtype=float)
    null = null[np.isfinite(null)]
    if not np.isfinite(value) or null.size == 0:
        return math.nan
    if alternative == "greater":
        extreme = np.sum(null >= value)
    elif alternative == "less":
        extreme = np.sum(null <= value)
    else:
        centre = null.mean()
        extreme = np.sum(np.abs(null - centre) >= abs(value - centre))
    return float((1 + extreme) / (1 + null.size))


def effect_size(value: float, null: np.ndarray) -> float:
    """(value - null mean) / null standard deviation; nan when the null has no spread."""
    null = np.asarray(null, dtype=float)
    null = null[np.isfinite(null)]
    if null.size < 2:
        return math.nan
    sd = null.std(ddof=1)
    return float((value - null.mean()) / sd) if sd > 0 else math.nan


def bootstrap_units(units: np.ndarray, n_bootstrap: int, rng: np.random.Generator,
                    level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of a statistic averaged over units.

    ``units`` is either a vector (one value per concept or edge: the statistic is their mean) or a square
    matrix (one value per concept pair: the statistic is the mean over pairs of distinct concepts).
    Concepts are the resampled units in both cases, so the interval reflects which concepts were chosen.
    """
    units = np.asarray(units, dtype=float)
    if n_bootstrap < 1 or units.size == 0:
        return math.nan, math.nan
    k = units.shape[0]
    alpha = (1 - level) / 2
    if units.ndim == 1:
        ok = units[np.isfinite(units)]
        if ok.size < 2:
            return math.nan, math.nan
        idx = rng.integers(0, ok.size, size=(n_bootstrap, ok.size))
        boots = ok[idx].mean(axis=1)
    else:
        if k < 3:
            return math.nan, math.nan
        boots = np.empty(n_bootstrap)
        chunk = max(1, int(2e6 // (k * k)))  # keep the (chunk, k, k) gather small for large k
        for start in range(0, n_bootstrap, chunk):
            idx = rng.integers(0, k, size=(min(chunk, n_bootstrap - start), k))
            sub = units[idx[:, :, None], idx[:, None, :]]
            mask = idx[:, :, None] != idx[:, None, :]  # a concept resampled twice is not paired with itself
            boots[start:start + len(idx)] = (sub * mask).sum(axis=(1, 2)) / np.maximum(mask.sum(axis=(1, 2)), 1)
    return float(np.quantile(boots, alpha)), float(np.quantile(boots, 1 - alpha))


def unit_mean(units: np.ndarray) -> float:
    """The statistic a unit array stands for: mean of a vector, or mean off-diagonal of a square matrix."""
    units = np.asarray(units, dtype=float)
    if units.ndim == 1:
        ok = units[np.isfinite(units)]
        return float(ok.mean()) if ok.size else math.nan
    k = units.shape[0]
    if k < 2:
        return math.nan
    return float(units[~np.eye(k, dtype=bool)].mean())


def _band(samples: np.ndarray) -> tuple[float, float]:
    if not samples.size:
        return math.nan, math.nan
    return float(np.quantile(samples, 0.025)), float(np.quantile(samples, 0.975))


def make_stat(value: float, units: np.ndarray, permutation_null: np.ndarray, *,
              shuffled_null: np.ndarray | None = None, alternative: Alternative = "greater",
              n_bootstrap: int = 1000, rng: np.random.Generator | None = None,
              isotropic: float = math.nan) -> Stat:
    """Assemble a :class:`Stat` from the observed value, its units and its null samples."""
    rng = rng if rng is not None else np.random.default_rng(0)
    null = np.asarray(permutation_null, dtype=float)
    null = null[np.isfinite(null)]
    ci_low, ci_high = bootstrap_units(units, n_bootstrap, rng)
    n_units = int(np.asarray(units).shape[0]) if np.asarray(units).ndim else 0
    if np.asarray(units).ndim == 2:
        n_units = n_units * (n_units - 1) // 2
    shuffled = np.asarray(shuffled_null if shuffled_null is not None else [], dtype=float)
    shuffled = shuffled[np.isfinite(shuffled)]
    null_low, null_high = _band(null)
    sh_low, sh_high = _band(shuffled)
    return Stat(
        value=float(value), null_mean=float(null.mean()) if null.size else math.nan, null_low=null_low,
        null_high=null_high, p_value=permutation_p_value(value, null, alternative), ci_low=ci_low,
        ci_high=ci_high, effect_size=effect_size(value, null), n=n_units, alternative=alternative,
        n_permutations=int(null.size), shuffled_mean=float(shuffled.mean()) if shuffled.size else math.nan,
        shuffled_low=sh_low, shuffled_high=sh_high, isotropic=float(isotropic),
    )


def shuffle_coordinates(vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each row's coordinates permuted independently: the shuffled-embedding null's vectors."""
    return rng.permuted(np.asarray(vectors), axis=1)


def permute_labels(codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Labels shuffled across rows (concept sizes kept): the permutation null's labelling."""
    return rng.permutation(codes)


def maxt_p(observed: np.ndarray, draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(raw, max-T corrected) one-sided permutation p-values of ``observed`` (any shape, e.g. heads (H,) or layers x
    heads (L, H)) against ``draws`` (B, *observed.shape): Westfall & Young's max-T over every cell, on statistics
    standardised by each cell's null mean and SD; the corrected p is never below the raw one."""
    b = draws.shape[0]
    raw = (1 + (draws >= observed[None] - 1e-12).sum(0)) / (b + 1)
    mean, sd = draws.mean(0), draws.std(0)
    sd = np.where(sd > 1e-12, sd, np.inf)  # a cell whose null never varies cannot exceed it
    t_obs = (observed - mean) / sd
    t_max = ((draws - mean[None]) / sd[None]).reshape(b, -1).max(1)
    corrected = (1 + (t_max.reshape((b,) + (1,) * observed.ndim) >= t_obs[None] - 1e-12).sum(0)) / (b + 1)
    return raw, np.maximum(corrected, raw)
