"""The geometry engine: pure functions of (vectors, labels), the same on synthetic and real spaces.

Steps, each a function: centring and whitening by a reference covariance (:func:`whitener`; Park et al.'s
"causal inner product" when the reference is the unembedding or a vocabulary sample); within- and
cross-concept cosines (:func:`concept_cosines`); concept directions by mean, difference of means or LDA with
Ledoit-Wolf shrinkage (:func:`concept_directions`) and their |cos| matrix (:func:`direction_abs_cos`);
principal angles between concept subspaces (:func:`principal_angles`, :func:`subspace_max_cos`);
hierarchical orthogonality cos(child - parent, parent) (:func:`hierarchy_cosines`); held-out projection on a
70/30 split (:func:`heldout_projection_auc`). :func:`geometry_summary` runs them all with their nulls
(:mod:`analysis.nulls`), vectorized over permutations: each permutation costs a few (k, n) @ (n, d) products.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.linalg import cho_factor, cho_solve, subspace_angles
from scipy.sparse import csr_matrix
from sklearn.covariance import ledoit_wolf
from threadpoolctl import threadpool_limits

from mcicl.analysis.engine.controls import centring_identity, permute_within
from mcicl.analysis.engine.nulls import (
    Stat,
    bootstrap_units,
    isotropic_abs_cos,
    make_stat,
    permutation_p_value,
    permute_labels,
    shuffle_coordinates,
    unit_mean,
)
from mcicl.core.logs import progress

DIRECTION_METHODS = ("mean", "diff", "lda")
BATCHED_SUBSPACE_LIMIT = 2e7  # padded (k, m, d) entries above which concept subspaces are computed one by one


# ----------------------------------------------------------------------------------------------- inputs
def encode_labels(labels: Sequence[str] | np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(integer code per row, concept names in order of first appearance)."""
    labels = np.asarray(labels, dtype=str)
    names = list(dict.fromkeys(labels.tolist()))
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[lab] for lab in labels.tolist()], dtype=np.int64), names


def check_inputs(vectors: np.ndarray, labels: Sequence[str] | np.ndarray, min_per_concept: int = 2) -> np.ndarray:
    """Validate (n, d) vectors and n labels (>= 2 concepts, each with >= ``min_per_concept`` rows)."""
    X = np.asarray(vectors, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"vectors must be a non-empty 2-D (n, d) array; got shape {X.shape}")
    if len(labels) != len(X):
        raise ValueError(f"labels has {len(labels)} entries but vectors has {len(X)} rows")
    if not np.all(np.isfinite(X)):
        bad = int(np.sum(~np.isfinite(X).all(axis=1)))
        raise ValueError(f"vectors hold non-finite values in {bad} row(s); accepted: finite floats only")
    names, counts = np.unique(np.asarray(labels, dtype=str), return_counts=True)
    if len(names) < 2:
        raise ValueError(f"need at least 2 concepts, got {len(names)} ({list(names)})")
    small = names[counts < min_per_concept]
    if len(small):
        raise ValueError(f"concept(s) {[str(s) for s in small[:5]]} have fewer than {min_per_concept} vectors; "
                         f"each concept needs at least {min_per_concept}")
    return X


def unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm (zero rows stay zero)."""
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1.0)


def center(X: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """``X`` minus ``mean`` (default: its own row mean): removes the common offset of anisotropic spaces."""
    X = np.asarray(X, dtype=np.float64)
    return X - (X.mean(axis=0) if mean is None else np.asarray(mean, dtype=np.float64))


@dataclass
class Whitener:
    """An affine map x -> (x - mean) @ matrix with Cov(reference) mapped to the identity."""

    mean: np.ndarray
    matrix: np.ndarray
    n_reference: int

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """The whitened rows of ``X``."""
        return (np.asarray(X, dtype=np.float64) - self.mean) @ self.matrix


def whitener(reference: np.ndarray, *, eps: float = 1e-6) -> Whitener:
    """Centring + Cov(reference)^(-1/2) (symmetric), eigenvalues floored at ``eps`` x the largest.

    With the unembedding matrix as reference this is the "causal inner product" of Park et al. (2024).
    """
    R = np.asarray(reference, dtype=np.float64)
    if R.ndim != 2 or R.shape[0] < 2:
        raise ValueError(f"whitening reference must be a 2-D (m, d) array with m >= 2; got shape {R.shape}")
    mean = R.mean(axis=0)
    cov = np.cov(R - mean, rowvar=False)
    vals, vecs = np.linalg.eigh(np.atleast_2d(cov))
    vals = np.maximum(vals, eps * max(vals.max(), 1e-300))
    return Whitener(mean, (vecs / np.sqrt(vals)) @ vecs.T, R.shape[0])


def space_transform(vectors: np.ndarray, *, center_vectors: bool = True,
                    whiten: np.ndarray | Whitener | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """The map into the analysed space fitted on ``vectors``: whitening by a reference, centring, or identity.

    Use it to put other vectors (polysemous words, a held-out set) in the same space as a concept set.
    """
    if whiten is not None:
        w = whiten if isinstance(whiten, Whitener) else whitener(whiten)
        if w.matrix.shape[0] != np.shape(vectors)[1]:
            raise ValueError(f"whitening reference has d={w.matrix.shape[0]} but vectors have "
                             f"d={np.shape(vectors)[1]}")
        return w
    if center_vectors:
        mean = np.asarray(vectors, dtype=np.float64).mean(axis=0)
        return lambda Y: center(Y, mean)
    return lambda Y: np.asarray(Y, dtype=np.float64)


def prepare(vectors: np.ndarray, labels: Sequence[str] | np.ndarray, *, center_vectors: bool = True,
            whiten: np.ndarray | Whitener | None = None, signs: np.ndarray | None = None) -> np.ndarray:
    """The analysed space: sign-aligned (synthetic ±1 words), then whitened by a reference or centred.

    ``whiten`` (a reference (m, d) array or a :class:`Whitener`) centres by the reference mean; otherwise
    ``center_vectors`` subtracts the vectors' own mean. ``signs`` (0 = none) multiply rows so that a
    concept's +/- words point the same way (the synthetic dictionary's semantic signs).
    """
    X = check_inputs(vectors, labels)
    if signs is not None:
        s = np.asarray(signs, dtype=np.float64)
        if s.shape != (len(X),):
            raise ValueError(f"signs must have one entry per row ({len(X)}), got shape {s.shape}")
        X = X * np.where(s == 0, 1.0, np.sign(s))[:, None]
    return space_transform(X, center_vectors=center_vectors, whiten=whiten)(X)


# ------------------------------------------------------------------------------------------- statistics
def _onehot(codes: np.ndarray, k: int) -> Any:
    """Sparse (n, k) indicator: ``M.T @ X`` sums rows per concept without an (n, k) dense matrix."""

    return csr_matrix((np.ones(len(codes)), (np.arange(len(codes)), codes)), shape=(len(codes), k))


def _onehot_dense(codes: np.ndarray, k: int) -> np.ndarray:
    M = np.zeros((len(codes), k))
    M[np.arange(len(codes)), codes] = 1.0
    return M


def _grouped(X: np.ndarray, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(k, m, d) rows of each concept, zero-padded to the largest concept, and the counts."""
    counts = np.bincount(codes, minlength=k)
    order = np.argsort(codes, kind="stable")
    starts = np.cumsum(counts) - counts
    pos = np.arange(len(codes)) - starts[codes[order]]
    G = np.zeros((k, counts.max(), X.shape[1]))
    G[codes[order], pos] = X[order]
    return G, counts


@dataclass
class ConceptCosines:
    """Mean pairwise cosines: ``within[c]`` inside concept c, ``cross[a, b]`` between concepts a and b."""

    names: list[str]
    within: np.ndarray
    cross: np.ndarray
    counts: np.ndarray

    @property
    def within_mean(self) -> float:
        """Mean over concepts of the within-concept cosine."""
        return float(np.mean(self.within))

    @property
    def cross_mean(self) -> float:
        """Mean over concept pairs of the cross-concept cosine."""
        k = len(self.names)
        return float(self.cross[~np.eye(k, dtype=bool)].mean())

    def per_concept_cross(self) -> np.ndarray:
        """Each concept's mean cross cosine with the other concepts."""
        k = len(self.names)
        off = ~np.eye(k, dtype=bool)
        return np.array([self.cross[c][off[c]].mean() for c in range(k)])


def _cosine_units(U: np.ndarray, codes: np.ndarray, k: int,
                  M: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    # Sums of unit vectors per concept turn all pairwise cosines into one (k, k) Gram matrix.
    M = _onehot(codes, k) if M is None else M
    S = M.T @ U
    sq = M.T @ np.einsum("nd,nd->n", U, U)  # self-pairs to remove (1 per non-zero row)
    G = S @ S.T
    counts = np.bincount(codes, minlength=k).astype(np.float64)
    within = (np.diag(G) - sq) / np.maximum(counts * (counts - 1), 1)
    cross = G / np.maximum(np.outer(counts, counts), 1)
    return within, cross


def concept_cosines(vectors: np.ndarray, labels: Sequence[str] | np.ndarray) -> ConceptCosines:
    """Within-concept (mean pairwise cosine, self-pairs excluded) and cross-concept cosines of the rows as given."""
    X = check_inputs(vectors, labels)
    codes, names = encode_labels(labels)
    within, cross = _cosine_units(unit_rows(X), codes, len(names))
    return ConceptCosines(names, within, cross, np.bincount(codes, minlength=len(names)))


def _ledoit_wolf_solve(residuals: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """rhs @ Sigma^-1 for the Ledoit-Wolf shrunk covariance of ``residuals`` (positive definite by construction)."""

    cov, _ = ledoit_wolf(residuals, assume_centered=True)
    cov[np.diag_indices_from(cov)] += 1e-12 * max(float(np.trace(cov)), 1e-300)
    return cho_solve(cho_factor(cov), rhs.T).T


def _centroid_parts(X: np.ndarray, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    M = _onehot(codes, k)
    counts = np.bincount(codes, minlength=k).astype(np.float64)
    return M, counts, (M.T @ X) / counts[:, None]


def _directions(X: np.ndarray, codes: np.ndarray, k: int, method: str,
                parts: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    M, counts, means = parts if parts is not None else _centroid_parts(X, codes, k)
    if method == "mean":
        return unit_rows(means)
    total = X.sum(axis=0)
    rest = (total[None, :] - means * counts[:, None]) / np.maximum(len(X) - counts, 1)[:, None]
    diff = means - rest
    if method == "diff":
        return unit_rows(diff)
    # LDA: Sigma_w^-1 (mu_c - mu_rest) with a Ledoit-Wolf shrunk within-concept covariance, estimated in the
    # span of the data when d > n (the directions lie in that span; this keeps d = 4096 affordable).
    basis = None
    Xr, diff_r, means_r = X, diff, means
    if X.shape[1] > X.shape[0]:
        _, _, vt = np.linalg.svd(X, full_matrices=False)
        basis = vt
        Xr, diff_r, means_r = X @ vt.T, diff @ vt.T, means @ vt.T
    dirs = _ledoit_wolf_solve(Xr - means_r[codes], diff_r)
    return unit_rows(dirs @ basis if basis is not None else dirs)


def concept_directions(vectors: np.ndarray, labels: Sequence[str] | np.ndarray,
                       method: str = "diff") -> tuple[np.ndarray, list[str]]:
    """((k, d) unit concept directions, names) by ``method``: mean | diff (one-vs-rest) | lda (Ledoit-Wolf)."""
    if method not in DIRECTION_METHODS:
        raise ValueError(f"method={method!r}; accepted: {', '.join(DIRECTION_METHODS)}")
    X = check_inputs(vectors, labels)
    codes, names = encode_labels(labels)
    return _directions(X, codes, len(names), method), names


def direction_abs_cos(directions: np.ndarray) -> np.ndarray:
    """The (k, k) |cos| matrix of concept directions (diagonal 1)."""
    U = unit_rows(np.asarray(directions, dtype=np.float64))
    return np.abs(U @ U.T)


def principal_angles(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Principal angles (radians, largest first) between the column spans of A (d, p) and B (d, q)."""

    return subspace_angles(np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64))


def _subspace_bases(X: np.ndarray, codes: np.ndarray, k: int, rank: int) -> np.ndarray:
    """(k, r, d) orthonormal rows spanning each concept's top-r principal (uncentred) subspace."""
    counts = np.bincount(codes, minlength=k)
    r = max(1, min(rank, int(counts.min()) - 1, X.shape[1]))
    if k * int(counts.max()) * X.shape[1] > BATCHED_SUBSPACE_LIMIT:  # large concepts: one at a time
        order = np.argsort(codes, kind="stable")
        bases = np.empty((k, r, X.shape[1]))
        for c, rows in enumerate(np.split(order, np.cumsum(counts)[:-1])):
            Xc = X[rows]
            if len(Xc) <= X.shape[1]:
                vals, vecs = np.linalg.eigh(Xc @ Xc.T)
                top = vecs[:, ::-1][:, :r]
                bases[c] = unit_rows(top.T @ Xc)
            else:
                bases[c] = np.linalg.eigh(Xc.T @ Xc)[1][:, ::-1][:, :r].T
        return bases
    G, counts = _grouped(X, codes, k)
    # Eigenvectors of the small (m, m) Gram blocks instead of an SVD of every (m, d) block: same span, cheaper.
    vals, vecs = np.linalg.eigh(G @ G.transpose(0, 2, 1))
    vals, vecs = vals[:, ::-1][:, :r], vecs[:, :, ::-1][:, :, :r]
    Q = (vecs.transpose(0, 2, 1) @ G) / np.sqrt(np.maximum(vals, 1e-300))[:, :, None]
    return unit_rows(Q.reshape(-1, X.shape[1])).reshape(Q.shape)


def _subspace_units(X: np.ndarray, codes: np.ndarray, k: int, rank: int) -> np.ndarray:
    V = _subspace_bases(X, codes, k, rank)
    r = V.shape[1]
    flat = V.reshape(k * r, -1)
    prod = (flat @ flat.T).reshape(k, r, k, r).transpose(0, 2, 1, 3)
    return np.linalg.svd(prod, compute_uv=False)[..., 0]  # cos of the smallest principal angle


def subspace_max_cos(vectors: np.ndarray, labels: Sequence[str] | np.ndarray, rank: int = 3) -> np.ndarray:
    """(k, k) cosine of the smallest principal angle between concepts' top-``rank`` subspaces."""
    X = check_inputs(vectors, labels)
    codes, names = encode_labels(labels)
    return _subspace_units(X, codes, len(names), rank)


def concept_subspaces(vectors: np.ndarray, labels: Sequence[str] | np.ndarray,
                      rank: int = 3) -> tuple[np.ndarray, list[str]]:
    """((k, d, r) orthonormal bases of each concept's top-``rank`` subspace, names)."""
    X = check_inputs(vectors, labels)
    codes, names = encode_labels(labels)
    return np.transpose(_subspace_bases(X, codes, len(names), rank), (0, 2, 1)), names


def _edges(names: list[str], parents: Mapping[str, str] | None) -> np.ndarray:
    index = {n: i for i, n in enumerate(names)}
    pairs = [(index[c], index[p]) for c, p in (parents or {}).items() if c in index and p in index]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def _hierarchy_units(X: np.ndarray, codes: np.ndarray, k: int, edges: np.ndarray) -> np.ndarray:
    M = _onehot(codes, k)
    means = (M.T @ X) / np.bincount(codes, minlength=k)[:, None]
    child, parent = means[edges[:, 0]], means[edges[:, 1]]
    return np.einsum("ed,ed->e", unit_rows(child - parent), unit_rows(parent))


def hierarchy_cosines(vectors: np.ndarray, labels: Sequence[str] | np.ndarray,
                      parents: Mapping[str, str]) -> dict[tuple[str, str], float]:
    """cos(mean(child) - mean(parent), mean(parent)) for each child -> parent edge among the labels."""
    X = check_inputs(vectors, labels)
    codes, names = encode_labels(labels)
    edges = _edges(names, parents)
    values = _hierarchy_units(X, codes, len(names), edges)
    return {(names[c], names[p]): float(v) for (c, p), v in zip(edges, values, strict=True)}


def _split_mask(codes: np.ndarray, k: int, train_frac: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean train mask: ``train_frac`` of each concept's rows (at least one on each side)."""
    counts = np.bincount(codes, minlength=k)
    n_train = np.clip(np.round(train_frac * counts).astype(int), 1, counts - 1)
    order = np.lexsort((rng.random(len(codes)), codes))  # random order inside each concept
    starts = np.cumsum(counts) - counts
    rank_in_concept = np.empty(len(codes), dtype=np.int64)
    rank_in_concept[order] = np.arange(len(codes)) - starts[codes[order]]
    return rank_in_concept < n_train[codes]


def _heldout_units(X: np.ndarray, codes: np.ndarray, k: int, train: np.ndarray) -> np.ndarray:
    D = _directions(X[train], codes[train], k, "diff")
    test_codes = codes[~train]
    P = X[~train] @ D.T  # (n_test, k): projection of each held-out word on each concept direction
    ranks = np.empty_like(P)  # ranks per column (ties have probability zero for real-valued projections)
    np.put_along_axis(ranks, np.argsort(P, axis=0), np.arange(1, len(P) + 1, dtype=float)[:, None], axis=0)
    pos = _onehot_dense(test_codes, k).astype(bool)
    n_pos = pos.sum(axis=0)
    n_neg = len(test_codes) - n_pos
    # AUC (Mann-Whitney): probability that a held-out word of the concept projects above one of another.
    return ((ranks * pos).sum(axis=0) - n_pos * (n_pos + 1) / 2) / np.maximum(n_pos * n_neg, 1)


def heldout_projection_auc(vectors: np.ndarray, labels: Sequence[str] | np.ndarray, *, train_frac: float = 0.7,
                           seed: int = 0) -> dict[str, float]:
    """Per concept: AUC of held-out words on the direction fitted on ``train_frac`` of each concept (0.5 = chance)."""
    X = check_inputs(vectors, labels)
    codes, names = encode_labels(labels)
    train = _split_mask(codes, len(names), train_frac, np.random.default_rng(seed))
    return dict(zip(names, map(float, _heldout_units(X, codes, len(names), train)), strict=True))


# ---------------------------------------------------------------------------------------------- summary
# name: (alternative, what it is). The alternative is the direction the paper's premise predicts, or
# two-sided where the premise predicts "chance level".
STATISTICS: dict[str, tuple[str, str]] = {
    "within_concept_cosine": ("greater", "mean over concepts of the mean pairwise cosine inside a concept"),
    "cross_concept_cosine": ("less", "mean over concept pairs of the mean cosine between their words"),
    "within_minus_cross": ("greater", "within_concept_cosine - cross_concept_cosine"),
    "concept_direction_abs_cos": ("two-sided", "mean |cos| between difference-of-means concept directions"),
    "mean_direction_abs_cos": ("two-sided", "mean |cos| between concept centroid directions"),
    "lda_direction_abs_cos": ("two-sided", "mean |cos| between LDA (Ledoit-Wolf) concept directions"),
    "subspace_max_cos": ("two-sided", "mean over concept pairs of cos(smallest principal angle) of rank-r subspaces"),
    "hierarchy_cos": ("two-sided", "mean over child->parent edges of cos(child - parent, parent)"),
    "heldout_projection_auc": ("greater", "mean over concepts of the held-out (30%) AUC on 70%-fitted directions"),
}


def _all_units(X: np.ndarray, codes: np.ndarray, k: int, *, rank: int, edges: np.ndarray,
               train: np.ndarray, lda: bool, expensive: bool = True) -> dict[str, np.ndarray]:
    """Every statistic's units (per concept, per pair or per edge) for one labelling of the rows."""
    parts = _centroid_parts(X, codes, k)
    within, cross = _cosine_units(unit_rows(X), codes, k, parts[0])
    off = ~np.eye(k, dtype=bool)
    units = {
        "within_concept_cosine": within,
        "cross_concept_cosine": cross,
        "within_minus_cross": within - (cross * off).sum(axis=1) / max(k - 1, 1),
        "concept_direction_abs_cos": direction_abs_cos(_directions(X, codes, k, "diff", parts)),
        "mean_direction_abs_cos": direction_abs_cos(_directions(X, codes, k, "mean", parts)),
    }
    if expensive:
        units["subspace_max_cos"] = _subspace_units(X, codes, k, rank)
        units["heldout_projection_auc"] = _heldout_units(X, codes, k, train)
    if lda:
        units["lda_direction_abs_cos"] = direction_abs_cos(_directions(X, codes, k, "lda", parts))
    if len(edges):
        units["hierarchy_cos"] = _hierarchy_units(X, codes, k, edges)
    return units


def single_threaded_blas() -> Any:
    """A context limiting BLAS to one thread: the engine's many small products lose to threading overhead,
    badly so on a shared machine (measured: 7 layers took 300 s with 2 BLAS threads under load, 30 s with 1)."""
    return threadpool_limits(limits=1, user_api="blas")


def geometry_summary(vectors: np.ndarray, labels: Sequence[str] | np.ndarray, *, n_permutations: int = 200,
                     n_bootstrap: int = 1000, n_shuffles: int = 20, seed: int = 0,
                     whiten: np.ndarray | Whitener | None = None, center_vectors: bool = True,
                     signs: np.ndarray | None = None, parents: Mapping[str, str] | None = None,
                     subspace_rank: int = 3, train_frac: float = 0.7, lda: bool = True,
                     expensive_permutations: int = 100, lda_permutations: int = 20) -> dict[str, Stat]:
    """Every statistic in :data:`STATISTICS` as a :class:`Stat` with permutation and shuffled-embedding nulls.

    ``whiten``: a reference (m, d) array (or Whitener) whose covariance defines the inner product;
    ``parents``: child -> parent concept edges for ``hierarchy_cos`` (omitted when none apply).
    Subspace angles and held-out AUC use at most ``expensive_permutations`` permutations, the LDA statistic
    at most ``lda_permutations`` (it inverts a shrunk covariance each time); each Stat records its count.
    """
    if n_permutations < 1:
        raise ValueError(f"n_permutations={n_permutations}; accepted: an integer >= 1")
    if not 0 < train_frac < 1:
        raise ValueError(f"train_frac={train_frac}; accepted: a number strictly between 0 and 1")
    with single_threaded_blas():
        return _geometry_summary(vectors, labels, n_permutations=n_permutations, n_bootstrap=n_bootstrap,
                                 n_shuffles=n_shuffles, seed=seed, whiten=whiten, center_vectors=center_vectors,
                                 signs=signs, parents=parents, subspace_rank=subspace_rank, train_frac=train_frac,
                                 lda=lda, expensive_permutations=expensive_permutations,
                                 lda_permutations=lda_permutations)


def _geometry_summary(vectors: np.ndarray, labels: Sequence[str] | np.ndarray, *, n_permutations: int,
                      n_bootstrap: int, n_shuffles: int, seed: int, whiten: np.ndarray | Whitener | None,
                      center_vectors: bool, signs: np.ndarray | None, parents: Mapping[str, str] | None,
                      subspace_rank: int, train_frac: float, lda: bool, expensive_permutations: int,
                      lda_permutations: int) -> dict[str, Stat]:
    X = prepare(vectors, labels, center_vectors=center_vectors, whiten=whiten, signs=signs)
    codes, names = encode_labels(labels)
    k = len(names)
    rng = np.random.default_rng(seed)
    edges = _edges(names, parents)
    train = _split_mask(codes, k, train_frac, np.random.default_rng(seed + 1))
    kw = {"rank": subspace_rank, "edges": edges, "train": train}
    d = X.shape[1]
    Xs = X
    if d > len(X):
        # Every statistic depends on inner products only, so coordinates in the rows' span (n <= d) give the
        # same numbers at a fraction of the cost; the shuffled-embedding null needs the original coordinates.
        Xs = X @ np.linalg.svd(X, full_matrices=False)[2].T
    observed = _all_units(Xs, codes, k, lda=lda, **kw)

    nulls: dict[str, list[float]] = {name: [] for name in observed}
    # A bar (on a terminal, not under --quiet): with thousands of concepts each permutation takes seconds.
    for i in progress(range(n_permutations), desc=f"permutation null ({k} concepts)", total=n_permutations):
        perm = permute_labels(codes, rng)
        # The held-out split is redrawn per permutation so it stays stratified by the shuffled labels.
        units = _all_units(Xs, perm, k, lda=lda and i < lda_permutations, expensive=i < expensive_permutations,
                           **{**kw, "train": _split_mask(perm, k, train_frac, rng)})
        for name, u in units.items():
            nulls[name].append(unit_mean(u))
    shuffled: dict[str, list[float]] = {name: [] for name in observed}
    for _ in range(n_shuffles):
        units = _all_units(shuffle_coordinates(X, rng), codes, k, lda=False, **kw)
        for name, u in units.items():
            shuffled[name].append(unit_mean(u))

    out: dict[str, Stat] = {}
    for name in STATISTICS:
        if name not in observed:
            continue
        iso = isotropic_abs_cos(d) if name.endswith("abs_cos") else math.nan
        out[name] = make_stat(unit_mean(observed[name]), observed[name], np.array(nulls[name]),
                              shuffled_null=np.array(shuffled[name]), alternative=STATISTICS[name][0],
                              n_bootstrap=n_bootstrap, rng=rng, isotropic=iso)
    return out


def summary_dict(stats: Mapping[str, Stat]) -> dict[str, dict[str, Any]]:
    """JSON-safe {statistic: Stat.to_dict()}."""
    return {name: stat.to_dict() for name, stat in stats.items()}


def per_concept_table(vectors: np.ndarray, labels: Sequence[str] | np.ndarray, *,
                      whiten: np.ndarray | Whitener | None = None, center_vectors: bool = True,
                      signs: np.ndarray | None = None) -> list[dict[str, Any]]:
    """One row per concept: n, within cosine, mean cross cosine, max |cos| of its direction with another."""
    X = prepare(vectors, labels, center_vectors=center_vectors, whiten=whiten, signs=signs)
    cos = concept_cosines(X, labels)
    dirs, names = concept_directions(X, labels, "diff")
    A = direction_abs_cos(dirs)
    np.fill_diagonal(A, np.nan)
    cross = cos.per_concept_cross()
    return [{"concept": n, "n": int(cos.counts[i]), "within_cosine": float(cos.within[i]),
             "cross_cosine": float(cross[i]), "max_direction_abs_cos": float(np.nanmax(A[i])),
             "closest_concept": names[int(np.nanargmax(A[i]))]} for i, n in enumerate(names)]


# ------------------------------------------------------------------------------ units, matched null, centring
def statistic_units(vectors: np.ndarray, labels: Sequence[str] | np.ndarray, *, center_vectors: bool = True,
                    whiten: np.ndarray | Whitener | None = None, signs: np.ndarray | None = None, seed: int = 0,
                    parents: Mapping[str, str] | None = None, subspace_rank: int = 3,
                    train_frac: float = 0.7) -> dict[str, np.ndarray]:
    """The observed units (per concept or per concept pair) of every statistic :func:`geometry_summary`
    reports, with its held-out split (seed + 1), so two spaces of the same words can be compared unit by unit."""
    X = prepare(vectors, labels, center_vectors=center_vectors, whiten=whiten, signs=signs)
    codes, names = encode_labels(labels)
    k = len(names)
    train = _split_mask(codes, k, train_frac, np.random.default_rng(seed + 1))
    with single_threaded_blas():
        return _all_units(X, codes, k, rank=subspace_rank, edges=_edges(names, parents), train=train, lda=False)


MATCHED_STATISTICS = ("within_concept_cosine", "cross_concept_cosine", "within_minus_cross",
                      "concept_direction_abs_cos", "mean_direction_abs_cos")


def matched_null(vectors: np.ndarray, labels: Sequence[str] | np.ndarray, strata: np.ndarray, *,
                 n_permutations: int = 200, seed: int = 0, center_vectors: bool = True,
                 whiten: np.ndarray | Whitener | None = None, signs: np.ndarray | None = None) -> dict[str, dict]:
    """The tokenization-matched null of the cheap statistics: labels permuted only among words of one stratum
    (:func:`analysis.engine.controls.permute_within`); per statistic the observed value, null mean, 2.5-97.5%
    band and permutation p in the statistic's direction (:data:`STATISTICS`)."""
    X = prepare(vectors, labels, center_vectors=center_vectors, whiten=whiten, signs=signs)
    codes, names = encode_labels(labels)
    k = len(names)
    rng = np.random.default_rng([seed, 23])
    none = np.zeros(0, dtype=bool)
    kw = {"rank": 1, "edges": np.zeros((0, 2), dtype=np.int64), "train": none, "lda": False, "expensive": False}
    with single_threaded_blas():
        observed = _all_units(X, codes, k, **kw)
        draws: dict[str, list[float]] = {s: [] for s in MATCHED_STATISTICS}
        for _ in range(n_permutations):
            units = _all_units(X, permute_within(codes, strata, rng), k, **kw)
            for s in MATCHED_STATISTICS:
                draws[s].append(unit_mean(units[s]))
    out = {}
    for s in MATCHED_STATISTICS:
        null = np.array(draws[s])
        value = unit_mean(observed[s])
        out[s] = {"value": value, "null": float(null.mean()), "null_low": float(np.quantile(null, 0.025)),
                  "null_high": float(np.quantile(null, 0.975)),
                  "p_value": permutation_p_value(value, null, STATISTICS[s][0]), "n_permutations": n_permutations,
                  "n_strata": int(len(np.unique(strata)))}
    return out


def centring_report(vectors: np.ndarray, labels: Sequence[str] | np.ndarray, *, n_permutations: int = 200,
                    n_bootstrap: int = 0, seed: int = 0, signs: np.ndarray | None = None) -> dict[str, float]:
    """Raw (uncentred) and centred cross-concept cosines side by side, the raw one with its permutation null,
    and the centred pooled one beside its centring-identity expectation
    (:func:`analysis.engine.controls.centring_identity`)."""
    raw = prepare(vectors, labels, center_vectors=False, signs=signs)
    centred = prepare(vectors, labels, center_vectors=True, signs=signs)
    codes, names = encode_labels(labels)
    k = len(names)
    off = ~np.eye(k, dtype=bool)
    rng = np.random.default_rng([seed, 29])
    U = unit_rows(raw)
    with single_threaded_blas():
        within_raw, cross_raw = _cosine_units(U, codes, k)
        null = np.array([_cosine_units(U, rng.permutation(codes), k)[1][off].mean() for _ in range(n_permutations)])
        within_c, cross_c = _cosine_units(unit_rows(centred), codes, k)
    ident = centring_identity(centred, codes)
    raw_low, raw_high = bootstrap_units(cross_raw, n_bootstrap, rng)  # over concepts, like the centred one
    return {"raw_within": float(within_raw.mean()), "raw_cross": float(cross_raw[off].mean()),
            "raw_cross_ci_low": raw_low, "raw_cross_ci_high": raw_high,
            "raw_cross_null": float(null.mean()), "raw_cross_null_low": float(np.quantile(null, 0.025)),
            "raw_cross_null_high": float(np.quantile(null, 0.975)),
            "centred_within": float(within_c.mean()), "centred_cross": float(cross_c[off].mean()),
            "centred_cross_pooled": ident["pooled_cross"], "centring_expectation": ident["expected"],
            "centring_residual": ident["residual"], "n_permutations": n_permutations}


def direction_units(X: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    """(k, k) |cos| of the one-vs-rest difference-of-means directions of prepared rows ``X`` labelled ``codes``."""
    return direction_abs_cos(_directions(X, codes, k, "diff"))
