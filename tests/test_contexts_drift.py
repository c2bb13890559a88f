"""The drift control of words in context: the polysemous words' gain minus the monosemous controls', checked by
hand, and the neutral-frame out-of-context baseline that varies across a word's contexts (real MiniLM)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from mcicl.analysis.engine.context_measures import drift_controlled
from mcicl.probing.contexts import ContextSet, builtin_contexts
from mcicl.probing.contexts_config import ContextsConfig
from mcicl.probing.contextual import measure_contexts
from mcicl.probing.datasets import builtin_concepts


def test_drift_controlled_is_the_difference_of_word_means_with_a_two_sample_word_bootstrap():
    poly = np.array([0.2, 0.4, 0.1, np.nan, 0.3])
    ctrl = np.array([0.1, 0.0, 0.2])
    out = drift_controlled(poly, ctrl, 400, np.random.default_rng(0))
    assert out["value"] == pytest.approx(0.25 - 0.1) and (out["n_polysemous"], out["n_controls"]) == (4, 3)
    a, b = poly[np.isfinite(poly)], ctrl
    rng = np.random.default_rng(0)  # by hand: each group resampled on its own, polysemous words first
    boots = a[rng.integers(0, 4, size=(400, 4))].mean(axis=1) - b[rng.integers(0, 3, size=(400, 3))].mean(axis=1)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((np.quantile(boots, 0.025), np.quantile(boots, 0.975)))
    same = drift_controlled(ctrl, ctrl, 0, np.random.default_rng(0))
    assert same["value"] == 0.0 and np.isnan(same["ci_low"])


def test_neutral_baseline_varies_across_contexts_and_the_drift_is_reported(minilm, tmp_path):
    subset = ContextSet("s", [c for c in builtin_contexts().contexts
                              if c.word in ("bat", "mouse", "bass", "toucan", "argon")])
    full = builtin_concepts()
    path = tmp_path / "concepts.json"  # a small concept set holding the senses: few concept words to extract
    path.write_text(json.dumps({c: full.concepts[c][:6] for c in (
        "animals", "sports_equipment", "computer_hardware", "fish", "musical_instruments", "birds",
        "chemical_elements")}))
    cfg = ContextsConfig(concepts=str(path), permutations=20, bootstrap=50, seed=3)
    result = measure_contexts(cfg, loaded=minilm, contexts=subset, quiet=True)
    assert len(result.info["baseline_frames"]) > 1
    rows = [i for i, c in enumerate(subset.contexts) if c.word == "bat"]
    base = result.base_vectors["6"][rows]
    assert np.ptp(base, axis=0).max() > 1e-3  # the out-of-context vector is not one vector per word any more
    drift = result.drift["6"]
    assert set(drift) == {"accuracy_gain_minus_controls_2way", "shift_minus_controls_2way",
                          "accuracy_gain_minus_controls_all", "shift_minus_controls_all"}
    d = drift["shift_minus_controls_2way"]
    assert d["value"] == pytest.approx(d["polysemous"] - d["controls"])
    alone = measure_contexts(dataclasses.replace(cfg, baseline="alone"), loaded=minilm, contexts=subset, quiet=True)
    assert np.ptp(alone.base_vectors["6"][rows], axis=0).max() == 0.0
