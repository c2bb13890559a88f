"""The comparison table, the geometry-matched world and the geometry-to-OOD map."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace

import numpy as np
import pytest

from mcicl.analysis.compare import STATISTICS
from mcicl.analysis.matched import estimate_parameters, matched_rows, measure_moments, simulate_words
from mcicl.analysis.ood_map import MapPoint, ood_grid, ood_map_figure
from mcicl.core.plotting import save_figure
from mcicl.core.runs import RunFolder
from mcicl.probing.datasets import load_concept_set
from mcicl.probing.extract import ExtractionConfig
from mcicl.probing.geometry import GeometryConfig, run_geometry
from mcicl.synthetic.config import SyntheticConfig
from mcicl.synthetic.train import train
from tests.conftest import mcicl_cli

# A small concept set: 6 concepts of the built-in set plus polysemous words with senses among them.
CONCEPTS = ("fruits", "colours", "birds", "fish", "animals", "vegetables")


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """A tiny synthetic train run with a non-trivial configured geometry (cosine 0.6, overlap 0.2)."""

    config = SyntheticConfig(within_cosine=0.6, cross_overlap=0.2, steps=40, n_train=256, n_test=200,
                             n_test_ood=100, eval_every=20, ood_every=40, checkpoint_every=40, n_features=15,
                             scenarios=["flipped_labels", "polysemous_query"])
    run = RunFolder.create(tmp_path_factory.mktemp("syn") / "run", "synthetic train")
    train(config, run, figures=False)
    return run.path, config


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """A `probe geometry` run of the real MiniLM (input-side layer 0 and the last layer 6) on a small set."""

    cs = load_concept_set("builtin")
    folder = tmp_path_factory.mktemp("real")
    (folder / "concepts.json").write_text(json.dumps({c: cs.concepts[c] for c in CONCEPTS}))
    poly = {w: s for w, s in cs.polysemy.items() if sum(c in CONCEPTS for c in s) >= 2 and
            all(c in CONCEPTS for c in s)}
    assert len(poly) >= 2, "the built-in inventory should have polysemous words among these concepts"
    (folder / "polysemy.json").write_text(json.dumps(poly))
    cfg = GeometryConfig(concepts=str(folder / "concepts.json"), polysemy=str(folder / "polysemy.json"),
                         extraction=ExtractionConfig(layers="0,6", device="cpu"), permutations=20, bootstrap=50,
                         shuffles=2, probes=False)
    run = RunFolder.create(folder / "run", "probe geometry")
    run_geometry(cfg, run, quiet=True)
    return run.path


def test_comparison_table_has_every_statistic_for_every_space(synthetic_run, real_run, tmp_path):
    syn_dir, config = synthetic_run
    out = tmp_path / "cmp"
    result = mcicl_cli("compare", "--synthetic", str(syn_dir), "--real", str(real_run), "--out", str(out),
                       "--permutations", "20", "--no-umap", "--quiet")
    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout
    with open(out / "comparison.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    spaces = list(dict.fromkeys(r["space"] for r in rows))
    assert spaces[:4] == ["synthetic dictionary", "synthetic words", "synthetic learned W_Q x",
                          "synthetic learned W_K x"]
    real = [s for s in spaces if not s.startswith("synthetic")]
    assert len(real) == 2 and real[0].endswith("layer 0") and real[1].endswith("layer 6")
    cells = {(r["space"], r["geometry"], r["statistic"]): r for r in rows}
    for space in spaces:
        for geometry in ("raw", "centred"):
            for stat in STATISTICS:
                row = cells[(space, geometry, stat)]
                assert math.isfinite(float(row["value"])), (space, geometry, stat, row["note"])
                assert row["null"] != "" and math.isfinite(float(row["null"])), (space, geometry, stat)
    # The ground-truth dictionary's raw geometry is the configured one.
    dictionary = {stat: float(cells[("synthetic dictionary", "raw", stat)]["value"]) for stat in STATISTICS}
    assert dictionary["within_concept_cosine"] == pytest.approx(config.within_cosine, abs=1e-5)
    assert dictionary["cross_concept_cosine"] == pytest.approx(config.cross_overlap, abs=1e-5)
    # On the real model the paper's premise: within-concept cosine above cross-concept cosine.
    for space in real:
        assert float(cells[(space, "centred", "within_concept_cosine")]["value"]) > \
            float(cells[(space, "centred", "cross_concept_cosine")]["value"])
    md = (out / "comparison.md").read_text()
    assert all(label in md for label in STATISTICS.values()) and "synthetic dictionary" in md
    for name in ("comparison", f"heatmap_{real[1].lower().replace(' ', '_').replace('-', '_')}_whitened"):
        assert (out / "figures" / f"{name}.png").is_file(), sorted(p.name for p in (out / "figures").iterdir())


def test_compare_rejects_a_folder_that_is_not_a_run(tmp_path, synthetic_run):
    result = mcicl_cli("compare", "--synthetic", str(synthetic_run[0]), "--real", str(tmp_path), "--out",
                       str(tmp_path / "o"), "--quiet")
    assert result.returncode == 2
    assert "probe geometry" in result.stderr and str(tmp_path) in result.stderr


def test_matched_world_recovers_the_parameters_it_was_measured_from():

    base = SyntheticConfig()
    truth = {"within_cosine": 0.5, "cross_overlap": 0.15, "polysemy_rate": 0.2, "sigma": 0.06}
    # "Measured" words: the true world, sampled with another seed and more words than the estimator uses.
    words = simulate_words(replace(base, **truth), n_per_sign=150, seed=987)
    est = estimate_parameters(words.vectors, words.labels, base, seed=0)
    got = est.parameters
    assert got["within_cosine"] == pytest.approx(truth["within_cosine"], abs=0.08)
    assert got["cross_overlap"] == pytest.approx(truth["cross_overlap"], abs=0.05)
    assert got["polysemy_rate"] == pytest.approx(truth["polysemy_rate"], abs=0.1)
    assert got["sigma"] == pytest.approx(truth["sigma"], rel=0.3)
    assert np.allclose(est.achieved.array(), measure_moments(words.vectors, words.labels).array(), atol=0.02)


def test_matched_rows_pair_conditions_and_turn_accuracy_into_error():
    synthetic = {"final": {"test_zero_one": 0.01},
                 "ood": {"length_long": {"test_zero_one": 0.03}, "flipped_labels": {"test_zero_one": 0.2},
                         "noise_x2": {"test_zero_one": 0.5}}}
    icl = {"chance": 0.5, "accuracy": {
        "in_distribution": {"8": {"mean": 0.9, "ci_low": 0.8, "ci_high": 0.95, "n": 40},
                            "16": {"mean": 0.95, "ci_low": 0.9, "ci_high": 1.0, "n": 40}},
        "flipped_labels": {"8": {"mean": 0.3, "ci_low": 0.2, "ci_high": 0.4, "n": 40}}}}
    rows = {r["synthetic_condition"]: r for r in matched_rows(synthetic, icl, L=8)}
    assert set(rows) == {"in_distribution", "length_long", "flipped_labels"}  # noise_x2 has no real match
    assert rows["in_distribution"]["real_shots"] == 8
    assert rows["in_distribution"]["real_error"] == pytest.approx(0.1)
    assert rows["in_distribution"]["real_error_low"] == pytest.approx(0.05)
    assert rows["length_long"]["real_shots"] == 16 and rows["length_long"]["synthetic_L"] == 16
    assert rows["flipped_labels"]["real_error"] == pytest.approx(0.7)
    assert rows["flipped_labels"]["synthetic_error"] == pytest.approx(0.2)


def test_ood_grid_averages_cells_and_draws_the_map(tmp_path):
    rows = []
    for w in (0.1, 0.7):
        for c in (0.0, 0.3):
            for seed in (0, 1):
                rows.append({"within_cosine": str(w), "cross_overlap": str(c), "seed": str(seed),
                             "test_zero_one": str(0.01 * seed),
                             "ood.a.test_zero_one": str(w + c), "ood.b.test_zero_one": str(w + c + 0.2 * seed)})
    grid = ood_grid(rows)
    assert list(grid.xs) == [0.1, 0.7] and list(grid.ys) == [0.0, 0.3]
    assert grid.values[1, 0] == pytest.approx(0.1 + 0.3 + 0.05)  # mean of a, b over both seeds
    assert ood_grid(rows, "test_zero_one").values[0, 0] == pytest.approx(0.005)
    with pytest.raises(ValueError, match="no column 'ood.c.test_zero_one'"):
        ood_grid(rows, "ood.c.test_zero_one")
    png = save_figure(ood_map_figure(rows, [MapPoint("model layer 6", 0.4, 0.1)]), tmp_path, "ood_map")
    assert png.is_file() and (tmp_path / "ood_map.pdf").is_file()


def test_compare_requires_synthetic_and_real_and_names_the_missing_option(tmp_path, capsys):
    from mcicl.app.cli import main

    assert main(["compare", "--real", str(tmp_path), "--out", str(tmp_path / "c"), "--quiet"]) == 2
    assert "--synthetic is required" in capsys.readouterr().err
    assert main(["compare", "--synthetic", str(tmp_path), "--out", str(tmp_path / "c"), "--quiet"]) == 2
    assert "--real is required" in capsys.readouterr().err and not (tmp_path / "c").exists()
    assert main(["compare", "--permutations", "0", "--out", str(tmp_path / "c"), "--quiet"]) == 2
    assert "--permutations 0" in capsys.readouterr().err


def test_agreement_statistic_equals_a_hand_computation():
    from mcicl.analysis.matched import agreement, agreement_rows, mismatched_parameters

    errors = {"in_distribution": [0.0, 0.1, 0.2], "flipped_labels": [0.3, 0.6, 0.4], "noise_x5": [0.9, 0.9, 0.9]}
    real = {"in_distribution": (0.05, 0.05, 0.05), "flipped_labels": (0.6, 0.5, 0.7),
            "polysemous_query": (0.2, 0.1, 0.3)}
    a = agreement(errors, real, n_bootstrap=500, seed=1)
    # shared: in_distribution |0.1 - 0.05| = 0.05 and flipped_labels |1.3/3 - 0.6| = 1/6 -> mean 0.108333
    assert a["conditions"] == ["in_distribution", "flipped_labels"] and a["value"] == pytest.approx((0.05 + 1 / 6) / 2)
    assert a["ci_low"] <= a["value"] <= a["ci_high"] and a["seeds"] == 3
    # Identical seeds and exact real readouts: every draw is the value itself.
    exact = agreement({"a": [0.2, 0.2]}, {"a": (0.5, 0.5, 0.5)}, n_bootstrap=50)
    assert exact["ci_low"] == pytest.approx(0.3) and exact["ci_high"] == pytest.approx(0.3)
    # Bootstrap by hand: the same draws of seeds and real errors with numpy.
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 3, size=(500, 3))
    E = np.array([errors["in_distribution"], errors["flipped_labels"]])
    draws = np.abs(E[:, idx].mean(2).T - (np.array([0.05, 0.6]) + np.array([0.0, 0.2 / 3.92])
                                          * rng.standard_normal((500, 2)))).mean(1)
    assert (a["ci_low"], a["ci_high"]) == pytest.approx(tuple(np.percentile(draws, [2.5, 97.5])))
    far = agreement({k: [v[0] + 0.3] * 3 for k, v in real.items()}, real, n_bootstrap=500)
    rows = {r["world"]: r for r in agreement_rows({"matched": a, "mismatched": far})}
    assert rows["mismatched"]["matched_minus_this"] == pytest.approx((0.05 + 1 / 6) / 2 - 0.3)
    assert rows["mismatched"]["diff_ci_high"] < 0  # the matched world is closer
    bad = mismatched_parameters({"within_cosine": 0.3, "cross_overlap": 0.05, "polysemy_rate": 0.1, "sigma": 0.03}, 48)
    assert bad["within_cosine"] == 0.9 and bad["cross_overlap"] > 0 and bad["polysemy_rate"] == 0.5


def test_same_concept_attention_pairs_with_the_real_in_distribution_condition(synthetic_run):
    from mcicl.analysis.compare import attention_rows, synthetic_same_concept

    run_dir, config = synthetic_run
    same = synthetic_same_concept(run_dir)
    assert same["same_concept_chance"] == pytest.approx(0.5) and 0 <= same["same_concept_attention"] <= 1
    cell = {"top_heads_value": 0.6, "top_heads_null": 0.5, "best_head": [2, 4], "best_value": 0.7,
            "best_null": 0.5, "best_p_corrected": 0.01, "chance": 0.5}
    attention = {"cells": {"in_distribution": {"8": cell}, "flipped_labels": {"8": cell}}}
    rows = {r["condition"]: r for r in attention_rows({"final": {"correct_attention": 0.9}, "ood": {}}, attention,
                                                      same)}
    assert rows["in_distribution"]["synthetic_same_concept_attention"] == same["same_concept_attention"]
    assert math.isnan(rows["flipped_labels"]["synthetic_same_concept_attention"])  # only where it was measured
