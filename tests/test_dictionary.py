"""The sparse-coding fit (``mcicl probe dictionary``): recovery of a planted dictionary, statistics checked against
hand computations, a permuted-label control that must not align, seeds, and the job end to end on saved vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mcicl.analysis.dictionary_recovery import recovery_point
from mcicl.analysis.engine.sparse_coding import (
    amari_distance,
    atom_purity,
    atoms_against_concepts,
    best_atom_cosines,
    choose_size,
    learn_dictionary,
    matched_cosines,
    random_rotation,
    sense_recall,
    sparse_codes,
    unit_rows,
)
from mcicl.app.cli import main
from mcicl.core.vectors import LabelledVectors, Space
from mcicl.probing.dictionary import fit_baseline, fit_space
from mcicl.probing.dictionary_config import DictionaryConfig
from mcicl.probing.sparse_autoencoder import learn_sae_dictionaries, train_sae


def planted(n: int = 360, k: int = 8, d: int = 24, s: int = 2, noise: float = 0.02, seed: int = 0):
    """Rows that are s-sparse combinations of k random unit atoms plus noise; each row's label is its largest atom."""
    rng = np.random.default_rng(seed)
    atoms = unit_rows(rng.standard_normal((k, d)))
    codes = np.zeros((n, k))
    for i in range(n):
        idx = rng.choice(k, s, replace=False)
        codes[i, idx] = rng.uniform(0.6, 1.4, s) * rng.choice([-1, 1], s)
    x = codes @ atoms + noise * rng.standard_normal((n, d))
    return x, atoms, codes


@pytest.fixture(scope="module")
def fit():
    x, atoms, codes = planted()
    return x, atoms, codes, learn_dictionary(x, len(atoms), 2, seed=0)


def test_a_planted_dictionary_is_recovered(fit):
    x, atoms, _, learned = fit
    matched = matched_cosines(atoms, learned)
    assert (matched >= 0.9).mean() >= 0.9, matched
    assert amari_distance(atoms, learned) < 0.1
    # A dictionary of random atoms is far from the truth: the statistics can fail.
    rand = unit_rows(np.random.default_rng(9).standard_normal(atoms.shape))
    assert (matched_cosines(atoms, rand) >= 0.9).mean() == 0 and amari_distance(atoms, rand) > 0.2


def test_same_seed_same_dictionary_other_seed_same_atoms(fit):
    x, atoms, _, learned = fit
    assert np.array_equal(learned, learn_dictionary(x, len(atoms), 2, seed=0))
    other = learn_dictionary(x, len(atoms), 2, seed=1)
    assert (matched_cosines(learned, other) >= 0.9).mean() >= 0.9


def test_one_atom_codes_are_the_best_projection(fit):
    """With one atom per row, OMP picks the atom of largest |<x, d>| and codes it by that inner product."""
    x, _, _, learned = fit
    codes = sparse_codes(x[:30], learned, 1)
    dots = x[:30] @ learned.T
    best = np.abs(dots).argmax(axis=1)
    expected = np.zeros_like(codes)
    expected[np.arange(30), best] = dots[np.arange(30), best]
    assert np.allclose(codes, expected)


def test_amari_distance_by_hand():
    atoms = unit_rows(np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0]]))
    assert amari_distance(atoms, -3 * atoms[::-1]) == pytest.approx(0.0, abs=1e-12)
    # learned = [[1, 1], [0, 1]] in the true atoms: P = [[1, 1], [0, 1]] (up to the rows' scaling)
    learned = np.stack([atoms[0] + atoms[1], atoms[1]])
    p = np.abs(unit_rows(learned) @ np.linalg.pinv(atoms))
    rows = (p.sum(1) / p.max(1) - 1).sum() / 2
    cols = (p.sum(0) / p.max(0) - 1).sum() / 2
    assert amari_distance(atoms, learned) == pytest.approx((rows + cols) / 2)
    assert amari_distance(atoms, learned) > 0.1


def test_the_size_rule_is_the_one_standard_error_rule():
    x, atoms, _ = planted(n=240, seed=3)
    choice = choose_size(x, [4, 8, 16], [1, 2], seed=0)
    best = min(choice.rows, key=lambda r: r["heldout_error"])
    within = [r for r in choice.rows if r["heldout_error"] <= best["heldout_error"] + best["heldout_se"]]
    smallest = min(within, key=lambda r: (r["nonzeros"], r["atoms"]))
    assert (choice.atoms, choice.nonzeros) == (smallest["atoms"], smallest["nonzeros"])
    assert sum(r["chosen"] for r in choice.rows) == 1
    # Too few atoms cannot reconstruct 2-sparse rows of 8 atoms: the rule never picks 4 atoms and 1 per word.
    assert (choice.atoms, choice.nonzeros) != (4, 1)


def _directions(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    centred = x - x.mean(axis=0)
    return unit_rows(np.stack([centred[labels == c].mean(axis=0) for c in range(k)]))


def test_concepts_aligned_with_atoms_beat_both_nulls_and_shuffled_labels_do_not(fit):
    """Concepts = each word's largest planted atom: their directions sit on atoms and beat both nulls. Shuffled
    labels beat the rotation null too (word-group centroids lie in the data's span, rotated atoms do not: the
    rotation null is weak), but not the label-permutation null."""
    x, atoms, codes, learned = fit
    labels = np.abs(codes).argmax(axis=1)
    rng = np.random.default_rng(0)
    permuted = [_directions(x, rng.permutation(labels), len(atoms)) for _ in range(100)]
    res = atoms_against_concepts(_directions(x, labels, len(atoms)), learned, rotations=100, seed=0,
                                 permuted=permuted)
    assert res["mean"] > 0.7 and res["mean_p"] == pytest.approx(1 / 101) and res["label_p"] == pytest.approx(1 / 101)
    control = _directions(x, np.random.default_rng(7).permutation(labels), len(atoms))
    res_c = atoms_against_concepts(control, learned, rotations=100, seed=0, permuted=permuted)
    assert res_c["mean_p"] < 0.05  # the weak null is beaten by chance groupings
    assert res_c["label_p"] > 0.05 and res_c["mean"] < res["mean"] - 0.1
    # The rotation null by hand: the mean best |cos| of one rotated dictionary, drawn with the same generator (the
    # null rotates the atoms' span by a Haar frame: D R^T = (D U)(R U)^T).
    rng = np.random.default_rng(0)
    _, sv, vt = np.linalg.svd(learned, full_matrices=False)
    u = vt[sv > 1e-9].T
    q, t = np.linalg.qr(rng.standard_normal((learned.shape[1], u.shape[1])))
    first = best_atom_cosines(atoms, (learned @ u) @ (q * np.sign(np.diag(t))).T).mean()
    one = atoms_against_concepts(atoms, learned, rotations=1, seed=0)
    assert one["mean_null"] == pytest.approx(first)


def test_rotation_null_by_frames_has_the_full_rotations_distribution():
    # Rotating the atoms' span by a d x r Haar frame must give what full d x d Haar rotations give: the same Gram
    # matrix each draw, and the same null distribution of the mean best |cos| (checked on 400 draws of each).
    rng = np.random.default_rng(3)
    d, k = 30, 6
    atoms = rng.standard_normal((k, d)) + 2.0 * rng.standard_normal((1, d))  # correlated atoms
    directions = rng.standard_normal((4, d))
    _, sv, vt = np.linalg.svd(atoms, full_matrices=False)
    u = vt[sv > 1e-9].T
    q, t = np.linalg.qr(rng.standard_normal((d, u.shape[1])))
    framed = (atoms @ u) @ (q * np.sign(np.diag(t))).T
    np.testing.assert_allclose(framed @ framed.T, atoms @ atoms.T, atol=1e-10)
    full_rng = np.random.default_rng(11)
    full = np.array([best_atom_cosines(directions, atoms @ random_rotation(d, full_rng).T).mean()
                     for _ in range(400)])
    res = atoms_against_concepts(directions, atoms, rotations=400, seed=5)
    by_frames = res["mean_null"]
    se = full.std(ddof=1) / np.sqrt(400) * np.sqrt(2)
    assert abs(by_frames - full.mean()) < 4 * se
    lo, hi = res["mean_null_band"]
    assert abs(lo - np.quantile(full, 0.025)) < 0.05 and abs(hi - np.quantile(full, 0.975)) < 0.05


def test_purity_and_sense_recall_by_hand():
    codes = np.array([[3.0, 0.0, 0.0], [2.0, 1.0, 0.0], [0.0, 5.0, 0.0], [1.0, 0.0, 0.0]])
    labels = np.array(["a", "a", "b", "b"])
    purity = atom_purity(codes, labels, top=3)
    # atom 0 is used by rows 0, 1, 3 (a, a, b): 2/3; atom 1 by rows 2, 1 (b, a): 1/2; atom 2 by none.
    assert purity[0] == pytest.approx(2 / 3) and purity[1] == pytest.approx(1 / 2) and np.isnan(purity[2])
    owner = np.array([0, 1, 2])  # atom j belongs to concept j
    # row 1's two largest atoms are 0 and 1: both senses {0, 1} found; row 2's only nonzero atom is 1: 1 of {1, 2}.
    assert sense_recall(codes[[1]], [[0, 1]], owner).tolist() == [1.0]
    assert sense_recall(codes[[2]], [[1, 2]], owner).tolist() == [0.5]
    assert sense_recall(codes[[3]], [[1]], owner).tolist() == [0.0]


def test_the_job_on_saved_vectors_recovers_the_truth(tmp_path: Path, capsys):
    x, atoms, codes = planted(n=240, seed=5)
    labels = np.array([f"c{i}" for i in np.abs(codes).argmax(axis=1)])
    LabelledVectors(x, [f"w{i}" for i in range(len(x))], labels).save(tmp_path / "features.npz")
    LabelledVectors(atoms, [f"mu{i}" for i in range(len(atoms))], [f"c{i}" for i in range(len(atoms))]).save(
        tmp_path / "truth.npz")
    out = tmp_path / "run"
    assert main(["probe", "dictionary", "--vectors", str(tmp_path / "features.npz"), "--truth",
                 str(tmp_path / "truth.npz"), "--atoms", "8,16", "--nonzeros", "1,2", "--permutations", "50",
                 "--bootstrap", "100", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["recovery"]["share_matched_0_9"] >= 0.9
    assert summary["best_atom_cos"]["value"] > summary["best_atom_cos"]["null"]
    for name in ("layers.csv", "sizes.csv", "atoms.csv", "figures/sizes.png", "figures/atoms_concepts.png"):
        assert (out / name).is_file(), name
    # Model options beside --vectors would be ignored: refused before any folder exists.
    assert main(["probe", "dictionary", "--vectors", str(tmp_path / "features.npz"), "--concepts", "wordnet",
                 "--out", str(tmp_path / "refused")]) == 2
    assert "--concepts" in capsys.readouterr().err and not (tmp_path / "refused").exists()


@pytest.mark.parametrize(("option", "value"), [("--atoms", "0,8"), ("--atoms", "x"), ("--nonzeros", ""),
                                               ("--permutations", "0"), ("--atoms", "8,8")])
def test_bad_sizes_are_one_clear_line(option, value, tmp_path: Path, capsys):
    assert main(["probe", "dictionary", option, value, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and option.lstrip("-") in err and not (tmp_path / "o").exists()


def _nonnegative_planted(n: int = 600, k: int = 8, d: int = 16, s: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    atoms = unit_rows(rng.standard_normal((k, d)))
    codes = np.zeros((n, k))
    for i in range(n):
        codes[i, rng.choice(k, s, replace=False)] = rng.uniform(0.6, 1.4, s)
    return codes @ atoms + 0.02 * rng.standard_normal((n, d)), atoms


def test_the_sparse_autoencoder_recovers_a_planted_dictionary_and_is_seeded():
    x, atoms = _nonnegative_planted()
    learned = learn_sae_dictionaries(x, len(atoms), [2], seed=0, max_iter=15)[2]
    assert (matched_cosines(atoms, learned) >= 0.9).mean() >= 0.9, matched_cosines(atoms, learned)
    one = train_sae(x, len(atoms), 2, seed=3, steps=60)
    assert np.array_equal(one, train_sae(x, len(atoms), 2, seed=3, steps=60))
    assert not np.array_equal(one, train_sae(x, len(atoms), 2, seed=4, steps=60))


def test_the_default_synthetic_world_is_recovered_at_the_chosen_size():
    """The issue's must-hold: the job's own procedure (sizes by the one-SE rule) on the default synthetic world's
    exported words matches >= 90% of the 2K true atoms with |cos| >= 0.9."""
    row = recovery_point(DictionaryConfig(permutations=10, bootstrap=10, baselines=[]), seed=0)
    assert row["share_matched_0_9"] >= 0.9, row
    assert row["features_per_word"] == pytest.approx(1.3)  # 3 allowed partners at rate 0.1


def test_the_random_weight_baseline_is_the_same_statistic_on_its_own_dictionary():
    x, atoms, codes = planted(n=200, seed=2)
    labels = np.array([f"c{i}" for i in np.abs(codes).argmax(axis=1)])
    words = [f"w{i}" for i in range(len(x))]
    cfg = DictionaryConfig(atoms="8", nonzeros="2", permutations=10, bootstrap=10, baselines=[], iterations=10)
    ref = fit_space(Space("l", LabelledVectors(x, words, labels)), cfg)
    noise = np.random.default_rng(1).standard_normal(x.shape)
    base = fit_baseline(Space("l", LabelledVectors(noise, words, labels)), cfg, ref)
    mine = dict(zip(ref["concept_names"], ref["atoms_vs_concepts"]["per_concept"], strict=True))
    theirs = dict(zip(base["concept_names"], base["atoms_vs_concepts"]["per_concept"], strict=True))
    assert np.allclose(base["difference"], [mine[c] - theirs[c] for c in base["common_concepts"]])
    # Structureless vectors: their own atoms align with their concept directions far less than the planted ones.
    assert base["difference"].mean() > 0.2
