"""Controls of the geometry (analysis/engine/controls.py and the baselines of probing/geometry.py), each checked
against a value computed another way: numpy by hand, or a constructed case whose answer is known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mcicl.analysis.engine import measures as g
from mcicl.analysis.engine.controls import (
    benjamini_hochberg,
    centring_identity,
    direction_pair_test,
    heldout_concept_probe,
    paired_difference,
    permute_within,
    strata_codes,
)


def planted(k=8, m=12, d=64, sigma=0.5, seed=0):
    rng = np.random.default_rng(seed)
    means = np.linalg.qr(rng.normal(size=(d, k)))[0].T
    X = np.repeat(means, m, axis=0) + sigma * rng.normal(size=(k * m, d)) / math.sqrt(d)
    return X, np.repeat(np.arange(k), m)


# ------------------------------------------------------------------------------------ paired difference
def test_paired_difference_is_the_difference_of_unit_means_with_a_concept_interval():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=10), rng.normal(size=10)
    d = paired_difference(a, b, 500, np.random.default_rng(1))
    assert d.difference == pytest.approx(a.mean() - b.mean()) and d.baseline_value == pytest.approx(b.mean())
    # by hand: the same concept resamples for both spaces, percentile interval of the mean difference
    idx = np.random.default_rng(1).integers(0, 10, size=(500, 10))
    boots = (a - b)[idx].mean(axis=1)
    assert (d.ci_low, d.ci_high) == pytest.approx((np.quantile(boots, 0.025), np.quantile(boots, 0.975)))
    # a baseline equal to the model differs by exactly 0; a constant shift by exactly that shift
    same = paired_difference(a, a, 200, np.random.default_rng(2))
    assert (same.difference, same.ci_low, same.ci_high) == (0.0, 0.0, 0.0)
    A = rng.normal(size=(6, 6))
    shifted = paired_difference(A + 0.3, A, 200, np.random.default_rng(3))
    assert shifted.difference == pytest.approx(0.3) and shifted.ci_low == pytest.approx(0.3)
    assert shifted.n == 15  # concept pairs


# ------------------------------------------------------------------------------------------ matched null
def test_permute_within_keeps_each_concepts_words_per_stratum():
    codes = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    strata = np.array([1, 1, 2, 1, 2, 2, 1, 3])
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = permute_within(codes, strata, rng)
        for s in np.unique(strata):
            assert sorted(p[strata == s]) == sorted(codes[strata == s])
    assert strata_codes(np.array([1, 2, 1]), np.array([0.0, 5.0, np.nan]), bins=2).tolist()[2] == 1 * 3 + 2


def test_matched_null_equals_the_observation_when_vectors_depend_on_token_count_only():
    # Words of 1, 2 or 3 tokens have one vector per token count; concepts differ only in their token counts, so
    # the plain permutation null is beaten (p at its floor) and the matched null is the observation itself.
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3, 16))
    tokens = np.array([1] * 8 + [2] * 2 + [3] * 2 + [1] * 2 + [2] * 8 + [3] * 2 + [1] * 2 + [2] * 2 + [3] * 8)
    labels = np.repeat(["a", "b", "c"], 12)
    X = base[tokens - 1]
    out = g.matched_null(X, labels, strata_codes(tokens), n_permutations=50, seed=0)
    w = out["within_concept_cosine"]
    # every matched draw is the observation (up to rounding), so the whole null band sits on it
    assert (w["null_low"], w["null"], w["null_high"]) == pytest.approx((w["value"],) * 3, abs=1e-12)
    plain = g.geometry_summary(X, labels, n_permutations=50, n_bootstrap=0, n_shuffles=0, lda=False,
                               expensive_permutations=1)
    assert plain["within_concept_cosine"].p_value == pytest.approx(1 / 51)


# --------------------------------------------------------------------------------------- centring identity
def test_centring_identity_is_exact_and_equals_brute_force_numpy():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 5)) + 2.0
    codes = np.repeat([0, 1, 2], [8, 10, 12])
    Xc = X - X.mean(axis=0)
    out = centring_identity(Xc, codes)
    U = Xc / np.linalg.norm(Xc, axis=1, keepdims=True)
    G = U @ U.T
    cross = codes[:, None] != codes[None, :]
    assert out["pooled_cross"] == pytest.approx(G[cross].mean())
    assert out["pooled_cross"] == pytest.approx(out["expected"] + out["residual"])
    within = np.array([G[np.ix_(codes == c, codes == c)][~np.eye((codes == c).sum(), dtype=bool)].mean()
                       for c in range(3)])
    n_c = np.bincount(codes)
    by_hand = -(30 + np.sum(n_c * (n_c - 1) * within)) / (30 ** 2 - np.sum(n_c ** 2))
    assert out["expected"] == pytest.approx(by_hand)


def test_centred_equal_norm_rows_have_cross_cosine_exactly_the_expectation():
    # Rows and their negatives, unit length: the mean is 0 and the unit rows sum to 0, so the identity is exact.
    rng = np.random.default_rng(1)
    half = rng.normal(size=(12, 6))
    half /= np.linalg.norm(half, axis=1, keepdims=True)
    X = np.vstack([half, -half])
    codes = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3] * 2)
    out = centring_identity(X, codes)
    G = X @ X.T
    assert out["residual"] == pytest.approx(0.0, abs=1e-12)
    assert G[codes[:, None] != codes[None, :]].mean() == pytest.approx(out["expected"])
    report = g.centring_report(X + 5.0, [str(c) for c in codes], n_permutations=10)
    assert report["centred_cross_pooled"] == pytest.approx(out["expected"])
    assert report["raw_cross"] > 0.5  # uncentred, the common offset dominates


# ------------------------------------------------------------------------------------------- pair test
def test_benjamini_hochberg_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted 0.005, 0.01, 0.03, 0.04 times 4/rank = 0.02, 0.02, 0.04, 0.04 (already monotone)
    assert benjamini_hochberg(p).tolist() == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert benjamini_hochberg(np.array([0.5, 0.01]))[1] == pytest.approx(0.02)
    # step-up: 0.01 * 3 = 0.03 would exceed 0.011 * 3 / 2 = 0.0165, so both take 0.0165
    assert benjamini_hochberg(np.array([0.01, 0.011, 0.5])).tolist() == pytest.approx([0.0165, 0.0165, 0.5])


def test_pair_test_finds_the_one_related_pair_and_p_is_one_when_the_null_equals_the_observation():
    # Ten orthonormal concept means, except concept 1 = 0.8 mu_0 + 0.6 mu_1 (unit norm, so no dominant variance
    # direction); 1000 permutations put p at 1/1001, which Benjamini-Hochberg over 45 pairs can still reject.
    rng = np.random.default_rng(2)
    means = np.linalg.qr(rng.normal(size=(64, 10)))[0].T
    means[1] = 0.8 * means[0] + 0.6 * means[1]
    codes = np.repeat(np.arange(10), 15)
    X = means[codes] + 0.5 * rng.normal(size=(150, 64)) / 8.0
    X = X - X.mean(axis=0)
    test = direction_pair_test(lambda c: g.direction_units(X, c, 10), codes, [f"c{i}" for i in range(10)], 1000,
                               np.random.default_rng(0))
    sig = test.summary()["significant_pairs"]
    assert [(r["concept_a"], r["concept_b"]) for r in sig] == [("c0", "c1")]
    assert test.p_values[0, 1] == pytest.approx(1 / 1001) and test.adjusted[0, 1] == pytest.approx(45 / 1001)
    constant = direction_pair_test(lambda c: np.ones((3, 3)), np.array([0, 1, 2]), ["a", "b", "c"], 9,
                                   np.random.default_rng(0))
    assert np.nanmax(np.abs(constant.p_values - 1.0)) == 0.0  # (1 + 9) / (1 + 9)


# -------------------------------------------------------------------------------- held-out-concept probe
def test_heldout_concept_probe_reads_chance_on_unseparable_concepts_and_not_on_separable_ones():
    X, codes = planted(k=8, m=12, sigma=0.5)
    good = heldout_concept_probe(X - X.mean(axis=0), codes, seed=0)
    assert good.chance == 0.5 and good.auc > 0.9 and good.accuracy > 0.75
    noise = np.random.default_rng(5).normal(size=X.shape)
    bad = heldout_concept_probe(noise, codes, seed=0)
    assert abs(bad.auc - 0.5) < 0.06 and abs(bad.accuracy - bad.chance) < 0.06


# ---------------------------------------------------------------------------------- baselines (tiny BERT)
CONCEPTS = {"animal": ["dog", "cat", "horse", "lion", "tiger"], "tool": ["hammer", "saw", "drill"],
            "vehicle": ["car", "bus", "train"], "colour": ["red", "blue", "green"]}


def test_embeddings_with_concept_structure_give_the_same_geometry_through_random_blocks(tmp_path, one_torch_thread):
    """A baseline that does produce the effect: the concept structure is planted in the embedding table, so the
    trained-embeddings-through-random-blocks baseline reproduces it (difference 0 at layer 0, small at the last
    layer), while fully random weights do not."""
    from mcicl.probing.extract_config import ExtractionConfig
    from mcicl.probing.geometry import measure_geometry
    from mcicl.probing.geometry_config import GeometryConfig
    from mcicl.probing.models import load_model
    from mcicl.probing.tiny import build_tiny_model

    folder = build_tiny_model("bert", tmp_path / "bert", hidden=64, layers=2)
    loaded = load_model(folder)
    tok = loaded.tokenizer
    emb = loaded.model.embeddings.word_embeddings.weight
    rng = np.random.default_rng(0)
    means = np.linalg.qr(rng.normal(size=(64, len(CONCEPTS))))[0].T * 4.0
    with torch.no_grad():
        for c, words in enumerate(CONCEPTS.values()):
            for w in words:
                for t in tok(w, add_special_tokens=False)["input_ids"]:
                    emb[t] = torch.tensor(means[c] + 0.3 * rng.normal(size=64), dtype=emb.dtype)
    path = tmp_path / "concepts.json"
    path.write_text(json.dumps(CONCEPTS))
    cfg = GeometryConfig(extraction=ExtractionConfig(model=str(folder), device="cpu"), concepts=str(path),
                         permutations=20, bootstrap=100, shuffles=0, probes=False,
                         baselines=["random_weights", "random_blocks", "embeddings"])
    result = measure_geometry(cfg, loaded=loaded, quiet=True)
    base = result.summary["baselines"]
    last = result.last_layer
    trained = base["random_blocks"][last]["within_concept_cosine"]["trained"]
    assert trained > 0.3
    assert base["random_blocks"]["0"]["within_concept_cosine"]["difference"] == 0.0
    assert abs(base["random_blocks"][last]["within_concept_cosine"]["difference"]) < 0.25 * trained
    assert base["embeddings"][last]["within_concept_cosine"]["baseline_value"] > 0.3
    rw = base["random_weights"][last]["within_concept_cosine"]
    assert rw["baseline_value"] < 0.5 * trained and rw["ci_low"] > 0
