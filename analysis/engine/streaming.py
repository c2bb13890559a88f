"""Geometry statistics computed chunk by chunk, for vector sets larger than memory (an activation store).

Two passes over the chunks, each holding O(k d + d^2) numbers, never the (n, d) rows:

1. :class:`Moments`: count, mean and the centred sum of squares M2 by Welford's update per chunk and Chan et
   al.'s merge (``delta = mean_b - mean_a``; ``mean = mean_a + delta n_b / n``; ``M2 = M2_a + M2_b + delta delta^T
   n_a n_b / n``), so the covariance M2 / (n - 1) is exact to rounding in any chunking; and per-concept sums of
   the rows with their counts.
2. :class:`ConceptSums`: per-concept sums of the unit-normalised centred rows u_i = (x_i - mean) / |x_i - mean|.
   Within-concept cosine of concept c = (|S_c|^2 - sum_i |u_i|^2) / (n_c (n_c - 1)) (self-pairs removed);
   cross cosine of (a, b) = S_a . S_b / (n_a n_b): the same Gram identity as the in-memory engine
   (:func:`analysis.engine.measures.concept_cosines` on the centred rows).

Concept directions follow from pass 1 alone: centroid m_c - mean ("mean") and m_c minus the mean of the other
concepts' rows ("diff"). The values equal :func:`analysis.engine.measures.geometry_summary`'s (centred, no
whitening, no signs) to float tolerance.

The label-permutation null of the three cosine statistics streams too (:class:`PermutationNull`): B relabellings
of the rows are drawn up front (:func:`permuted_codes`: each a permutation of the codes, concept sizes kept, as
:func:`analysis.engine.nulls.permute_labels` draws them), and pass 2 adds each unit row u_i to S_b[perm_b(i)] for
every b: (B, k, d) sums (with their (B, k) counts and squared norms), from which each permutation's within and
cross cosines follow by the same Gram identity. Only the B x n codes and the sums are held, never the rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix

Chunks = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]  # a fresh iterator of (rows (b, d), codes (b,))


@dataclass
class Moments:
    """Running count, mean and centred sum of squares (M2) of rows, merged chunk by chunk (Chan et al.)."""

    n: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, d: int) -> Moments:
        """No rows yet, width ``d``."""
        return cls(0, np.zeros(d), np.zeros((d, d)))

    @classmethod
    def of(cls, X: np.ndarray) -> Moments:
        """The moments of one chunk (rows of ``X``)."""
        X = np.asarray(X, dtype=np.float64)
        mean = X.mean(axis=0) if len(X) else np.zeros(X.shape[1])
        Y = X - mean
        return cls(len(X), mean, Y.T @ Y)

    def merge(self, other: Moments) -> Moments:
        """The moments of both row sets together."""
        n = self.n + other.n
        if n == 0:
            return self
        delta = other.mean - self.mean
        return Moments(n, self.mean + delta * (other.n / n),
                       self.m2 + other.m2 + np.outer(delta, delta) * (self.n * other.n / n))

    def covariance(self, ddof: int = 1) -> np.ndarray:
        """M2 / (n - ddof): ``np.cov(X, rowvar=False)`` for ddof=1."""
        return self.m2 / max(self.n - ddof, 1)


@dataclass
class ConceptSums:
    """Per-concept sums over rows: raw rows (``rows``), unit centred rows (``units``), their squared norms, counts."""

    counts: np.ndarray
    rows: np.ndarray
    units: np.ndarray
    unit_sq: np.ndarray

    @classmethod
    def empty(cls, k: int, d: int) -> ConceptSums:
        """Zero sums for ``k`` concepts of width ``d``."""
        return cls(np.zeros(k), np.zeros((k, d)), np.zeros((k, d)), np.zeros(k))


@dataclass
class StreamingGeometry:
    """The streamed statistics of one vector set: moments, per-concept cosines and direction |cos| matrices."""

    moments: Moments
    sums: ConceptSums
    within: np.ndarray  # (k,) within-concept cosine per concept
    cross: np.ndarray  # (k, k) mean cross cosine per concept pair (diagonal: self-pairs included)
    n_chunks: int
    null: PermutationNull | None = None  # the streamed label-permutation null, when permutations were given

    @property
    def k(self) -> int:
        """Number of concepts."""
        return len(self.within)

    def _off(self, M: np.ndarray) -> float:
        return float(M[~np.eye(self.k, dtype=bool)].mean())

    @property
    def within_mean(self) -> float:
        """Mean over concepts of the within-concept cosine (``within_concept_cosine``)."""
        return float(self.within.mean())

    @property
    def cross_mean(self) -> float:
        """Mean over concept pairs of the cross cosine (``cross_concept_cosine``)."""
        return self._off(self.cross)

    @property
    def within_minus_cross(self) -> float:
        """Mean over concepts of within minus that concept's mean cross cosine (``within_minus_cross``)."""
        off = ~np.eye(self.k, dtype=bool)
        return float((self.within - (self.cross * off).sum(axis=1) / max(self.k - 1, 1)).mean())

    def cosine_units(self) -> dict[str, np.ndarray]:
        """Each cosine statistic's units (as the in-memory engine's): per concept, or the (k, k) pair matrix."""
        off = ~np.eye(self.k, dtype=bool)
        return {"within_concept_cosine": self.within, "cross_concept_cosine": self.cross,
                "within_minus_cross": self.within - (self.cross * off).sum(axis=1) / max(self.k - 1, 1)}

    def directions(self, method: str = "diff") -> np.ndarray:
        """(k, d) unit concept directions from the centred centroids: 'mean' or 'diff' (one vs the rest)."""
        c, n = self.sums.counts, self.moments.n
        centroids = self.sums.rows / np.maximum(c, 1)[:, None] - self.moments.mean
        if method == "mean":
            out = centroids
        elif method == "diff":
            total = self.sums.rows.sum(axis=0) - n * self.moments.mean  # sum of centred rows (~0)
            rest = (total[None, :] - centroids * c[:, None]) / np.maximum(n - c, 1)[:, None]
            out = centroids - rest
        else:
            raise ValueError(f"method={method!r}; accepted: 'mean' or 'diff'")
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)

    def direction_abs_cos(self, method: str = "diff") -> float:
        """Mean |cos| between distinct concepts' directions (``concept_direction_abs_cos`` for 'diff')."""
        U = self.directions(method)
        return self._off(np.abs(U @ U.T))

    def summary(self) -> dict[str, float]:
        """The headline values, named as geometry_summary names them."""
        return {"within_concept_cosine": self.within_mean, "cross_concept_cosine": self.cross_mean,
                "within_minus_cross": self.within_minus_cross,
                "concept_direction_abs_cos": self.direction_abs_cos("diff"),
                "mean_direction_abs_cos": self.direction_abs_cos("mean"),
                "n": self.moments.n, "k": self.k, "covariance_trace": float(np.trace(self.moments.covariance()))}


NULL_STATISTICS = ("within_concept_cosine", "cross_concept_cosine", "within_minus_cross")
PERMUTATION_BLOCK = 16  # permutations whose (b, k, d) product is formed at once (bounds the temporary)


def cosine_statistics(units: np.ndarray, unit_sq: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """The three cosine statistics from per-concept unit sums ``units`` (..., k, d), squared norms and counts
    (..., k): each a value per leading index (a scalar for one labelling, (B,) for B permutations)."""
    G = np.einsum("...kd,...jd->...kj", units, units)
    k = units.shape[-2]
    within = (np.einsum("...kk->...k", G) - unit_sq) / np.maximum(counts * (counts - 1), 1)
    cross = G / np.maximum(counts[..., :, None] * counts[..., None, :], 1)
    off = ~np.eye(k, dtype=bool)
    cross_off = np.where(off, cross, 0.0)
    per_concept_cross = cross_off.sum(axis=-1) / max(k - 1, 1)
    return {"within_concept_cosine": within.mean(axis=-1),
            "cross_concept_cosine": cross_off.sum(axis=(-2, -1)) / max(k * (k - 1), 1),
            "within_minus_cross": (within - per_concept_cross).mean(axis=-1)}


def permuted_codes(codes: np.ndarray, n_permutations: int, seed: int | np.random.Generator = 0) -> np.ndarray:
    """(B, n) relabellings of the rows, each ``rng.permutation(codes)`` (concept sizes kept), in the smallest
    integer type that holds the codes (the B x n draws are the null's only per-row memory)."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    codes = np.asarray(codes)
    top = codes.max(initial=0)
    dtype = np.int8 if top < 2**7 else np.int16 if top < 2**15 else np.int32
    out = np.empty((n_permutations, len(codes)), dtype=dtype)
    for b in range(n_permutations):
        out[b] = rng.permutation(codes)
    return out


def null_bytes(n_permutations: int, k: int, d: int, n: int) -> int:
    """About how many bytes the streamed null holds: the (B, k, d) float64 sums, one block's product and the
    B x n relabellings (one byte each below 128 concepts, else two or four)."""
    per_code = 1 if k <= 2**7 else 2 if k <= 2**15 else 4
    return 8 * k * d * (n_permutations + 2 * min(n_permutations, PERMUTATION_BLOCK)) + per_code * n_permutations * n


@dataclass
class PermutationNull:
    """Per-permutation sums of unit rows per concept, accumulated chunk by chunk: (B, k, d) sums, (B, k) counts."""

    units: np.ndarray
    unit_sq: np.ndarray
    counts: np.ndarray

    @classmethod
    def empty(cls, n_permutations: int, k: int, d: int) -> PermutationNull:
        """Zero sums for ``n_permutations`` relabellings of ``k`` concepts, width ``d``."""
        return cls(np.zeros((n_permutations, k, d)), np.zeros((n_permutations, k)), np.zeros((n_permutations, k)))

    def add(self, U: np.ndarray, perms: np.ndarray) -> None:
        """Add the unit rows ``U`` (b, d) under each permutation's labels ``perms`` (B, b) of those rows."""
        B, k = self.counts.shape
        sq = np.einsum("nd,nd->n", U, U)
        for lo in range(0, B, PERMUTATION_BLOCK):
            block = np.asarray(perms[lo:lo + PERMUTATION_BLOCK], dtype=np.int64)
            nb = len(block)
            # One sparse (nb k, b) indicator times U: row (j, c) sums the rows that permutation lo + j labels c.
            index = (block + (np.arange(nb) * k)[:, None]).ravel()
            M = csr_matrix((np.ones(index.size), (index, np.tile(np.arange(len(U)), nb))), shape=(nb * k, len(U)))
            self.units[lo:lo + nb] += np.asarray(M @ U).reshape(nb, k, -1)
            self.unit_sq[lo:lo + nb] += np.asarray(M @ sq).reshape(nb, k)
            self.counts[lo:lo + nb] += np.asarray(M.sum(axis=1)).reshape(nb, k)

    def statistics(self) -> dict[str, np.ndarray]:
        """(B,) null values of each statistic in :data:`NULL_STATISTICS`."""
        return cosine_statistics(self.units, self.unit_sq, self.counts)


def _per_concept(X: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    """(k, d) sums of the rows of each concept (a sparse indicator product: O(n d), no (n, k) dense matrix)."""
    M = csr_matrix((np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(k, len(codes)))
    return np.asarray(M @ X)


def streaming_geometry(chunks: Chunks, k: int, d: int, *, center: bool = True,
                       permutations: np.ndarray | None = None) -> StreamingGeometry:
    """Two passes over ``chunks()`` (rows, integer concept codes 0..k-1): moments, then per-concept unit sums;
    with ``permutations`` (B, n) (row i's label under each permutation, rows in chunk order) also the streamed
    permutation null of the cosine statistics."""
    moments, sums, n_chunks = Moments.empty(d), ConceptSums.empty(k, d), 0
    for X, codes in chunks():
        X = np.asarray(X, dtype=np.float64)
        if not np.all(np.isfinite(X)):
            raise ValueError(f"chunk {n_chunks} holds non-finite values; accepted: finite floats only")
        moments = moments.merge(Moments.of(X))
        sums.counts += np.bincount(codes, minlength=k)
        sums.rows += _per_concept(X, codes, k)
        n_chunks += 1
    if permutations is not None and np.shape(permutations)[1] != moments.n:
        raise ValueError(f"permutations label {np.shape(permutations)[1]} rows, the chunks hold {moments.n}; "
                         "accepted: one label per row, rows in chunk order")
    null = PermutationNull.empty(len(permutations), k, d) if permutations is not None else None
    shift = moments.mean if center else np.zeros(d)
    start = 0
    for X, codes in chunks():
        Y = np.asarray(X, dtype=np.float64) - shift
        norms = np.linalg.norm(Y, axis=1, keepdims=True)
        U = Y / np.where(norms > 0, norms, 1.0)
        sums.units += _per_concept(U, codes, k)
        sums.unit_sq += np.bincount(codes, weights=np.einsum("nd,nd->n", U, U), minlength=k)
        if null is not None:
            null.add(U, permutations[:, start:start + len(U)])
        start += len(U)
    c = sums.counts
    G = sums.units @ sums.units.T
    within = (np.diag(G) - sums.unit_sq) / np.maximum(c * (c - 1), 1)
    cross = G / np.maximum(np.outer(c, c), 1)
    return StreamingGeometry(moments, sums, within, cross, n_chunks, null)
