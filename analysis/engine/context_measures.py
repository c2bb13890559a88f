"""Contextual geometry: does a word's vector inside a sentence move toward the concept of the sense it uses?

Pure functions over arrays, one row per context. Each row has candidate concepts (a polysemous word's
senses; for a monosemous control, every concept) and the position ``label`` of its tagged sense among them.
With ``s_j(v) = cos(v, c_j)`` the cosine of a vector with candidate centroid ``c_j``:

- **sense accuracy**: ``argmax_j s_j(x) == label`` for the contextual vector ``x``, averaged per word, then over
  words (each word weighs the same). The **out-of-context baseline** is the same rule applied to the word's
  vector outside any sentence ``b``: one prediction for all of a word's contexts, so at most the share of
  its most frequent sense (1/2 for a word with two equally represented senses).
- **shift**: ``m(x) - m(b)`` with margin ``m(v) = s_label(v) - mean_{j != label} s_j(v)``: how much nearer to
  the tagged sense (relative to the word's other senses) the context moves the word.
- **pair AUC** (WiC-style): over pairs of one word's contexts, the probability that a same-sense pair has a
  higher cosine than a different-sense pair (ties 1/2), averaged over words.

Null: senses shuffled within each word (``groups``: the rows whose labels may trade places; for controls,
all control rows form one group): the vectors and predictions stay, the tags are permuted. Intervals:
percentile bootstrap over words. Best layer: the maximum over layers, with the same maximum taken in every
null draw and every bootstrap resample (so the choice of layer is paid for, not assumed).

**Drift control** (:func:`drift_controlled`): context moves every word, polysemous or not. The polysemous
words' per-word in-context gain (sense accuracy minus out-of-context accuracy, or the shift) is reported minus
the monosemous controls' gain toward their own concept, with a two-sample bootstrap over words.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mcicl.analysis.engine.nulls import Stat, make_stat


def cosine_scores(vectors: np.ndarray, centroids: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """(n, m) cosine of each row of ``vectors`` (n, d) with its candidate centroids (rows of ``centroids``,
    indexed by ``candidates`` (n, m), -1 = no candidate: nan)."""
    v = np.asarray(vectors, dtype=np.float64)
    c = np.asarray(centroids, dtype=np.float64)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    c = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
    cand = np.asarray(candidates)
    out = np.einsum("nd,nmd->nm", v, c[np.maximum(cand, 0)])
    out[cand < 0] = np.nan
    return out


def predictions(scores: np.ndarray) -> np.ndarray:
    """(n,) position of the highest-scoring candidate of each row."""
    return np.argmax(np.where(np.isnan(scores), -np.inf, scores), axis=1)


def margins(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``s_label - mean of the other candidates' scores``, for labels of shape (n,) or (B, n) -> same shape."""
    labels = np.asarray(labels)
    valid = ~np.isnan(scores)
    total = np.where(valid, scores, 0.0).sum(axis=1)
    others = valid.sum(axis=1) - 1
    rows = np.arange(scores.shape[0])
    own = scores[rows, labels] if labels.ndim == 1 else scores[rows[None, :], labels]
    return own - (total - own) / np.maximum(others, 1)


def group_permutations(groups: np.ndarray, n_permutations: int, rng: np.random.Generator) -> np.ndarray:
    """(n_permutations, n) row indices, each row a permutation of 0..n-1 within ``groups`` (labels of rows)."""
    groups = np.asarray(groups)
    out = np.tile(np.arange(groups.size), (n_permutations, 1))
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        out[:, idx] = rng.permuted(np.tile(idx, (n_permutations, 1)), axis=1)
    return out


def word_codes_of(words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct words, each row's word code): how :func:`context_statistics` numbers words (the order of
    ``pair_cosines``)."""
    return np.unique(np.asarray(words, dtype=str), return_inverse=True)


def _word_means(values: np.ndarray, word_codes: np.ndarray, n_words: int) -> np.ndarray:
    """Per-word means of row values: (n,) -> (n_words,) or (B, n) -> (B, n_words)."""
    onehot = np.zeros((word_codes.size, n_words))
    onehot[np.arange(word_codes.size), word_codes] = 1.0
    counts = onehot.sum(axis=0)
    return (np.asarray(values, dtype=np.float64) @ onehot) / counts


def _pair_auc(labels: np.ndarray, i: np.ndarray, j: np.ndarray, beats: np.ndarray) -> np.ndarray:
    """AUC of same-sense pairs (i, j) over different-sense pairs, given ``beats`` (P, P); labels (..., m)."""
    same = (labels[..., i] == labels[..., j]).astype(np.float64)          # (..., P)
    n_same, n_diff = same.sum(-1), (1 - same).sum(-1)
    wins = np.einsum("...p,pq,...q->...", same, beats, 1 - same)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_same > 0) & (n_diff > 0), wins / (n_same * n_diff), np.nan)


def word_pair_cosines(vectors: np.ndarray, word_codes: np.ndarray, n_words: int) -> list[np.ndarray]:
    """Per word (code 0..n_words-1), the cosines of its rows' pairs (i < j in row order, ``np.triu_indices``):
    a list of (P_w,) arrays, the input of :func:`pair_auc_from_cosines`."""
    v = np.asarray(vectors, dtype=np.float64)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    out = []
    for w in range(n_words):
        rows = np.flatnonzero(word_codes == w)
        i, j = np.triu_indices(rows.size, k=1)
        out.append((v[rows] @ v[rows].T)[i, j])
    return out


def pair_auc_from_cosines(pair_cosines: Sequence[np.ndarray], labels: np.ndarray, word_codes: np.ndarray,
                          n_words: int, perms: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(per-word same-vs-different-sense pair AUC (n_words,), its null (B, n_words)) from each word's pair cosines
    (``pair_cosines[w]``: its rows' pairs in ``np.triu_indices`` order, rows in ``word_codes`` order).

    A word without both same-sense and different-sense pairs gets nan. ``perms`` (B, n) are the null's
    within-word permutations of the rows' labels.
    """
    labels = np.asarray(labels)
    n_perm = 0 if perms is None else perms.shape[0]
    units, null = np.full(n_words, np.nan), np.full((n_perm, n_words), np.nan)
    for w in range(n_words):
        rows = np.flatnonzero(word_codes == w)
        i, j = np.triu_indices(rows.size, k=1)
        if i.size < 2:
            continue
        sims = np.asarray(pair_cosines[w], dtype=np.float64)
        if sims.shape != i.shape:
            raise ValueError(f"pair_cosines[{w}] has shape {sims.shape}; expected {i.shape}, one per pair of the "
                             f"word's {rows.size} rows")
        # beats[a, b] = 1 when pair a's cosine beats pair b's, 1/2 on a tie.
        beats = (sims[:, None] > sims[None, :]) + 0.5 * (sims[:, None] == sims[None, :])
        units[w] = _pair_auc(labels[rows], i, j, beats)
        if n_perm:
            null[:, w] = _pair_auc(labels[perms[:, rows]], i, j, beats)
    return units, null


def pair_auc_units(vectors: np.ndarray, labels: np.ndarray, word_codes: np.ndarray, n_words: int,
                   perms: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(per-word same-vs-different-sense pair AUC (n_words,), its null (B, n_words)) of the contextual vectors:
    :func:`pair_auc_from_cosines` of :func:`word_pair_cosines`."""
    return pair_auc_from_cosines(word_pair_cosines(vectors, word_codes, n_words), labels, word_codes, n_words, perms)


@dataclass
class ContextStats:
    """Per-layer statistics of one group of contexts (polysemous words or controls) and the best layer."""

    layers: list[str]
    per_layer: dict[str, dict[str, Stat]]
    best_layer: str
    best: dict[str, Stat]
    word_units: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # layer -> stat -> (n_words,)
    row_values: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # layer -> name -> (n,)

    def to_dict(self) -> dict:
        """JSON-safe: per-layer and best-layer Stats as dicts."""
        return {"best_layer": self.best_layer, "best": {k: s.to_dict() for k, s in self.best.items()},
                "per_layer": {layer: {k: s.to_dict() for k, s in stats.items()}
                              for layer, stats in self.per_layer.items()}}


def _boot_max(units_by_layer: np.ndarray, n_bootstrap: int, rng: np.random.Generator) -> tuple[float, float]:
    """Percentile interval of max over layers of the mean over resampled words (units (L, W))."""
    ok = np.all(np.isfinite(units_by_layer), axis=0)
    u = units_by_layer[:, ok]
    if n_bootstrap < 1 or u.shape[1] < 2:
        return math.nan, math.nan
    idx = rng.integers(0, u.shape[1], size=(n_bootstrap, u.shape[1]))
    boots = u[:, idx].mean(axis=2).max(axis=0)
    return float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))


def context_statistics(context_scores: dict[str, np.ndarray], base_scores: dict[str, np.ndarray],
                       labels: np.ndarray, words: Sequence[str], groups: Sequence[str], *,
                       pair_vectors: dict[str, np.ndarray] | None = None,
                       pair_cosines: dict[str, Sequence[np.ndarray]] | None = None, n_permutations: int = 1000,
                       n_bootstrap: int = 1000, seed: int = 0) -> ContextStats:
    """Sense accuracy (in context and out of context), shift and pair AUC per layer, with nulls and CIs.

    ``context_scores[layer]`` and ``base_scores[layer]`` are (n, m) candidate cosines of the contextual and
    out-of-context vectors (:func:`cosine_scores`); ``labels`` (n,) the tagged sense's candidate position;
    ``words`` the row's word (the bootstrap unit); ``groups`` the rows whose tags the null may permute
    among; ``pair_vectors[layer]`` (n, d) the contextual vectors for the pair AUC, or ``pair_cosines[layer]`` each
    word's pair cosines already computed (:func:`word_pair_cosines`, words in sorted order; skipped when both are
    None).
    The best layer's stats take the max over layers in the observation, every null draw and every resample.
    """
    layers = list(context_scores)
    if not layers:
        raise ValueError("context_scores is empty: at least one layer is needed")
    labels = np.asarray(labels)
    word_names, word_codes = word_codes_of(words)
    _, group_codes = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    n_words = word_names.size
    if labels.shape != (word_codes.size,):
        raise ValueError(f"labels has shape {labels.shape}; expected ({word_codes.size},), one per context")
    if pair_vectors is not None and pair_cosines is not None:
        raise ValueError("pair_vectors and pair_cosines are both given; accepted: one of them (or neither)")
    rng = np.random.default_rng(seed)
    perms = group_permutations(group_codes, n_permutations, rng)
    perm_labels = labels[perms]                                            # (B, n)
    units: dict[str, dict[str, np.ndarray]] = {}
    nulls: dict[str, dict[str, np.ndarray]] = {}
    rows: dict[str, dict[str, np.ndarray]] = {}
    for layer in layers:
        ctx, base = context_scores[layer], base_scores[layer]
        pred, base_pred = predictions(ctx), predictions(base)
        shift_rows = margins(ctx, labels) - margins(base, labels)
        units[layer] = {"sense_accuracy": _word_means(pred == labels, word_codes, n_words),
                        "baseline_accuracy": _word_means(base_pred == labels, word_codes, n_words),
                        "shift": _word_means(shift_rows, word_codes, n_words)}
        nulls[layer] = {"sense_accuracy": _word_means(pred[None, :] == perm_labels, word_codes, n_words).mean(1),
                        "baseline_accuracy": _word_means(base_pred[None, :] == perm_labels, word_codes,
                                                         n_words).mean(1),
                        "shift": _word_means(margins(ctx, perm_labels) - margins(base, perm_labels), word_codes,
                                             n_words).mean(1)}
        rows[layer] = {"labels": labels, "predicted": pred, "baseline_predicted": base_pred,
                       "margin": margins(ctx, labels), "baseline_margin": margins(base, labels), "shift": shift_rows}
        if pair_vectors is not None or pair_cosines is not None:
            cosines = (pair_cosines[layer] if pair_cosines is not None
                       else word_pair_cosines(pair_vectors[layer], word_codes, n_words))
            auc, auc_null = pair_auc_from_cosines(cosines, labels, word_codes, n_words, perms)
            units[layer]["pair_auc"] = auc
            nulls[layer]["pair_auc"] = np.nanmean(auc_null, axis=1)
    per_layer: dict[str, dict[str, Stat]] = {}
    for layer in layers:
        per_layer[layer] = {}
        for name, u in units[layer].items():
            per_layer[layer][name] = make_stat(float(np.nanmean(u)), u, nulls[layer][name], n_bootstrap=n_bootstrap,
                                               rng=np.random.default_rng([seed, layers.index(layer)]))
    # Best layer, chosen by in-context sense accuracy; each statistic's own max over layers is corrected.
    values = np.array([per_layer[layer]["sense_accuracy"].value for layer in layers])
    best_layer = layers[int(np.argmax(values))]
    best: dict[str, Stat] = {}
    for name in units[layers[0]]:
        stacked = np.stack([units[layer][name] for layer in layers])        # (L, W)
        null_max = np.stack([nulls[layer][name] for layer in layers]).max(axis=0)
        value = float(np.nanmax(np.nanmean(stacked, axis=1)))
        stat = make_stat(value, np.array([]), null_max, n_bootstrap=0)
        stat.ci_low, stat.ci_high = _boot_max(stacked, n_bootstrap, np.random.default_rng([seed, 10_000]))
        stat.n = int(np.isfinite(stacked).all(axis=0).sum())
        best[name] = stat
    return ContextStats(layers, per_layer, best_layer, best, units, rows)


# ------------------------------------------------------------------------------------------- drift control
def drift_controlled(poly_units: np.ndarray, control_units: np.ndarray, n_bootstrap: int,
                     rng: np.random.Generator) -> dict[str, float]:
    """Polysemous words' mean per-word effect minus the monosemous controls' (drift: what context does to any
    word), with a percentile interval from a two-sample bootstrap over words (each group resampled on its own)."""
    a = np.asarray(poly_units, dtype=float)
    b = np.asarray(control_units, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    out = {"value": float(a.mean() - b.mean()) if a.size and b.size else math.nan,
           "polysemous": float(a.mean()) if a.size else math.nan, "controls": float(b.mean()) if b.size else math.nan,
           "ci_low": math.nan, "ci_high": math.nan, "n_polysemous": int(a.size), "n_controls": int(b.size)}
    if n_bootstrap >= 1 and a.size >= 2 and b.size >= 2:
        boots = (a[rng.integers(0, a.size, size=(n_bootstrap, a.size))].mean(axis=1)
                 - b[rng.integers(0, b.size, size=(n_bootstrap, b.size))].mean(axis=1))
        out["ci_low"], out["ci_high"] = float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))
        for name, u in (("polysemous", a), ("controls", b)):
            own = u[rng.integers(0, u.size, size=(n_bootstrap, u.size))].mean(axis=1)
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = (float(np.quantile(own, 0.025)),
                                                             float(np.quantile(own, 0.975)))
    return out
