"""WiC-style pairs: is the cosine of one word's two occurrences higher when they share a sense?

Pure functions of (vectors, words, sense labels). Pairs are every two occurrences ``i < j`` of the same word;
a pair is *positive* when both carry the same label. The score of a pair is the cosine of the two contextual
vectors. The statistic is the pooled **AUC** over all pairs of all words:

    AUC = P(score(positive) > score(negative)) + 1/2 P(tie) = U / (n_pos * n_neg),

the Mann-Whitney U of positives over negatives (a word contributes its pairs, so frequent words weigh more;
:func:`per_word_auc` gives the mean of words' own AUCs as well). The interval is a **cluster bootstrap over
words**: words are resampled with replacement and every pair of a drawn word enters with the word's
multiplicity (pairs of one word are not independent, words are). Chance is 1/2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Pairs:
    """Every within-word pair: row indices ``i < j``, the word code of each pair and whether labels agree."""

    i: np.ndarray
    j: np.ndarray
    word: np.ndarray
    same: np.ndarray
    words: np.ndarray  # word names by code


def make_pairs(words: Sequence[str], labels: Sequence[str]) -> Pairs:
    """The within-word pairs of rows with ``words`` and sense ``labels`` (one per row)."""
    names, codes = np.unique(np.asarray(words, dtype=str), return_inverse=True)
    labels = np.asarray(labels, dtype=str)
    parts_i, parts_j, parts_w = [], [], []
    for w in range(names.size):
        rows = np.flatnonzero(codes == w)
        a, b = np.triu_indices(rows.size, k=1)
        parts_i.append(rows[a])
        parts_j.append(rows[b])
        parts_w.append(np.full(a.size, w))
    i = np.concatenate(parts_i) if parts_i else np.array([], dtype=int)
    j = np.concatenate(parts_j) if parts_j else np.array([], dtype=int)
    return Pairs(i, j, np.concatenate(parts_w) if parts_w else np.array([], dtype=int), labels[i] == labels[j],
                 names)


def pair_cosines(vectors: np.ndarray, pairs: Pairs) -> np.ndarray:
    """(n_pairs,) cosine of each pair's two rows of ``vectors`` (n, d)."""
    v = np.asarray(vectors, dtype=np.float64)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return np.einsum("pd,pd->p", v[pairs.i], v[pairs.j])


def weighted_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC of positives over negatives with per-pair ``weights`` (n,) or (B, n) -> () or (B,); ties count 1/2.

    With unit weights this is the Mann-Whitney U / (n_pos n_neg).
    """
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    order = np.argsort(scores, kind="stable")
    s, pos = scores[order], positive[order]
    w = np.asarray(weights, dtype=np.float64)[..., order]
    # Tie groups of the sorted scores: each element's group runs from starts[g] to ends[g] (exclusive).
    _, starts, group = np.unique(s, return_index=True, return_inverse=True)
    ends = np.append(starts[1:], s.size)
    neg = np.where(pos, 0.0, w)
    cum = np.concatenate([np.zeros(w.shape[:-1] + (1,)), np.cumsum(neg, axis=-1)], axis=-1)
    below, upto = cum[..., starts[group]], cum[..., ends[group]]
    wins = (np.where(pos, w, 0.0) * (below + 0.5 * (upto - below))).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return wins / (np.where(pos, w, 0.0).sum(axis=-1) * neg.sum(axis=-1))


def per_word_auc(scores: np.ndarray, pairs: Pairs) -> np.ndarray:
    """(n_words,) each word's own AUC (nan for a word without both positive and negative pairs)."""
    out = np.full(pairs.words.size, np.nan)
    for w in range(pairs.words.size):
        sel = pairs.word == w
        if pairs.same[sel].any() and (~pairs.same[sel]).any():
            out[w] = float(weighted_auc(scores[sel], pairs.same[sel], np.ones(int(sel.sum()))))
    return out


@dataclass
class PairAUC:
    """The pooled AUC with its cluster-bootstrap interval (words resampled), and the counts behind it."""

    auc: float
    ci_low: float
    ci_high: float
    per_word_mean: float
    n_words: int
    n_positive: int
    n_negative: int

    def to_dict(self) -> dict[str, float | int]:
        """JSON-safe fields."""
        return dict(self.__dict__)


def pair_auc(scores: np.ndarray, pairs: Pairs, *, n_bootstrap: int = 1000, seed: int = 0,
             chunk: int = 100, all_words: bool = False) -> PairAUC:
    """Pooled AUC of same-label pairs over different-label pairs, 95% percentile interval over resampled words.

    Only words with both kinds of pair enter (others say nothing about sense within the word); the bootstrap draws
    those words with replacement, each pair weighted by its word's count in the draw. With ``all_words`` (WiC
    files, where most words have one pair) every word enters, so positives and negatives may come from different
    words; ``per_word_mean`` still averages the words that have both.
    """
    per_word = per_word_auc(scores, pairs)
    informative = (np.unique(pairs.word) if all_words else np.flatnonzero(~np.isnan(per_word)))
    keep = np.isin(pairs.word, informative)
    s, same, word = scores[keep], pairs.same[keep], pairs.word[keep]
    auc = float(weighted_auc(s, same, np.ones(s.size))) if s.size else float("nan")
    low = high = float("nan")
    if n_bootstrap >= 1 and informative.size >= 2:
        rng = np.random.default_rng(seed)
        draws = rng.choice(informative, size=(n_bootstrap, informative.size), replace=True)
        boots = []
        for start in range(0, n_bootstrap, chunk):
            part = draws[start:start + chunk]
            mult = np.zeros((part.shape[0], pairs.words.size))
            np.add.at(mult, (np.repeat(np.arange(part.shape[0]), part.shape[1]), part.ravel()), 1.0)
            boots.append(weighted_auc(s, same, mult[:, word]))
        boots = np.concatenate(boots)
        low, high = float(np.nanquantile(boots, 0.025)), float(np.nanquantile(boots, 0.975))
    return PairAUC(auc, low, high, float(np.nanmean(per_word)) if np.isfinite(per_word).any() else float("nan"),
                   int(informative.size), int(same.sum()), int((~same).sum()))
