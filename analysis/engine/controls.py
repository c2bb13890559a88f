"""Controls a geometry number must beat: baselines, a tokenization-matched null, centring, pair tests, a probe
that can fail.

Pure functions of arrays (rows = words, ``codes`` = integer concept per row).

- **Baseline difference** (:func:`paired_difference`): trained minus baseline of a statistic averaged over units
  (concepts, or concept pairs), with a cluster bootstrap over concepts: one resample of concepts is applied to
  both spaces, so the interval is for the difference (mean is linear: the mean of the unit differences).
- **Matched null** (:func:`permute_within`): concept labels permuted only among words of one stratum (same
  number of tokens, and the same frequency bin when ranks are given). Each concept keeps its count of 1-, 2-,
  3-token words, so a statistic that only reflects tokenization sits inside this null.
- **Centring identity** (:func:`centring_identity`): with unit rows ``u_i`` of centred vectors,
  ``|sum_i u_i|^2 = n + sum_c n_c (n_c - 1) w_c + sum_{c != c'} n_c n_c' x_cc'`` exactly (w_c: within-concept
  mean cosine of concept c, x_cc': mean cosine between words of c and c'). Centring makes ``sum_i x_i = 0``; if
  the rows had equal norms, ``sum_i u_i = 0`` too, and the pooled cross-concept cosine is forced to
  ``-(n + sum_c n_c (n_c - 1) w_c) / sum_{c != c'} n_c n_c'``: the expectation a centred cross cosine must be
  read against (a value near it says nothing about orthogonality).
- **Pair test** (:func:`direction_pair_test`): each concept pair's direction |cos| against its own permutation
  null (labels shuffled, sizes kept), p-values corrected by Benjamini-Hochberg (false discovery rate).
- **Held-out-concept probe** (:func:`heldout_concept_probe`): a logistic regression on the element-wise product
  of two words' unit vectors predicts "same concept"; it is trained on pairs of words of some concepts and
  tested on pairs of words of the other concepts (2 folds over concepts), balanced classes, so its chance is the
  test set's majority share (computed) and AUC 0.5. Where held-out concepts are not separable it reads chance.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from mcicl.analysis.engine.nulls import bootstrap_units, unit_mean


# ------------------------------------------------------------------------------------ baseline difference
@dataclass
class Difference:
    """Trained minus baseline of one statistic: both values, the difference and its concept-bootstrap 95% CI."""

    trained: float
    baseline_value: float
    difference: float
    ci_low: float
    ci_high: float
    baseline_ci_low: float
    baseline_ci_high: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (nan -> None)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def paired_difference(trained_units: np.ndarray, baseline_units: np.ndarray, n_bootstrap: int,
                      rng: np.random.Generator) -> Difference:
    """Trained minus baseline over the same units (per concept, or per concept pair: a (k, k) matrix), with a
    percentile cluster bootstrap over concepts (the same resample for both)."""
    a, b = np.asarray(trained_units, dtype=float), np.asarray(baseline_units, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"trained units have shape {a.shape} but baseline units {b.shape}; the same concepts "
                         "are needed in both spaces")
    state = rng.bit_generator.state
    lo, hi = bootstrap_units(a - b, n_bootstrap, rng)
    rng.bit_generator.state = state  # the baseline's own interval uses the same concept resamples
    blo, bhi = bootstrap_units(b, n_bootstrap, rng)
    n = a.shape[0] if a.ndim == 1 else a.shape[0] * (a.shape[0] - 1) // 2
    return Difference(unit_mean(a), unit_mean(b), unit_mean(a - b), lo, hi, blo, bhi, int(n))


# ------------------------------------------------------------------------------------------ matched null
def strata_codes(n_tokens: np.ndarray, frequency_rank: np.ndarray | None = None, bins: int = 4) -> np.ndarray:
    """An integer stratum per word: its token count, crossed with a frequency-rank quantile bin when ranks are
    given (rank nan = not in the frequency list: a bin of its own)."""
    tokens = np.asarray(n_tokens, dtype=np.int64)
    if frequency_rank is None:
        return tokens
    r = np.asarray(frequency_rank, dtype=float)
    known = np.isfinite(r)
    fbin = np.full(len(r), bins, dtype=np.int64)
    if known.any():
        edges = np.quantile(r[known], np.linspace(0, 1, bins + 1)[1:-1])
        fbin[known] = np.searchsorted(edges, r[known], side="right")
    return tokens * (bins + 1) + fbin


def permute_within(codes: np.ndarray, strata: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Labels permuted among the rows of each stratum: every concept keeps its count of words per stratum."""
    codes, strata = np.asarray(codes), np.asarray(strata)
    if codes.shape != strata.shape:
        raise ValueError(f"strata has shape {strata.shape}; expected {codes.shape}, one per row")
    out = codes.copy()
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        out[idx] = codes[rng.permutation(idx)]
    return out


# --------------------------------------------------------------------------------------- centring identity
def centring_identity(X: np.ndarray, codes: np.ndarray) -> dict[str, float]:
    """The pooled (word-pair weighted) cross-concept cosine of rows ``X``, its centring expectation
    ``-(n + sum_c n_c(n_c-1) w_c) / sum_{c!=c'} n_c n_c'`` and the residual term ``|sum u|^2 / sum n_c n_c'``
    that separates them (0 when the unit rows sum to zero)."""
    X = np.asarray(X, dtype=float)
    codes = np.asarray(codes)
    U = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-300)
    k = int(codes.max()) + 1
    counts = np.bincount(codes, minlength=k).astype(float)
    S = np.zeros((k, X.shape[1]))
    np.add.at(S, codes, U)
    self_sq = np.bincount(codes, weights=np.einsum("nd,nd->n", U, U), minlength=k)
    within_sums = np.einsum("kd,kd->k", S, S) - self_sq          # sum over ordered pairs i != j inside c
    n = float(np.sum(self_sq))                                    # sum of |u_i|^2 (= n for non-zero rows)
    total = S.sum(axis=0)
    total_sq = float(total @ total)
    cross_pairs = float(counts.sum() ** 2 - np.sum(counts ** 2))  # sum_{c != c'} n_c n_c'
    cross_sum = total_sq - n - float(within_sums.sum())
    within = within_sums / np.maximum(counts * (counts - 1), 1)
    return {"pooled_cross": cross_sum / cross_pairs,
            "expected": -(n + float(np.sum(counts * (counts - 1) * within))) / cross_pairs,
            "residual": total_sq / cross_pairs, "n": n, "cross_pairs": cross_pairs}


# -------------------------------------------------------------------------------------------- pair test
def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (step-up, monotone, capped at 1), in the input order."""
    p = np.asarray(p, dtype=float)
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p)
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out


@dataclass
class PairTest:
    """Each concept pair's direction |cos| against its permutation null, BH-corrected."""

    names: list[str]
    observed: np.ndarray           # (k, k) |cos|
    p_values: np.ndarray           # (k, k), one-sided (greater), nan on the diagonal
    adjusted: np.ndarray           # (k, k) BH-adjusted
    n_permutations: int
    q: float = 0.05
    null_mean: float = math.nan    # mean over pairs and permutations of the null |cos|
    extras: dict[str, Any] = field(default_factory=dict)

    def pairs(self) -> list[dict[str, Any]]:
        """One row per unordered pair: names, |cos|, p, BH-adjusted p, significant."""
        k = len(self.names)
        i, j = np.triu_indices(k, 1)
        return [{"concept_a": self.names[a], "concept_b": self.names[b], "abs_cos": float(self.observed[a, b]),
                 "p_value": float(self.p_values[a, b]), "p_bh": float(self.adjusted[a, b]),
                 "significant": bool(self.adjusted[a, b] <= self.q)} for a, b in zip(i, j, strict=True)]

    def summary(self) -> dict[str, Any]:
        """How many pairs exceed their null after correction, and the mean |cos| without them."""
        rows = self.pairs()
        sig = [r for r in rows if r["significant"]]
        rest = [r["abs_cos"] for r in rows if not r["significant"]]
        raw = sum(r["p_value"] <= self.q for r in rows)
        return {"n_pairs": len(rows), "correction": f"Benjamini-Hochberg, q = {self.q}",
                "n_significant": len(sig), "n_raw_p_below_q": int(raw), "expected_raw_under_null": self.q * len(rows),
                "mean_abs_cos": float(np.mean([r["abs_cos"] for r in rows])) if rows else math.nan,
                "mean_abs_cos_without_significant": float(np.mean(rest)) if rest else math.nan,
                "null_mean": self.null_mean, "n_permutations": self.n_permutations,
                "significant_pairs": sorted(sig, key=lambda r: -r["abs_cos"])}


def direction_pair_test(directions_of: Any, codes: np.ndarray, names: list[str], n_permutations: int,
                        rng: np.random.Generator, q: float = 0.05) -> PairTest:
    """Per-pair permutation test of concept-direction |cos|: ``directions_of(codes) -> (k, k) |cos|`` is
    recomputed for ``n_permutations`` label permutations; p = (1 + #null >= observed) / (1 + B), then BH."""
    observed = directions_of(codes)
    k = observed.shape[0]
    exceed = np.zeros((k, k))
    total = 0.0
    off = ~np.eye(k, dtype=bool)
    for _ in range(n_permutations):
        null = directions_of(rng.permutation(codes))
        exceed += null >= observed
        total += float(null[off].mean())
    p = (1 + exceed) / (1 + n_permutations)
    i, j = np.triu_indices(k, 1)
    adj = np.full((k, k), np.nan)
    adj_vals = benjamini_hochberg(p[i, j])
    adj[i, j] = adj[j, i] = adj_vals
    p = np.where(off, p, np.nan)
    return PairTest(list(names), observed, p, adj, n_permutations, q,
                    null_mean=total / max(n_permutations, 1))


# ------------------------------------------------------------------------------------ held-out-concept probe
@dataclass
class HeldoutProbe:
    """A same-concept pair probe tested on concepts it was not trained on."""

    accuracy: float
    chance: float
    auc: float
    cosine_auc: float      # the untrained rule: the pair's cosine as the score, on the same test pairs
    n_test_pairs: int
    n_folds: int

    def to_dict(self) -> dict[str, Any]:
        """A plain dict."""
        return asdict(self)


def _pairs(rows: np.ndarray, codes: np.ndarray, rng: np.random.Generator, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """(pairs (P, 2), same (P,)): same-concept pairs among ``rows`` (at most ``limit``) and as many
    different-concept pairs drawn at random."""
    c = codes[rows]
    i, j = np.triu_indices(len(rows), 1)
    same = c[i] == c[j]
    pos = np.flatnonzero(same)
    neg = np.flatnonzero(~same)
    n = min(len(pos), len(neg), limit)
    pos = rng.choice(pos, size=n, replace=False)
    neg = rng.choice(neg, size=n, replace=False)
    pick = np.concatenate([pos, neg])
    return np.stack([rows[i[pick]], rows[j[pick]]], axis=1), np.concatenate([np.ones(n), np.zeros(n)])


def heldout_concept_probe(X: np.ndarray, codes: np.ndarray, *, n_folds: int = 2, seed: int = 0, C: float = 1.0,
                          max_pairs: int = 4000) -> HeldoutProbe:
    """Same-concept probe (logistic regression on u_i * u_j) trained on some concepts' words, tested on the
    held-out concepts' words; accuracy, its computed chance (majority share of the test pairs), AUC, and the
    AUC of the plain cosine on the same pairs, pooled over ``n_folds`` folds of concepts."""
    X = np.asarray(X, dtype=float)
    codes = np.asarray(codes)
    k = int(codes.max()) + 1
    if k < 2 * n_folds:
        raise ValueError(f"{k} concepts; the held-out-concept probe needs at least {2 * n_folds} "
                         f"(two per fold, {n_folds} folds)")
    rng = np.random.default_rng(seed)
    U = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-300)
    fold_of = rng.permutation(np.arange(k) % n_folds)
    scores, cos_scores, truth, correct = [], [], [], []
    for f in range(n_folds):
        test_rows = np.flatnonzero(fold_of[codes] == f)
        train_rows = np.flatnonzero(fold_of[codes] != f)
        tr, ytr = _pairs(train_rows, codes, rng, max_pairs)
        te, yte = _pairs(test_rows, codes, rng, max_pairs)
        if len(ytr) == 0 or len(yte) == 0:
            continue
        clf = LogisticRegression(C=C, max_iter=500, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(U[tr[:, 0]] * U[tr[:, 1]], ytr)
        feats = U[te[:, 0]] * U[te[:, 1]]
        scores.append(clf.decision_function(feats))
        cos_scores.append(feats.sum(axis=1))
        truth.append(yte)
        correct.append(clf.predict(feats) == yte)
    if not truth:
        raise ValueError("no fold has both same-concept and different-concept pairs to train and test on")
    y, s, cs, ok = (np.concatenate(v) for v in (truth, scores, cos_scores, correct))
    chance = float(max(y.mean(), 1 - y.mean()))
    return HeldoutProbe(float(ok.mean()), chance, float(roc_auc_score(y, s)), float(roc_auc_score(y, cs)),
                        int(len(y)), n_folds)
