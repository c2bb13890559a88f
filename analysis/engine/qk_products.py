"""Weight-level QK products per head: the paper's concept and complement products, for any model (numpy only).

For one attention head with query and key maps ``W_Q``, ``W_K`` (d_head x d_model) and directions ``u`` (a query)
and ``v`` (a key) in that layer's input space, the bilinear part of the attention score is::

    <W_Q u, W_K v> = u^T W_Q^T W_K v        (:func:`qk_gram`, every pair of query and key directions)

Bu et al. (2024) follow two such products of the one-layer model: the concept product <W_Q mu_k^s, W_K mu_k^s>
(a concept's direction attending to itself) and the complement product <W_Q mu_k^s, W_K mu_k^-s> (to its
opposite-sign twin). :func:`concept_products` computes both from the same Gram matrix: with ``complements`` given
(the synthetic model's mu_k^-s) the complement of concept k is that direction; without (a real model, where a
concept has no signed twin) it is the mean product with the *other* concepts' directions, j != k. A head's weight
score is their difference averaged over concepts (:func:`weight_score`): how much more a concept's direction
attends to itself than to the other concepts.

Nulls (:func:`product_test`), each drawn ``permutations`` times: random directions of the same norms as the concept
directions (isotropic Gaussian, rescaled), and the concept directions re-estimated from the same vectors with their
concept labels permuted (what the vectors' geometry gives without the concepts). A head's p is the larger of the
two one-sided permutation p-values; the correction over heads is Westfall & Young's max-T (:func:`maxt_p`).
:func:`rank_correlation` is Spearman's rho with a permutation p, for comparing a per-head weight score with a
per-head behavioural statistic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from mcicl.analysis.engine.measures import concept_directions
from mcicl.analysis.engine.nulls import maxt_p


def qk_gram(W_Q: np.ndarray, W_K: np.ndarray, queries: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """<W_Q q_i, W_K k_j> for every query direction i and key direction j: (..., n_queries, n_keys).

    ``W_Q``, ``W_K`` (..., d_head, d_model) (leading axes: heads, seeds), ``queries`` (n, d_model), ``keys`` (m,
    d_model), or with the same leading axes as the weights ((..., n, d_model): per-head or per-draw directions).
    """
    q = np.einsum("...ed,...nd->...ne", W_Q, queries)
    k = np.einsum("...ed,...md->...me", W_K, keys)
    return np.einsum("...ne,...me->...nm", q, k)


def concept_products(W_Q: np.ndarray, W_K: np.ndarray, directions: np.ndarray,
                     complements: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(concept products <W_Q mu_k, W_K mu_k>, complement products) per concept: two (..., k) arrays.

    ``complements`` (k, d_model): concept k's complement direction (the synthetic mu_k^-s); None: the complement
    product of concept k is the mean of <W_Q mu_k, W_K mu_j> over the other concepts j != k (needs k >= 2).
    """
    directions = np.asarray(directions)
    if complements is not None:
        complements = np.asarray(complements)
        if complements.shape != directions.shape:
            raise ValueError(f"complements of shape {complements.shape}; accepted: one per direction, "
                             f"{directions.shape}")
        q = np.einsum("...ed,...kd->...ke", W_Q, directions)
        same = np.einsum("...ke,...ke->...k", q, np.einsum("...ed,...kd->...ke", W_K, directions))
        comp = np.einsum("...ke,...ke->...k", q, np.einsum("...ed,...kd->...ke", W_K, complements))
        return same, comp
    k = directions.shape[-2]
    if k < 2:
        raise ValueError(f"{k} concept direction(s); accepted: at least 2 (the complement is the other concepts)")
    gram = qk_gram(W_Q, W_K, directions, directions)
    same = np.einsum("...kk->...k", gram)
    return same, (gram.sum(-1) - same) / (k - 1)


def weight_score(W_Q: np.ndarray, W_K: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Mean over concepts of concept minus complement product, per head: (...,)."""
    same, comp = concept_products(W_Q, W_K, directions)
    return (same - comp).mean(-1)


@dataclass
class ProductTest:
    """The products of every head of one layer against their two nulls; arrays are (heads,)."""

    concept: np.ndarray  # mean over concepts of <W_Q mu_k, W_K mu_k>
    complement: np.ndarray  # mean over concepts of the complement product
    score: np.ndarray  # concept - complement
    random_null: np.ndarray  # (B, heads): the score with random directions of the same norms
    permuted_null: np.ndarray  # (B, heads): the score with directions of permuted concept labels
    p_random: np.ndarray
    p_permuted: np.ndarray
    p_value: np.ndarray  # the larger of the two
    p_corrected: np.ndarray  # max-T over the heads given, the larger of the two nulls' corrected p

    def quantiles(self, q: float) -> tuple[np.ndarray, np.ndarray]:
        """The ``q`` quantile of the (random, permuted) null per head."""
        return np.quantile(self.random_null, q, axis=0), np.quantile(self.permuted_null, q, axis=0)


def _scores_of(W_Q: np.ndarray, W_K: np.ndarray, draws: np.ndarray, chunk: int = 128) -> np.ndarray:
    """weight_score of every head (H, e, d) for each drawn set of directions (B, k, d): (B, H)."""
    out = []
    for a in range(0, len(draws), chunk):
        d = draws[a:a + chunk][:, None]  # (b, 1, k, d): broadcast over heads
        out.append(weight_score(W_Q[None], W_K[None], d))
    return np.concatenate(out) if out else np.zeros((0, W_Q.shape[0]))


def product_test(W_Q: np.ndarray, W_K: np.ndarray, vectors: np.ndarray, labels: np.ndarray | list[str], *,
                 permutations: int = 1000, seed: int = 0, method: str = "diff") -> ProductTest:
    """The weight score of every head (``W_Q``, ``W_K``: (heads, d_head, d_model)) with the concept directions of
    ``vectors`` (n, d_model) labelled ``labels`` (:func:`concept_directions` by ``method``), and its two nulls."""
    W_Q, W_K = np.asarray(W_Q, dtype=np.float64), np.asarray(W_K, dtype=np.float64)
    if W_Q.ndim != 3 or W_Q.shape != W_K.shape:
        raise ValueError(f"W_Q {W_Q.shape} and W_K {W_K.shape}; accepted: two (heads, d_head, d_model) arrays")
    labels = np.asarray(labels)
    dirs, _ = concept_directions(vectors, labels, method=method)
    same, comp = concept_products(W_Q, W_K, dirs)
    score = (same - comp).mean(-1)
    rng = np.random.default_rng(seed)
    norms = np.linalg.norm(dirs, axis=1)
    rand = rng.standard_normal((permutations,) + dirs.shape)
    rand *= (norms / np.linalg.norm(rand, axis=-1))[..., None]
    permuted = np.stack([concept_directions(vectors, rng.permutation(labels), method=method)[0]
                         for _ in range(permutations)])
    random_null, permuted_null = _scores_of(W_Q, W_K, rand), _scores_of(W_Q, W_K, permuted)
    raw_r, cor_r = maxt_p(score, random_null)
    raw_p, cor_p = maxt_p(score, permuted_null)
    return ProductTest(concept=same.mean(-1), complement=comp.mean(-1), score=score, random_null=random_null,
                       permuted_null=permuted_null, p_random=raw_r, p_permuted=raw_p,
                       p_value=np.maximum(raw_r, raw_p), p_corrected=np.maximum(cor_r, cor_p))


def rank_correlation(x: np.ndarray, y: np.ndarray, *, permutations: int = 1000, seed: int = 0
                     ) -> tuple[float, float]:
    """(Spearman's rho of ``x`` and ``y`` (average ranks for ties), two-sided permutation p of |rho|)."""
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3:
        return float("nan"), float("nan")
    rx, ry = rankdata(x[keep]), rankdata(y[keep])
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = np.sqrt((rx ** 2).sum() * (ry ** 2).sum())
    if denom == 0:
        return float("nan"), float("nan")
    rho = float((rx * ry).sum() / denom)
    rng = np.random.default_rng(seed)
    perm = np.stack([ry[rng.permutation(len(ry))] for _ in range(permutations)])
    null = (perm @ rx) / denom
    p = float((1 + (np.abs(null) >= abs(rho) - 1e-12).sum()) / (permutations + 1))
    return rho, p
