"""Polysemy: does a polysemous word's vector carry each of its senses' concepts at once?

Two measurements, both against the concept set's own space (same centring or whitening):

- :func:`polysemy_analysis` cosines: the word's cosine with each gold sense's concept centroid, against the
  null of words that lack that sense (the cosines of every other concept's words with the same centroid),
  with its rank among all concepts. A label-shuffling null would be the wrong one here: random centroids
  all sit near the global mean, so any fixed word would look "significant" for some concept.
- A sparse decomposition of the word over the concept centroid directions (non-negative lasso, or OMP with
  the gold number of senses), scored by precision and recall of the recovered concepts against the gold
  senses; chance precision is (#senses / #concepts).

Polysemous words that also appear in a concept's word list are left out of every centroid, so a word is
never compared with a centroid that contains itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.linear_model import Lasso, OrthogonalMatchingPursuit

from mcicl.analysis.engine.measures import Whitener, check_inputs, encode_labels, space_transform, unit_rows

METHODS = ("lasso", "omp")


@dataclass
class PolysemyWord:
    """One polysemous word: its gold senses, cosines with their centroids and the decomposition's senses."""

    word: str
    senses: list[str]
    sense_cos: dict[str, float]
    sense_null: dict[str, float]
    sense_p: dict[str, float]
    sense_rank: dict[str, int]
    predicted: list[str]
    precision: float
    recall: float
    top_k_recall: float

    def row(self) -> dict[str, Any]:
        """A flat CSV row."""
        return {"word": self.word, "senses": "|".join(self.senses),
                "sense_cos": "|".join(f"{self.sense_cos[s]:.4f}" for s in self.senses),
                "sense_null": "|".join(f"{self.sense_null[s]:.4f}" for s in self.senses),
                "sense_p": "|".join(f"{self.sense_p[s]:.4g}" for s in self.senses),
                "sense_rank": "|".join(str(self.sense_rank[s]) for s in self.senses),
                "min_sense_cos": min(self.sense_cos.values()), "max_sense_p": max(self.sense_p.values()),
                "predicted": "|".join(self.predicted), "precision": self.precision, "recall": self.recall,
                "top_k_recall": self.top_k_recall}


@dataclass
class PolysemyResult:
    """Per-word results and their means."""

    words: list[PolysemyWord]
    n_concepts: int
    method: str
    summary: dict[str, float] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One CSV row per polysemous word."""
        return [w.row() for w in self.words]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (means) plus the method."""
        return {"method": self.method, "n_concepts": self.n_concepts, **self.summary}


def parse_senses(labels: Sequence[str] | Sequence[Sequence[str]]) -> list[list[str]]:
    """Senses per word from '|'-joined labels (the ``.polysemy.npz`` format) or lists."""
    out = []
    for lab in labels:
        senses = [s for s in (str(lab).split("|") if isinstance(lab, (str, np.str_)) else lab) if s]
        out.append(list(dict.fromkeys(senses)))
    return out


def sparse_senses(x: np.ndarray, directions: np.ndarray, *, method: str = "lasso", alpha_ratio: float = 0.3,
                  n_nonzero: int | None = None) -> np.ndarray:
    """Non-negative coefficients of ``x`` over the rows of ``directions`` (k, d); zeros mark absent concepts.

    ``lasso``: non-negative lasso with alpha = ``alpha_ratio`` x the smallest alpha that zeroes every
    coefficient. ``omp``: orthogonal matching pursuit with ``n_nonzero`` atoms (negative ones dropped).
    """

    if method not in METHODS:
        raise ValueError(f"method={method!r}; accepted: {', '.join(METHODS)}")
    D = np.asarray(directions, dtype=np.float64).T  # (d, k): one column per concept
    x = np.asarray(x, dtype=np.float64)
    if method == "omp":
        omp = OrthogonalMatchingPursuit(n_nonzero_coefs=max(1, min(n_nonzero or 1, D.shape[1])),
                                        fit_intercept=False)
        return np.maximum(omp.fit(D, x).coef_, 0.0)
    if not 0 < alpha_ratio < 1:
        raise ValueError(f"alpha_ratio={alpha_ratio}; accepted: a number strictly between 0 and 1")
    alpha_max = float(np.max(D.T @ x)) / len(x)
    if alpha_max <= 0:
        return np.zeros(D.shape[1])
    lasso = Lasso(alpha=alpha_ratio * alpha_max, positive=True, fit_intercept=False, max_iter=5000)
    return lasso.fit(D, x).coef_


def polysemy_analysis(vectors: np.ndarray, labels: Sequence[str], poly_vectors: np.ndarray,
                      poly_words: Sequence[str], poly_senses: Sequence[str] | Sequence[Sequence[str]], *,
                      words: Sequence[str] | None = None, whiten: np.ndarray | Whitener | None = None,
                      center_vectors: bool = True, method: str = "lasso",
                      alpha_ratio: float = 0.3) -> PolysemyResult:
    """Sense cosines against the other-concept-words null and sparse-decomposition precision/recall, per word.

    ``vectors``/``labels`` (and ``words``) are the concept set; ``poly_senses`` are '|'-joined labels or
    lists of concept names. Senses naming concepts absent from ``labels`` raise a ValueError.
    """
    X = check_inputs(vectors, labels)
    P = np.asarray(poly_vectors, dtype=np.float64)
    if P.size == 0 and len(poly_words) == 0:
        return PolysemyResult([], len(set(map(str, labels))), method)
    if P.ndim != 2 or P.shape[1] != X.shape[1] or len(P) != len(poly_words):
        raise ValueError(f"poly_vectors must be (n_poly={len(poly_words)}, d={X.shape[1]}); got {P.shape}")
    senses = parse_senses(poly_senses)
    if len(senses) != len(P):
        raise ValueError(f"poly_senses has {len(senses)} entries but poly_vectors has {len(P)} rows")
    codes, names = encode_labels(labels)
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted({s for ss in senses for s in ss if s not in index})
    if unknown:
        raise ValueError(f"polysemy senses {unknown[:5]} are not concepts of the set; known: {', '.join(names)}")
    k = len(names)
    transform = space_transform(X, center_vectors=center_vectors, whiten=whiten)
    Xt, Pt = transform(X), transform(P)
    # Leave the polysemous words themselves out of every centroid.
    keep = np.ones(len(X), dtype=bool) if words is None else ~np.isin(np.asarray(words, dtype=str),
                                                                      np.asarray(poly_words, dtype=str))
    Xk, ck = Xt[keep], codes[keep]
    counts = np.bincount(ck, minlength=k)
    if np.any(counts < 1):
        raise ValueError(f"concept(s) {[names[i] for i in np.flatnonzero(counts < 1)]} have no words left "
                         "after removing the polysemous words")
    directions = unit_rows(np.stack([Xk[ck == c].mean(axis=0) for c in range(k)]))  # (k, d) centroids
    observed = unit_rows(Pt) @ directions.T  # (n_poly, k)
    word_cos = unit_rows(Xk) @ directions.T  # (n_words, k): the null pool, masked to words outside each concept
    outside = ck[:, None] != np.arange(k)[None, :]
    ranks = (-observed).argsort(axis=1).argsort(axis=1) + 1

    def null_of(c: int) -> np.ndarray:
        return word_cos[outside[:, c], c]

    results = []
    for i, (word, gold) in enumerate(zip(poly_words, senses, strict=True)):
        gi = [index[s] for s in gold]
        coef = sparse_senses(Pt[i], directions, method=method, alpha_ratio=alpha_ratio, n_nonzero=len(gi))
        predicted = [names[j] for j in np.flatnonzero(coef > 0)[np.argsort(-coef[coef > 0])]]
        hits = len(set(predicted) & set(gold))
        top = [names[j] for j in np.argsort(-coef)[:len(gi)] if coef[j] > 0]
        results.append(PolysemyWord(
            word=str(word), senses=gold,
            sense_cos={s: float(observed[i, j]) for s, j in zip(gold, gi, strict=True)},
            sense_null={s: float(null_of(j).mean()) for s, j in zip(gold, gi, strict=True)},
            sense_p={s: float((1 + np.sum(null_of(j) >= observed[i, j])) / (1 + len(null_of(j))))
                     for s, j in zip(gold, gi, strict=True)},
            sense_rank={s: int(ranks[i, j]) for s, j in zip(gold, gi, strict=True)},
            predicted=predicted, precision=hits / len(predicted) if predicted else math.nan,
            recall=hits / len(gold), top_k_recall=len(set(top) & set(gold)) / len(gold),
        ))
    result = PolysemyResult(results, k, method)
    if results:
        p_values = [p for w in results for p in w.sense_p.values()]
        precisions = [w.precision for w in results if math.isfinite(w.precision)]
        result.summary = {
            "n_words": len(results),
            "mean_sense_cos": float(np.mean([c for w in results for c in w.sense_cos.values()])),
            "mean_sense_null": float(np.mean([c for w in results for c in w.sense_null.values()])),
            "fraction_senses_significant": float(np.mean(np.array(p_values) < 0.05)),
            "fraction_words_all_senses_significant": float(np.mean([max(w.sense_p.values()) < 0.05
                                                                    for w in results])),
            "mean_precision": float(np.mean(precisions)) if precisions else math.nan,
            "mean_recall": float(np.mean([w.recall for w in results])),
            "mean_top_k_recall": float(np.mean([w.top_k_recall for w in results])),
            "chance_precision": float(np.mean([len(w.senses) / k for w in results])),
        }
    return result


def as_dict(word: PolysemyWord) -> dict[str, Any]:
    """The full record of one word."""
    return asdict(word)
