"""Geometry engine on planted geometry: every metric recovers the planted value; nulls are right under shuffling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mcicl.analysis.engine import measures as g
from mcicl.analysis.engine.nulls import (
    bootstrap_units,
    isotropic_abs_cos,
    isotropic_abs_cos_asymptotic,
    permutation_p_value,
    shuffle_coordinates,
)
from mcicl.analysis.engine.polysemy import parse_senses, polysemy_analysis, sparse_senses
from mcicl.analysis.engine.probes import control_labels, linear_probe


def planted(k: int = 6, m: int = 40, d: int = 128, sigma: float = 1.0, seed: int = 0, means: np.ndarray | None = None):
    """Words x = mu_c + sigma z, ||mu_c|| = 1, z ~ N(0, I/d): within cos ~ 1/(1+sigma^2), cross ~ cos(mu_a, mu_b)."""
    rng = np.random.default_rng(seed)
    if means is None:
        means = np.linalg.qr(rng.normal(size=(d, k)))[0].T  # orthonormal concept means
    X = np.repeat(means, m, axis=0) + sigma * rng.normal(size=(k * m, d)) / math.sqrt(d)
    labels = np.repeat([f"c{i}" for i in range(k)], m)
    return X, labels, means


def test_within_and_cross_cosine_recover_planted_values():
    X, labels, _ = planted(sigma=1.0)
    cos = g.concept_cosines(X, labels)
    assert cos.within_mean == pytest.approx(0.5, abs=0.03)  # 1 / (1 + sigma^2)
    assert cos.cross_mean == pytest.approx(0.0, abs=0.02)
    X2, labels2, _ = planted(sigma=0.5, seed=1)
    assert g.concept_cosines(X2, labels2).within_mean == pytest.approx(0.8, abs=0.03)


def test_concept_directions_recover_planted_angles():
    d, theta = 64, np.deg2rad(60)
    rng = np.random.default_rng(3)
    basis = np.linalg.qr(rng.normal(size=(d, 3)))[0].T
    means = np.stack([basis[0], np.cos(theta) * basis[0] + np.sin(theta) * basis[1], basis[2]])
    X, labels, _ = planted(k=3, m=200, d=d, sigma=0.5, means=means, seed=3)
    for method in ("mean",):
        dirs, names = g.concept_directions(X, labels, method)
        A = g.direction_abs_cos(dirs)
        assert A[0, 1] == pytest.approx(0.5, abs=0.05), method  # cos 60 degrees
        assert A[0, 2] == pytest.approx(0.0, abs=0.05) and A[1, 2] == pytest.approx(0.0, abs=0.05)
    with pytest.raises(ValueError, match="method='pca'.*accepted: mean, diff, lda"):
        g.concept_directions(X, labels, "pca")


def test_lda_undoes_anisotropic_noise_that_fools_difference_of_means():
    # Two concepts separated along e0, with strong noise along e0+e1: diff-of-means tilts, LDA does not.
    rng = np.random.default_rng(4)
    n, d = 400, 8
    noise = rng.normal(size=(2 * n, d)) * 0.2
    noise[:, :2] += rng.normal(size=(2 * n, 1)) * 3.0  # a shared nuisance direction (1, 1, 0, ...)
    y = np.repeat([0, 1], n)
    X = noise.copy()
    X[:, 0] += np.where(y == 1, 1.0, -1.0)
    X[:, 1] += 0.0
    labels = np.where(y == 1, "a", "b")
    lda, _ = g.concept_directions(X, labels, "lda")
    diff, _ = g.concept_directions(X, labels, "diff")
    # The optimal discriminant is proportional to Sigma^-1 (1, 0, ...) ~ (1, -1, 0, ...)/sqrt 2.
    target = np.zeros(d)
    target[:2] = [1, -1]
    target /= np.linalg.norm(target)
    assert abs(lda[0] @ target) > 0.95
    assert abs(diff[0] @ target) < 0.8


def test_principal_angles_match_scipy_and_planted_subspaces():
    rng = np.random.default_rng(5)
    d, m = 32, 30
    E = np.linalg.qr(rng.normal(size=(d, 6)))[0].T
    # Concept a spans (e0, e1), b spans (e1, e2): they share e1 (angle 0); c spans (e3, e4): orthogonal to a.
    spans = {"a": E[[0, 1]], "b": E[[1, 2]], "c": E[[3, 4]]}
    X = np.concatenate([rng.normal(size=(m, 2)) @ s for s in spans.values()])
    labels = np.repeat(list(spans), m)
    C = g.subspace_max_cos(X, labels, rank=2)
    assert C[0, 1] == pytest.approx(1.0, abs=1e-6)
    assert C[0, 2] == pytest.approx(0.0, abs=1e-6)
    bases, _ = g.concept_subspaces(X, labels, rank=2)
    angles = g.principal_angles(bases[0], bases[1])
    assert np.cos(angles.min()) == pytest.approx(C[0, 1], abs=1e-6)
    assert np.cos(g.principal_angles(bases[1], bases[2]).min()) == pytest.approx(C[1, 2], abs=1e-6)


def test_subspaces_one_by_one_equal_the_batched_computation(monkeypatch):
    rng = np.random.default_rng(16)
    X = rng.normal(size=(90, 12))
    labels = np.repeat(["a", "b", "c"], [20, 30, 40])  # unequal sizes; c has more rows than d
    batched = g.subspace_max_cos(X, labels, rank=3)
    monkeypatch.setattr(g, "BATCHED_SUBSPACE_LIMIT", 0)
    assert np.allclose(g.subspace_max_cos(X, labels, rank=3), batched, atol=1e-8)


def test_hierarchy_cosine_recovers_planted_orthogonality():
    rng = np.random.default_rng(6)
    d, m = 64, 300
    e = np.linalg.qr(rng.normal(size=(d, 3)))[0].T
    parent, child_orth, child_par = e[0], e[0] + e[1], 2 * e[0]
    X = np.concatenate([mu + 0.3 * rng.normal(size=(m, d)) / 8 for mu in (parent, child_orth, child_par)])
    labels = np.repeat(["animal", "mammal", "bigger"], m)
    cos = g.hierarchy_cosines(X, labels, {"mammal": "animal", "bigger": "animal", "unknown": "animal"})
    assert cos[("mammal", "animal")] == pytest.approx(0.0, abs=0.05)
    assert cos[("bigger", "animal")] == pytest.approx(1.0, abs=0.05)
    assert len(cos) == 2  # edges naming concepts absent from the labels are ignored


def test_heldout_projection_auc_planted_and_chance():
    X, labels, _ = planted(sigma=0.8)
    auc = g.heldout_projection_auc(X, labels)
    assert min(auc.values()) > 0.95
    noise = np.random.default_rng(7).normal(size=X.shape)
    assert np.mean(list(g.heldout_projection_auc(noise, labels).values())) == pytest.approx(0.5, abs=0.1)


def test_whitening_maps_reference_covariance_to_identity_and_recovers_cosines():
    rng = np.random.default_rng(8)
    d = 16
    A = rng.normal(size=(d, d)) * np.geomspace(0.3, 3, d)  # a strongly anisotropic linear map
    reference = rng.normal(size=(5000, d)) @ A + 3.0
    w = g.whitener(reference)
    assert np.allclose(np.cov(w(reference), rowvar=False), np.eye(d), atol=1e-8)
    # Planted isotropic geometry seen through A: whitening by the reference covariance restores it.
    X, labels, _ = planted(k=4, m=100, d=d, sigma=0.3, seed=8)
    Y = X @ A + 3.0
    raw = g.concept_cosines(g.prepare(Y, labels, center_vectors=False), labels).cross_mean
    whitened = g.concept_cosines(g.prepare(Y, labels, whiten=reference), labels).cross_mean
    assert abs(whitened) < 0.05 < abs(raw)
    with pytest.raises(ValueError, match="d=16 but vectors have d=3"):
        g.prepare(Y[:, :3], labels, whiten=w)


def test_signs_align_plus_minus_words_of_a_concept():
    X, labels, _ = planted(k=4, m=50, d=64, sigma=0.5, seed=9)
    signs = np.tile(np.repeat([1, -1], 25), 4)
    Xs = X * signs[:, None]  # the synthetic dictionary's +/- words: opposite directions, one concept
    raw = g.concept_cosines(g.prepare(Xs, labels, center_vectors=False), labels).within_mean
    aligned = g.concept_cosines(g.prepare(Xs, labels, center_vectors=False, signs=signs), labels).within_mean
    assert abs(raw) < 0.05 and aligned == pytest.approx(0.8, abs=0.05)


def test_isotropic_baseline_matches_monte_carlo():
    rng = np.random.default_rng(10)
    for d in (8, 64, 1024):
        u, v = g.unit_rows(rng.normal(size=(20000, d))), g.unit_rows(rng.normal(size=(20000, d)))
        mc = np.abs(np.einsum("nd,nd->n", u, v)).mean()
        assert isotropic_abs_cos(d) == pytest.approx(mc, rel=0.03)
    assert isotropic_abs_cos(4096) == pytest.approx(isotropic_abs_cos_asymptotic(4096), rel=1e-3)


def test_summary_on_planted_geometry_is_significant_with_sane_nulls():
    X, labels, means = planted(k=6, m=25, d=64, sigma=1.0, seed=11)
    parents = {"c1": "c0"}
    s = g.geometry_summary(X, labels, n_permutations=100, n_bootstrap=200, n_shuffles=5, seed=0,
                           center_vectors=False, parents=parents, expensive_permutations=30, lda_permutations=5)
    assert set(g.STATISTICS) == set(s)
    w, c = s["within_concept_cosine"], s["cross_concept_cosine"]
    assert w.value == pytest.approx(0.5, abs=0.05) and w.p_value < 0.01 and w.p_value == pytest.approx(1 / 101)
    assert c.p_value < 0.01 and c.alternative == "less"
    # Under shuffled labels, within and cross cosines both become the average cosine over all pairs.
    overall = g.unit_rows(X) @ g.unit_rows(X).T
    pair_mean = overall[~np.eye(len(X), dtype=bool)].mean()
    assert w.null_mean == pytest.approx(pair_mean, abs=0.01)
    assert c.null_mean == pytest.approx(pair_mean, abs=0.01)
    # Shuffled coordinates destroy the shared means: within cosine falls to ~0.
    assert abs(w.shuffled_mean) < 0.05
    assert w.ci_low <= w.value <= w.ci_high and w.effect_size > 5
    assert s["heldout_projection_auc"].value > 0.95 and s["heldout_projection_auc"].n_permutations == 30
    assert s["lda_direction_abs_cos"].n_permutations == 5
    d = s["concept_direction_abs_cos"]
    assert d.isotropic == pytest.approx(isotropic_abs_cos(64))
    as_json = g.summary_dict(s)
    assert as_json["within_concept_cosine"]["null"] == w.null_mean and "p_value" in as_json["cross_concept_cosine"]


def test_null_is_uniform_when_labels_carry_no_geometry():
    # Isotropic vectors, arbitrary labels: the permutation p-value of within - cross is ~ uniform, and the
    # concept-direction |cos| null sits at the isotropic baseline (mean directions, no centring).
    rng = np.random.default_rng(12)
    labels = np.repeat(["a", "b", "c", "d"], 10)
    p_values = []
    for rep in range(40):
        X = rng.normal(size=(40, 16))
        s = g.geometry_summary(X, labels, n_permutations=40, n_bootstrap=0, n_shuffles=0, seed=rep,
                               center_vectors=False, lda=False, expensive_permutations=1)
        p_values.append(s["within_minus_cross"].p_value)
    p_values = np.array(p_values)
    assert 0.02 <= np.mean(p_values < 0.25) <= 0.5
    assert 0.35 <= p_values.mean() <= 0.65
    X = rng.normal(size=(400, 32))
    s = g.geometry_summary(X, np.repeat([f"c{i}" for i in range(8)], 50), n_permutations=50, n_bootstrap=0,
                           n_shuffles=3, center_vectors=False, lda=False, expensive_permutations=1)
    mean_dirs = s["mean_direction_abs_cos"]
    assert mean_dirs.null_mean == pytest.approx(isotropic_abs_cos(32), rel=0.15)
    assert mean_dirs.value == pytest.approx(isotropic_abs_cos(32), rel=0.35)


def test_nulls_helpers():
    null = np.arange(99, dtype=float)
    assert permutation_p_value(1000.0, null, "greater") == pytest.approx(1 / 100)
    assert permutation_p_value(-5.0, null, "less") == pytest.approx(1 / 100)
    assert permutation_p_value(49.0, null, "two-sided") == pytest.approx(1.0)
    with pytest.raises(ValueError, match="alternative='bigger'"):
        permutation_p_value(1.0, null, "bigger")
    rng = np.random.default_rng(0)
    lo, hi = bootstrap_units(np.r_[np.zeros(50), np.ones(50)], 500, rng)
    assert 0.35 < lo < 0.5 < hi < 0.65
    M = np.full((5, 5), 0.3)
    assert bootstrap_units(M, 100, rng) == pytest.approx((0.3, 0.3))
    X = rng.normal(size=(5, 7))
    S = shuffle_coordinates(X, rng)
    assert np.allclose(np.sort(S, axis=1), np.sort(X, axis=1)) and not np.allclose(S, X)


def test_bad_inputs_name_the_problem():
    X = np.zeros((4, 3))
    with pytest.raises(ValueError, match="labels has 3 entries but vectors has 4 rows"):
        g.concept_cosines(X, ["a", "a", "b"])
    with pytest.raises(ValueError, match="at least 2 concepts"):
        g.concept_cosines(X, ["a"] * 4)
    with pytest.raises(ValueError, match=r"\['b'\] have fewer than 2"):
        g.concept_cosines(X, ["a", "a", "a", "b"])
    with pytest.raises(ValueError, match="non-finite"):
        g.concept_cosines(np.full((4, 3), np.nan), ["a", "a", "b", "b"])
    with pytest.raises(ValueError, match="2-D"):
        g.concept_cosines(np.zeros(4), ["a", "a", "b", "b"])
    with pytest.raises(ValueError, match="n_permutations=0"):
        g.geometry_summary(np.eye(4), ["a", "a", "b", "b"], n_permutations=0)


def test_polysemy_planted_senses_are_found():
    X, labels, means = planted(k=6, m=30, d=64, sigma=0.5, seed=13)
    rng = np.random.default_rng(13)
    gold = [["c0", "c1"], ["c2", "c4"], ["c3", "c5"], ["c1", "c2"]]
    P = np.stack([means[int(a[1])] + means[int(b[1])] for a, b in gold]) + 0.1 * rng.normal(size=(4, 64)) / 8
    words = [f"w{i}" for i in range(len(X))]
    res = polysemy_analysis(X, labels, P, ["p0", "p1", "p2", "p3"], ["|".join(s) for s in gold], words=words,
                            center_vectors=False)
    assert res.summary["mean_recall"] == 1.0 and res.summary["mean_precision"] == 1.0
    assert res.summary["fraction_senses_significant"] == 1.0
    assert all(r <= 2 for w in res.words for r in w.sense_rank.values())
    assert res.summary["chance_precision"] == pytest.approx(2 / 6)
    row = res.rows()[0]
    assert row["senses"] == "c0|c1" and row["precision"] == 1.0
    # A single-sense control word is found with its one concept and no other.
    coef = sparse_senses(means[3], g.unit_rows(means), method="lasso")
    assert np.flatnonzero(coef > 0).tolist() == [3]
    coef = sparse_senses(means[3] + means[0], g.unit_rows(means), method="omp", n_nonzero=2)
    assert sorted(np.flatnonzero(coef > 0).tolist()) == [0, 3]
    with pytest.raises(ValueError, match=r"senses \['nope'\] are not concepts"):
        polysemy_analysis(X, labels, P[:1], ["p0"], ["c0|nope"])
    assert parse_senses(["a|b", ["c", "d"], "a|a|b"]) == [["a", "b"], ["c", "d"], ["a", "b"]]


def test_polysemy_of_words_without_those_senses_is_at_chance():
    # Words of concepts c2..c5 (fresh draws) claimed to mean c0 and c1: the null of other-concept words holds.
    X, labels, means = planted(k=6, m=30, d=64, sigma=0.5, seed=14)
    P, plab, _ = planted(k=6, m=10, d=64, sigma=0.5, seed=15, means=means)
    P = P[np.isin(plab, ["c2", "c3", "c4", "c5"])]
    res = polysemy_analysis(X, labels, P, [f"p{i}" for i in range(len(P))], [["c0", "c1"]] * len(P),
                            center_vectors=False)
    assert res.summary["fraction_senses_significant"] < 0.15
    assert res.summary["mean_recall"] < 0.2


def test_probe_is_selective_on_planted_concepts_and_not_on_noise():
    X, labels, _ = planted(k=5, m=30, d=32, sigma=1.0, seed=15)
    r = linear_probe(X, labels, seed=0)
    assert r.accuracy > 0.9 and r.control_accuracy < 0.5 and r.selectivity > 0.5
    assert r.n_test == 45 and r.n_classes == 5
    noise = linear_probe(np.random.default_rng(15).normal(size=X.shape), labels, seed=0)
    assert noise.accuracy < 0.5
    ctrl = control_labels(["a", "a", "b", "b", "a"], ["x", "y", "z", "x", "w"], np.random.default_rng(0))
    assert ctrl[0] == ctrl[3]  # one control label per word type
