"""The paper's data model fitted to vectors: sparse dictionary learning, recovery of a known dictionary, learned atoms
against concept directions, polysemous words as sparse codes. Pure functions over arrays (numpy, scikit-learn,
scipy); nothing here knows where the vectors came from.

Conventions: a dictionary is an array (n_atoms, d) of unit rows; codes are (n, n_atoms) with at most
``nonzeros`` nonzero entries per row (orthogonal matching pursuit, as in the paper's sparse-coding premise: a word
is a few features plus noise). Atoms have no sign (an atom and its negative explain the same words), so every
atom-to-direction comparison uses |cos|.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from threadpoolctl import threadpool_limits

# ----------------------------------------------------------------------------------------------- fitting

RESTARTS = 3  # seeded starts per dictionary fit (the lowest reconstruction error is kept)
# (rows, n_atoms, nonzero_grid, seed=, max_iter=) -> {nonzeros: dictionary}
Learner = Callable[..., dict[int, np.ndarray]]


def unit_rows(a: np.ndarray) -> np.ndarray:
    """Rows scaled to norm 1 (a zero row stays zero)."""
    a = np.asarray(a, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return np.divide(a, norms, out=np.zeros_like(a), where=norms > 0)


def sparse_codes(x: np.ndarray, dictionary: np.ndarray, nonzeros: int) -> np.ndarray:
    """Codes of the rows of ``x`` on ``dictionary`` (unit rows) with at most ``nonzeros`` atoms each: orthogonal
    matching pursuit, batched over rows (numpy). It equals scikit-learn's ``sparse_encode(..., algorithm="omp")``
    (tests/test_dictionary.py checks it); written out because that call took ~2 s per 360 rows on 2 shared cores,
    and dictionary learning calls it twice per iteration."""
    x = np.asarray(x, dtype=np.float64)
    dic = np.asarray(dictionary, dtype=np.float64)
    n, k = len(x), min(int(nonzeros), len(dic))
    gram = dic @ dic.T
    corr0 = x @ dic.T
    chosen = np.zeros((n, 0), dtype=np.int64)
    coefs = np.zeros((n, 0))
    resid = x.copy()
    rows = np.arange(n)
    active = np.ones(n, dtype=bool)
    for t in range(k):
        corr = np.abs(resid @ dic.T)
        if t:
            corr[rows[:, None], chosen] = -np.inf
        # A row already reconstructed (residual ~0 relative to the row) stops, as scikit-learn's OMP does.
        active &= (resid ** 2).sum(axis=1) > 1e-20 * np.maximum((x ** 2).sum(axis=1), 1e-300)
        pick = corr.argmax(axis=1)
        if not active.any():
            break
        new = np.where(active, pick, -1)
        chosen = np.concatenate([chosen, new[:, None]], axis=1)
        idx = np.where(chosen < 0, 0, chosen)
        g = gram[idx[:, :, None], idx[:, None, :]]
        mask = chosen >= 0
        g = np.where(mask[:, :, None] & mask[:, None, :], g, 0.0) + np.eye(t + 1)[None] * (~mask)[:, :, None]
        rhs = np.where(mask, np.take_along_axis(corr0, idx, axis=1), 0.0)
        coefs = np.linalg.solve(g, rhs[:, :, None])[:, :, 0] * mask
        resid = x - np.einsum("nt,ntd->nd", coefs, dic[idx])
    out = np.zeros((n, len(dic)))
    for t in range(chosen.shape[1]):
        ok = chosen[:, t] >= 0
        out[rows[ok], chosen[ok, t]] = coefs[ok, t]
    return out


def learn_dictionary(x: np.ndarray, n_atoms: int, nonzeros: int, *, seed: int = 0, max_iter: int = 30,
                     tol: float = 1e-5, restarts: int = RESTARTS) -> np.ndarray:
    """A dictionary of ``n_atoms`` unit atoms learned on the rows of ``x`` with at most ``nonzeros`` atoms per row:
    :func:`learn_dictionaries` at that one sparsity."""
    return learn_dictionaries(x, n_atoms, [nonzeros], seed=seed, max_iter=max_iter, tol=tol,
                              restarts=restarts)[int(nonzeros)]


def learn_dictionaries(x: np.ndarray, n_atoms: int, nonzero_grid: Sequence[int], *, seed: int = 0,
                       max_iter: int = 30, tol: float = 1e-5, restarts: int = RESTARTS) -> dict[int, np.ndarray]:
    """For each sparsity in ``nonzero_grid``, the best (lowest reconstruction error) of ``restarts`` fits, each fit
    run by sparsity continuation: from ``n_atoms`` rows drawn with the restart's seed, :func:`fit_dictionary` at 1
    atom per row, its result the start of the fit at 2, and so on up to the largest sparsity asked for.

    Why continuation: started cold at 3 atoms per row, alternating minimisation settles where every row spends its
    atoms on some basis of the span its features share (on the default synthetic world: a learned error above the
    true dictionary's, 6 of 8 true atoms found); at 1 atom per row the fit is a clustering whose centres are the
    frequent features, and each further atom per row refines them. Why restarts: a start that puts two atoms on
    one feature can stay there; the lowest error over starts is kept."""
    x = np.asarray(x, dtype=np.float64)
    ks = sorted({int(k) for k in nonzero_grid})
    rng = np.random.default_rng(seed)
    best: dict[int, tuple[float, np.ndarray]] = {}
    with threadpool_limits(limits=1, user_api="blas"):  # small products: threads only add overhead here
        for _ in range(max(1, restarts)):
            d = None
            start_seed = int(rng.integers(2**31))
            for k in range(1, ks[-1] + 1):
                d = fit_dictionary(x, n_atoms, k, seed=start_seed, max_iter=max_iter, tol=tol, start=d)
                if k in ks:
                    err = relative_error(x, d, k)
                    if k not in best or err < best[k][0]:
                        best[k] = (err, d)
    return {k: best[k][1] for k in ks}


def fit_dictionary(x: np.ndarray, n_atoms: int, nonzeros: int, *, seed: int = 0, max_iter: int = 30,
                   tol: float = 1e-5, start: np.ndarray | None = None) -> np.ndarray:
    """One fit from one start: ``n_atoms`` unit atoms, sorted by how many rows use them.

    The method of optimal directions (Engan et al. 1999): alternate OMP codes with at most ``nonzeros`` atoms per
    row (:func:`sparse_codes`) and the least-squares dictionary for those codes; an atom no row uses, or a near
    copy of another, is restarted at the worst-reconstructed row. Started from ``start`` or else from ``n_atoms``
    distinct rows drawn with ``seed``; stops when the relative error improves by less than ``tol``. Why not
    scikit-learn's MiniBatchDictionaryLearning: with its L1 objective (alpha 0.1) it recovered 2 of 16 planted
    atoms on 2-sparse data of which this recovers all 16 (measured once while writing this), and it was slower."""
    x = np.asarray(x, dtype=np.float64)
    if not 1 <= n_atoms <= len(x):
        raise ValueError(f"n_atoms={n_atoms}: accepted 1..{len(x)} (the number of rows)")
    rng = np.random.default_rng(seed)
    if start is None:
        d = unit_rows(x[rng.choice(len(x), n_atoms, replace=False)]
                      + 1e-9 * rng.standard_normal((n_atoms, x.shape[1])))
    else:
        d = unit_rows(start)
    energy, last = float((x ** 2).sum()), np.inf
    for _ in range(max_iter):
        codes = sparse_codes(x, d, nonzeros)
        # The error of the current dictionary, from the codes just computed (one OMP pass per iteration).
        err = float(((x - codes @ d) ** 2).sum()) / energy
        if last - err < tol:
            break
        last = err
        # The least-squares dictionary for the codes, from the small normal equations (atoms x atoms) with a tiny
        # ridge, so an atom no row uses gets a zero row (restarted below) instead of a singular system: lstsq on
        # the rows took ~40x longer.
        gram_c = codes.T @ codes
        ridge = 1e-10 * max(float(np.trace(gram_c)), 1e-300)
        d = unit_rows(np.linalg.solve(gram_c + ridge * np.eye(n_atoms), codes.T @ x))
        # An atom no row uses, or a near copy of another, is restarted at a badly reconstructed row (as K-SVD
        # does): without this, two atoms that started near one true atom stay stuck there.
        gram = np.abs(d @ d.T)
        np.fill_diagonal(gram, 0)
        copies = np.flatnonzero(np.triu(gram > 0.95).any(axis=0))
        stale = np.union1d(np.flatnonzero(np.linalg.norm(d, axis=1) < 0.5), copies)
        if len(stale):
            resid = ((x - codes @ d) ** 2).sum(axis=1)
            d[stale] = unit_rows(x[np.argsort(-resid, kind="stable")[:len(stale)]])
    use = (np.abs(sparse_codes(x, d, nonzeros)) > 0).sum(axis=0)
    return d[np.argsort(-use, kind="stable")]


def relative_error(x: np.ndarray, dictionary: np.ndarray, nonzeros: int) -> float:
    """||x - codes D||_F^2 / ||x||_F^2 of the rows of ``x`` coded on ``dictionary``."""
    x = np.asarray(x, dtype=np.float64)
    recon = sparse_codes(x, dictionary, nonzeros) @ dictionary
    return float(((x - recon) ** 2).sum() / (x ** 2).sum())


@dataclass(frozen=True)
class SizeChoice:
    """The held-out reconstruction curve over candidate sizes and the size chosen from it."""

    rows: list[dict[str, Any]]  # one per (atoms, nonzeros): held-out relative error, its standard error
    atoms: int
    nonzeros: int
    rule: str


def choose_size(x: np.ndarray, atom_grid: Sequence[int], nonzero_grid: Sequence[int], *, seed: int = 0,
                test_fraction: float = 0.25, max_iter: int = 30, learner: Learner | None = None) -> SizeChoice:
    """Fit every (atoms, nonzeros) on a seeded 75% of the rows, measure the relative reconstruction error on the
    other 25%, and choose by the one-standard-error rule: the smallest model (fewest nonzeros, then fewest atoms)
    whose held-out error is within one standard error of the best. Why not the minimum: more atoms and more
    nonzeros never fit worse, so the minimum is always the largest model. ``learner`` fits the dictionaries
    (default :func:`learn_dictionaries`; any function of the same signature, e.g. a sparse autoencoder)."""
    learner = learner or learn_dictionaries
    x = np.asarray(x, dtype=np.float64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_test = max(1, int(round(test_fraction * len(x))))
    test, train = x[order[:n_test]], x[order[n_test:]]
    rows = []
    for atoms in atom_grid:
        dics = learner(train, atoms, nonzero_grid, seed=seed, max_iter=max_iter)
        for k in nonzero_grid:
            d = dics[int(k)]
            recon = sparse_codes(test, d, k) @ d
            per_row = ((test - recon) ** 2).sum(axis=1) / (test ** 2).sum(axis=1)
            rows.append({"atoms": int(atoms), "nonzeros": int(k), "heldout_error": float(per_row.mean()),
                         "heldout_se": float(per_row.std(ddof=1) / np.sqrt(len(per_row))) if len(per_row) > 1
                         else 0.0, "n_train": len(train), "n_test": len(test)})
    best = min(rows, key=lambda r: r["heldout_error"])
    bound = best["heldout_error"] + best["heldout_se"]
    chosen = min((r for r in rows if r["heldout_error"] <= bound), key=lambda r: (r["nonzeros"], r["atoms"]))
    for r in rows:
        r["chosen"] = r is chosen
    return SizeChoice(rows, chosen["atoms"], chosen["nonzeros"],
                      "one-standard-error rule on held-out relative reconstruction error (25% of rows held out): "
                      "the fewest nonzeros, then atoms, within one SE of the best")


# ------------------------------------------------------------------------------------------------ recovery


def abs_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|cos| between every row of ``a`` and every row of ``b``: shape (len(a), len(b))."""
    return np.abs(unit_rows(a) @ unit_rows(b).T)


def matched_cosines(true: np.ndarray, learned: np.ndarray) -> np.ndarray:
    """For each true atom, |cos| with the learned atom it is paired with by a one-to-one (Hungarian) matching that
    maximises the total |cos|; a true atom left without a partner (fewer learned atoms) gets 0."""
    c = abs_cosines(true, learned)
    rows, cols = linear_sum_assignment(-c)
    out = np.zeros(len(true))
    out[rows] = c[rows, cols]
    return out


def amari_distance(true: np.ndarray, learned: np.ndarray) -> float:
    """Amari distance between a true and a learned dictionary, in [0, 1]; 0 when the learned atoms are the true
    ones up to order, sign and scale.

    P = learned pinv(true) (n x m) expresses each learned atom in the true atoms; with C = |P|,
    (1 / 2) * [ sum_i (sum_j C_ij / max_j C_ij - 1) / (n (m - 1)) + sum_j (sum_i C_ij / max_i C_ij - 1) / (m (n - 1)) ]
    (each half normalised so a rectangular P stays in [0, 1]). Why P and not the |cos| matrix: true atoms of a
    real dictionary are not orthogonal, so the |cos| matrix of a perfect recovery is not a permutation."""
    t, lrn = unit_rows(true), unit_rows(learned)
    c = np.abs(lrn @ np.linalg.pinv(t))
    n, m = c.shape
    rows = (c.sum(axis=1) / c.max(axis=1) - 1).sum() / (n * max(m - 1, 1))
    cols = (c.sum(axis=0) / c.max(axis=0) - 1).sum() / (m * max(n - 1, 1))
    return float((rows + cols) / 2)


# --------------------------------------------------------------------------------------- atoms vs concepts


def random_rotation(d: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-random orthogonal d x d matrix (QR of a Gaussian matrix with the signs of R's diagonal fixed)."""
    return random_frame(d, d, rng)


def random_frame(d: int, r: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-random d x r matrix with orthonormal columns (the first r columns of a Haar rotation)."""
    q, t = np.linalg.qr(rng.standard_normal((d, r)))
    return q * np.sign(np.diag(t))


def _row_basis(a: np.ndarray) -> np.ndarray:
    """An orthonormal basis (d x rank) of the rows' span."""
    _, sv, vt = np.linalg.svd(a, full_matrices=False)
    keep = sv > sv.max() * max(a.shape) * np.finfo(float).eps if sv.size else sv > 0
    return vt[keep].T


def best_atom_cosines(directions: np.ndarray, dictionary: np.ndarray) -> np.ndarray:
    """For each concept direction, |cos| with its best-matching atom (atoms may be reused across concepts)."""
    return abs_cosines(directions, dictionary).max(axis=1)


def atoms_against_concepts(directions: np.ndarray, dictionary: np.ndarray, *, rotations: int = 200,
                           seed: int = 0, permuted: Sequence[np.ndarray] = ()) -> dict[str, Any]:
    """Each concept direction's best-atom |cos|, against two nulls.

    - Rotation (``rotations`` draws): the same dictionary randomly rotated (the same atoms with the same Gram
      matrix, i.e. the same spectrum, pointing in random directions). Weak on its own: real atoms lie in the data's
      subspace and rotated ones do not, so directions of any word groups beat it.
    - Label permutation (``permuted``: concept directions computed with labels shuffled across words): the same
      data and atoms, only the concept assignment broken. This is the null that says whether atoms follow concepts.

    Per-concept value, rotation-null mean and one-sided p; the mean over concepts with each null's mean, 95% band
    and p (the smallest p is 1/(draws+1))."""
    rng = np.random.default_rng(seed)
    value = best_atom_cosines(directions, dictionary)
    # D R^T for a Haar rotation R without the d x d matrix: with U an orthonormal basis of the atoms' span,
    # D R^T = (D U)(R U)^T and R U is a Haar-random d x r frame (QR of d x r, r = rank <= atoms, not of d x d).
    with threadpool_limits(limits=1, user_api="blas"):  # small SVD and QRs: BLAS threads only contend here
        basis = _row_basis(dictionary)
        spanned = dictionary @ basis
        null = np.stack([best_atom_cosines(directions, spanned @ random_frame(dictionary.shape[1], basis.shape[1],
                                                                               rng).T) for _ in range(rotations)])
    p = (1 + (null >= value[None, :]).sum(axis=0)) / (rotations + 1)
    mean_null = null.mean(axis=1)
    out = {"per_concept": value, "per_concept_null": null.mean(axis=0), "per_concept_p": p,
           "mean": float(value.mean()), "mean_null": float(mean_null.mean()),
           "mean_null_band": [float(np.quantile(mean_null, 0.025)), float(np.quantile(mean_null, 0.975))],
           "mean_p": float((1 + (mean_null >= value.mean()).sum()) / (rotations + 1)), "rotations": rotations,
           "label_null": None, "label_null_band": [None, None], "label_p": None}
    if len(permuted):
        means = np.array([best_atom_cosines(d, dictionary).mean() for d in permuted])
        out.update({"label_null": float(means.mean()),
                    "label_null_band": [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))],
                    "label_p": float((1 + (means >= value.mean()).sum()) / (len(means) + 1))})
    return out


def atom_concepts(directions: np.ndarray, dictionary: np.ndarray) -> np.ndarray:
    """Index of the concept direction each atom is closest to (by |cos|)."""
    return abs_cosines(dictionary, directions).argmax(axis=1)


def atom_purity(codes: np.ndarray, labels: np.ndarray, top: int = 10) -> np.ndarray:
    """Per atom: the share of its ``top`` highest-|loading| words that carry the most common concept among them
    (NaN for an atom no word uses)."""
    labels = np.asarray(labels)
    out = np.full(codes.shape[1], np.nan)
    for j in range(codes.shape[1]):
        load = np.abs(codes[:, j])
        used = np.flatnonzero(load > 0)
        if len(used) == 0:
            continue
        pick = used[np.argsort(-load[used], kind="stable")[:top]]
        _, counts = np.unique(labels[pick], return_counts=True)
        out[j] = counts.max() / len(pick)
    return out


def sense_recall(codes: np.ndarray, senses: Sequence[Sequence[int]], atom_concept: np.ndarray) -> np.ndarray:
    """Per word: the share of its gold senses (concept indices) found among the concepts of its ``len(senses)``
    largest-|loading| atoms."""
    out = np.zeros(len(senses))
    for i, gold in enumerate(senses):
        k = len(gold)
        top = np.argsort(-np.abs(codes[i]), kind="stable")[:k]
        found = {int(atom_concept[j]) for j in top if codes[i, j] != 0}
        out[i] = len(found & {int(g) for g in gold}) / k
    return out


def bootstrap_mean(values: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """Percentile 95% interval of the mean of ``values`` resampled with replacement (the unit: one value)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2 or n_boot < 1:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(axis=1)
    return (float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975)))


def sense_loading(codes: np.ndarray, atom_concept: np.ndarray, senses: Sequence[int]) -> np.ndarray:
    """Per row: the share of its code's |loading| on atoms whose closest concept is ``senses[row]`` (0 for an
    all-zero code)."""
    mass = np.abs(codes)
    own = (np.asarray(atom_concept)[None, :] == np.asarray(senses)[:, None])
    total = mass.sum(axis=1)
    return np.divide((mass * own).sum(axis=1), total, out=np.zeros(len(codes)), where=total > 0)
