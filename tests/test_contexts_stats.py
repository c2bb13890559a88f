"""The contextual geometry engine on arrays with known answers (no model)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mcicl.analysis.engine.context_measures import (
    context_statistics,
    cosine_scores,
    group_permutations,
    margins,
    pair_auc_from_cosines,
    pair_auc_units,
    predictions,
    word_codes_of,
)


def test_scores_margins_and_predictions_match_the_formulas():
    rng = np.random.default_rng(0)
    v, c = rng.normal(size=(4, 5)), rng.normal(size=(3, 5))
    cand = np.array([[0, 1, -1], [2, 0, -1], [0, 1, 2], [1, 2, -1]])
    s = cosine_scores(v, c, cand)
    for i in range(4):
        for j in range(3):
            if cand[i, j] < 0:
                assert np.isnan(s[i, j])
            else:
                k = cand[i, j]
                assert s[i, j] == pytest.approx(v[i] @ c[k] / np.linalg.norm(v[i]) / np.linalg.norm(c[k]))
    labels = np.array([1, 0, 2, 0])
    expected = [s[0, 1] - s[0, 0], s[1, 0] - s[1, 1], s[2, 2] - (s[2, 0] + s[2, 1]) / 2, s[3, 0] - s[3, 1]]
    assert np.allclose(margins(s, labels), expected)
    assert np.allclose(margins(s, np.stack([labels, labels])), [expected, expected])
    assert list(predictions(s)) == [int(np.nanargmax(row)) for row in s]


def test_group_permutations_stay_within_groups():
    groups = np.array([0, 0, 0, 1, 1, 2])
    perms = group_permutations(groups, 50, np.random.default_rng(1))
    assert perms.shape == (50, 6)
    for p in perms:
        assert sorted(p) == list(range(6)) and np.all(groups[p] == groups)
    assert len({tuple(p[:3]) for p in perms}) > 1  # they do shuffle


def test_pair_auc_equals_roc_auc_of_pair_cosines():
    rng = np.random.default_rng(2)
    v = rng.normal(size=(6, 8))
    labels = np.array([0, 0, 0, 1, 1, 1])
    units, _ = pair_auc_units(v, labels, np.zeros(6, dtype=int), 1)
    vn = v / np.linalg.norm(v, axis=1, keepdims=True)
    i, j = np.triu_indices(6, k=1)
    assert units[0] == pytest.approx(roc_auc_score(labels[i] == labels[j], (vn @ vn.T)[i, j]))


def test_pair_auc_from_given_cosines_equals_roc_auc_and_the_vectors_path():
    """Pair cosines computed outside (as a store computes them, a word's rows at a time) give each word's ROC AUC,
    and context_statistics gives the same pair AUC and null from them as from the vectors."""
    rng = np.random.default_rng(5)
    words = ["b", "a", "b", "a", "b", "a", "a", "b", "c"]
    labels = np.array([0, 1, 1, 0, 0, 1, 0, 1, 0])
    v = rng.normal(size=(9, 7))
    names, codes = word_codes_of(words)
    assert list(names) == ["a", "b", "c"]
    cosines = []
    for w in range(3):
        rows = np.flatnonzero(codes == w)
        cosines.append(np.array([v[a] @ v[b] / np.linalg.norm(v[a]) / np.linalg.norm(v[b])
                                 for x, a in enumerate(rows) for b in rows[x + 1:]]))
    units, _ = pair_auc_from_cosines(cosines, labels, codes, 3)
    for w in range(2):
        rows = np.flatnonzero(codes == w)
        i, j = np.triu_indices(rows.size, k=1)
        assert units[w] == pytest.approx(roc_auc_score(labels[rows][i] == labels[rows][j], cosines[w]))
    assert np.isnan(units[2])  # one row: no pairs
    scores = rng.normal(size=(9, 2))
    kwargs = dict(n_permutations=50, n_bootstrap=20, seed=3)
    a = context_statistics({"1": scores}, {"1": scores}, labels, words, words, pair_vectors={"1": v}, **kwargs)
    b = context_statistics({"1": scores}, {"1": scores}, labels, words, words, pair_cosines={"1": cosines}, **kwargs)
    np.testing.assert_allclose(b.word_units["1"]["pair_auc"], a.word_units["1"]["pair_auc"])
    assert b.per_layer["1"]["pair_auc"].null_mean == pytest.approx(a.per_layer["1"]["pair_auc"].null_mean)
    with pytest.raises(ValueError, match="both given"):
        context_statistics({"1": scores}, {"1": scores}, labels, words, words, pair_vectors={"1": v},
                           pair_cosines={"1": cosines}, **kwargs)
    with pytest.raises(ValueError, match=r"pair_cosines\[0\] has shape"):
        pair_auc_from_cosines([cosines[0][:-1]] + cosines[1:], labels, codes, 3)


def _planted(n_words: int, signal: float, seed: int) -> dict:
    """Words with two senses, 3 contexts each; contextual vector = signal * sense centroid + noise."""
    rng = np.random.default_rng(seed)
    d, k = 32, 2 * n_words
    centroids = rng.normal(size=(k, d))
    ctx, base, cand, labels, words = [], [], [], [], []
    for w in range(n_words):
        senses = [2 * w, 2 * w + 1]
        b = centroids[senses].mean(axis=0) + rng.normal(size=d)  # out of context: between the senses
        for pos in (0, 1):
            for _ in range(3):
                ctx.append(b + signal * centroids[senses[pos]] + rng.normal(size=d))
                base.append(b)
                cand.append(senses)
                labels.append(pos)
                words.append(f"w{w}")
    cand = np.array(cand)
    ctx, base = np.array(ctx), np.array(base)
    return {"ctx": {"0": cosine_scores(ctx, centroids, cand)}, "base": {"0": cosine_scores(base, centroids, cand)},
            "labels": np.array(labels), "words": words, "vectors": {"0": ctx}}


def test_planted_sense_signal_is_found_and_no_signal_is_not():
    strong = _planted(12, signal=3.0, seed=3)
    st = context_statistics(strong["ctx"], strong["base"], strong["labels"], strong["words"], strong["words"],
                            pair_vectors=strong["vectors"], n_permutations=300, n_bootstrap=300)
    acc, base = st.per_layer["0"]["sense_accuracy"], st.per_layer["0"]["baseline_accuracy"]
    assert acc.value > 0.95 and acc.p_value < 0.01 and acc.ci_low > acc.null_high
    # One prediction per word for all its contexts: exactly half of a balanced word's contexts are right.
    assert base.value == pytest.approx(0.5)
    assert st.per_layer["0"]["shift"].value > 0 and st.per_layer["0"]["pair_auc"].value > 0.9
    assert acc.null_mean == pytest.approx(0.5, abs=0.03)  # senses shuffled within words: chance

    none = _planted(12, signal=0.0, seed=4)
    st0 = context_statistics(none["ctx"], none["base"], none["labels"], none["words"], none["words"],
                             pair_vectors=none["vectors"], n_permutations=300, n_bootstrap=300)
    acc0 = st0.per_layer["0"]["sense_accuracy"]
    assert acc0.p_value > 0.05 and acc0.ci_low <= 0.5 <= acc0.ci_high


def test_best_layer_is_paid_for_in_the_null():
    # Ten layers of pure noise: the best layer's raw accuracy beats 0.5 by luck; the max-corrected null knows it.
    layers = {str(k): _planted(10, signal=0.0, seed=10 + k) for k in range(10)}
    ref = layers["0"]
    st = context_statistics({k: v["ctx"]["0"] for k, v in layers.items()},
                            {k: v["base"]["0"] for k, v in layers.items()}, ref["labels"], ref["words"], ref["words"],
                            n_permutations=300, n_bootstrap=300)
    best = st.best["sense_accuracy"]
    assert best.value == max(st.per_layer[k]["sense_accuracy"].value for k in layers)
    assert best.null_mean > st.per_layer["0"]["sense_accuracy"].null_mean + 0.02  # the max of 10 nulls is higher
    assert best.p_value > 0.05
