"""The synthetic world read off a fitted sparse code (analysis/engine/code_parameters.py, analysis/fitted_world.py):
the estimator recovers known generator parameters, its statistics equal a second implementation, the distances
equal scipy's / a hand computation, and ``probe dictionary --world`` end to end on saved vectors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from mcicl.analysis.engine.code_parameters import (
    HeldOutStatistics,
    atom_owners,
    code_parameters,
    paired_distances,
    world_distance,
)
from mcicl.analysis.engine.sparse_coding import sparse_codes, unit_rows
from mcicl.analysis.fitted_world import (
    allowed_partners,
    compare_worlds,
    fit_code,
    rate_from_energy,
    split_halves,
    world_from_code,
)
from mcicl.analysis.matched import simulate_words
from mcicl.app.cli import main
from mcicl.core.vectors import LabelledVectors
from mcicl.synthetic.config import SyntheticConfig
from mcicl.synthetic.data import build_dictionary

KNOWN = [dict(K=4, K_irr=4, within_cosine=0.5, cross_overlap=0.0, polysemy_rate=0.1, sigma=0.03),
         dict(K=4, K_irr=2, within_cosine=0.3, cross_overlap=0.1, polysemy_rate=0.15, sigma=0.02),
         dict(K=6, K_irr=0, within_cosine=0.4, cross_overlap=0.1, polysemy_rate=0.2, sigma=0.02)]


def true_atoms(sc: SyntheticConfig) -> np.ndarray:
    dic = build_dictionary(sc)
    a, b = dic.a.double().numpy(), dic.b.double().numpy()
    return np.concatenate([a + b, a - b])  # mu_j^+ then mu_j^-, every word concept (task and irrelevant)


@pytest.mark.parametrize("known", KNOWN)
def test_the_true_dictionarys_code_gives_back_the_generator_parameters(known):
    # Tolerance (stated): K and K_irr exact; within_cosine, cross_overlap +-0.02; polysemy_rate +-0.03; sigma +-15%.
    sc = SyntheticConfig(scenarios=[], **known)
    words = simulate_words(sc, 40, seed=1)
    atoms = true_atoms(sc)
    params = code_parameters(words.vectors, words.labels, atoms, sparse_codes(words.vectors, atoms, 3), 3)
    world = world_from_code(params, SyntheticConfig())
    assert (world.K, world.K_irr) == (sc.K, sc.K_irr)
    assert world.within_cosine == pytest.approx(sc.within_cosine, abs=0.02)
    assert world.cross_overlap == pytest.approx(sc.cross_overlap, abs=0.02)
    assert world.polysemy_rate == pytest.approx(sc.polysemy_rate, abs=0.03)
    assert world.sigma * np.sqrt(world.d) == pytest.approx(sc.sigma * np.sqrt(sc.d), rel=0.15)


def test_a_learned_dictionary_on_the_default_world_gives_back_its_parameters():
    # The whole estimator, from a dictionary learned at the true size. Tolerance (stated): K, K_irr exact;
    # within_cosine, cross_overlap +-0.06; polysemy_rate +-0.06; sigma +-25%.
    sc = SyntheticConfig(scenarios=[])
    words = simulate_words(sc, 100, seed=1)
    _, params = fit_code(words.vectors, words.labels, 2 * (sc.K + sc.K_irr), 3, seed=0, iterations=30)
    world = world_from_code(params, SyntheticConfig())
    assert (world.K, world.K_irr) == (sc.K, sc.K_irr)
    assert world.within_cosine == pytest.approx(sc.within_cosine, abs=0.06)
    assert world.cross_overlap == pytest.approx(sc.cross_overlap, abs=0.06)
    assert world.polysemy_rate == pytest.approx(sc.polysemy_rate, abs=0.06)
    assert world.sigma == pytest.approx(sc.sigma, rel=0.25)


def test_within_and_cross_equal_a_loop_over_own_parts():
    rng = np.random.default_rng(3)
    n, m, d = 30, 6, 10
    dic = unit_rows(rng.standard_normal((m, d)))
    labels = np.array(["a"] * 10 + ["b"] * 12 + ["c"] * 8)
    codes = np.zeros((n, m))
    for i, lab in enumerate(labels):  # concept a uses atoms 0-1, b 2-3, c 4-5; one shared extra atom of another
        own = {"a": 0, "b": 2, "c": 4}[lab] + i % 2
        codes[i, own] = rng.uniform(0.8, 1.2)
        codes[i, (own + 2 + rng.integers(3)) % m] = rng.uniform(0.1, 0.3)
    x = codes @ dic + 0.01 * rng.standard_normal((n, d))
    p = code_parameters(x, labels, dic, codes, 2)
    assert p.atom_owner.tolist() == [0, 0, 1, 1, 2, 2]
    own = np.stack([sum(codes[i, j] * dic[j] for j in range(m) if p.atom_owner[j] == "abc".index(lab))
                    for i, lab in enumerate(labels)])
    u = unit_rows(own)
    within = []
    for c in "abc":
        rows = np.flatnonzero(labels == c)
        pairs = [u[i] @ u[j] for i in rows for j in rows if i != j]
        nc = len(rows)
        same = (nc / 2 - 1) / (nc - 1)
        within.append((np.mean(pairs) - same) / (1 - same))
    cross = [np.mean([u[i] @ u[j] for i in np.flatnonzero(labels == a) for j in np.flatnonzero(labels == b)])
             for a in "abc" for b in "abc" if a != b]
    assert p.within_cosine == pytest.approx(np.mean(within), abs=1e-12)
    assert p.cross_overlap == pytest.approx(np.mean(cross), abs=1e-12)
    other = codes @ dic - own
    assert p.other_energy == pytest.approx((other ** 2).sum(1).mean() / (own ** 2).sum(1).mean(), rel=1e-12)
    resid = x - codes @ dic
    assert p.noise_energy == pytest.approx((resid ** 2).sum(1).mean() / (own ** 2).sum(1).mean() * d / (d - 2),
                                           rel=1e-12)


def test_an_atom_every_concept_uses_alike_is_nobodys():
    codes = np.zeros((8, 3))
    lab = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    codes[:4, 0] = 1.0
    codes[4:, 1] = 1.0
    codes[[0, 1, 4, 5], 2] = 0.9  # used by both concepts equally: an irrelevant concept's feature
    assert atom_owners(codes, lab, 2).tolist() == [0, 1, -1]


def test_rate_from_energy_inverts_the_binomial_energy():
    K, K_irr = 4, 4
    n = allowed_partners(K, K_irr, "patterned")
    assert n == 3.0  # concepts of the same parity, other than itself, among 8
    assert rate_from_energy(0.3, 0.0, n) == pytest.approx(0.1)
    r = rate_from_energy(0.5, 0.2, n)
    assert n * r + n * (n - 1) * r ** 2 * 0.2 == pytest.approx(0.5)
    assert rate_from_energy(0.0, 0.2, n) == 0.0 and rate_from_energy(100.0, 0.2, n) == 1.0


def test_distances_are_scipys_wasserstein_and_the_paired_difference_has_the_right_sign():
    rng = np.random.default_rng(0)
    real = HeldOutStatistics(rng.normal(0.6, 0.05, 20), rng.normal(0.3, 0.05, 190), rng.uniform(0, 0.4, 200))
    near = HeldOutStatistics(rng.normal(0.6, 0.05, 40), rng.normal(0.3, 0.05, 300), rng.uniform(0, 0.4, 300))
    far = HeldOutStatistics(rng.normal(0.8, 0.05, 40), rng.normal(0.1, 0.05, 300), rng.uniform(0.3, 0.7, 300))
    # Equal sizes: W1 is the mean absolute difference of the sorted samples (by hand).
    same_n = HeldOutStatistics(real.within + 0.1, real.cross[::-1] - 0.05, real.off_loading)
    d = world_distance(real, same_n)
    assert d["cosines"] == pytest.approx(0.5 * (0.1 + 0.05))
    assert d["loadings"] == pytest.approx(0.0)
    out = paired_distances(real, {"near": near, "far": far}, "near", n_boot=200, seed=0)
    for stat in ("cosines", "loadings"):
        lo, hi = out["far"][f"{stat}_near_minus_this_ci"]
        assert hi < 0 and lo <= out["far"][f"{stat}_near_minus_this"] <= hi
        assert out["near"][stat] < out["far"][stat]


def test_compare_worlds_on_a_synthetic_world_prefers_its_own_parameters():
    sc = SyntheticConfig(scenarios=[], K=4, K_irr=2, within_cosine=0.3, cross_overlap=0.1, sigma=0.03)
    lv = simulate_words(sc, 24, seed=5)
    fit, held = split_halves(lv, 0)
    assert not set(fit.words) & set(held.words)
    out = compare_worlds(fit, held, atoms=12, nonzeros=3, n_boot=50, seed=0, iterations=10, replicates=1,
                         moment_per_sign=10)
    assert set(out["distances"]) == {"fitted", "moment_matched", "defaults", "mismatched"}
    assert out["worlds"]["fitted"]["K"] == 4
    assert out["distances"]["fitted"]["cosines"] < out["distances"]["mismatched"]["cosines"]
    assert out["closer"]["cosines"] in ("fitted", "moment_matched", "neither (interval spans 0)")


def test_probe_dictionary_world_on_saved_vectors(tmp_path: Path):
    sc = SyntheticConfig(scenarios=[])
    lv = simulate_words(sc, 20, seed=2)
    dataclasses.replace(lv).save(tmp_path / "features.npz")
    out = tmp_path / "run"
    assert main(["probe", "dictionary", "--vectors", str(tmp_path / "features.npz"), "--atoms", "8,16",
                 "--nonzeros", "2,3", "--iterations", "5", "--permutations", "10", "--bootstrap", "50", "--world",
                 "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    world = summary["fitted_world"]
    assert set(world["distances"]) == {"fitted", "moment_matched", "defaults", "mismatched"}
    assert world["real"]["fit_words"] + world["real"]["words"] == len(lv.vectors)
    assert (out / "worlds.csv").read_text().count("\n") == 5


def test_split_halves_are_disjoint_and_drop_concepts_too_small_to_split():
    labels = ["a"] * 5 + ["b"] * 4 + ["c"] * 3
    lv = LabelledVectors(np.eye(12), [f"w{i}" for i in range(12)], labels)
    one, two = split_halves(lv, 0)
    assert sorted(one.labels.tolist()) == ["a", "a", "a", "b", "b"]
    assert sorted(two.labels.tolist()) == ["a", "a", "b", "b"]
    assert not set(one.words) & set(two.words)
