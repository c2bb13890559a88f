"""Recovery of the synthetic world's known dictionary by ``mcicl probe dictionary``'s own procedure, against the
world's noise level and sparsity.

For each (sigma, polysemy_rate) the synthetic world of that config draws its exported words (``features.npz``:
K concepts x 2 signs x n_features words, each mu_k^s plus every allowed other concept's feature with probability
polysemy_rate, plus N(0, sigma^2 I) noise), the dictionary job fits them exactly as it fits real vectors (sizes
chosen on held-out words by the one-SE rule), and the 2K true atoms mu_k^{+-} are matched one to one (Hungarian)
with the chosen dictionary's atoms. A word carries 1 + Binomial(n_allowed, polysemy_rate) features, so
polysemy_rate sets the sparsity.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from mcicl.core.vectors import Space
from mcicl.probing.dictionary import fit_space
from mcicl.probing.dictionary_config import DictionaryConfig
from mcicl.synthetic.config import SyntheticConfig
from mcicl.synthetic.data import _allowed, build_dictionary
from mcicl.synthetic.export import feature_sets


def features_per_word(sc: SyntheticConfig) -> float:
    """Expected features per exported word: its own plus polysemy_rate times the concepts allowed to co-occur."""
    allowed = _allowed(sc.K + sc.K_irr, sc.K, sc.cooccurrence)[: sc.K].sum(dim=1).double().mean().item()
    return 1.0 + sc.polysemy_rate * allowed


def recovery_point(dc: DictionaryConfig, **world: Any) -> dict[str, Any]:
    """One world (SyntheticConfig fields ``world``): the job's fit and its recovery of the true atoms."""
    sc = SyntheticConfig(**world)
    fs = feature_sets(sc, build_dictionary(sc))
    r = fit_space(Space("synthetic", fs["features"]), dc, truth=fs["dictionary"])
    rec = r["recovery"]
    return {**world, "features_per_word": features_per_word(sc), "atoms": r["choice"].atoms,
            "nonzeros": r["choice"].nonzeros, "share_matched_0_9": rec["share_matched_0_9"],
            "mean_matched_cos": float(np.mean(rec["matched_cos"])), "min_matched_cos": float(rec["matched_cos"].min()),
            "amari": rec["amari"], "share_by_nonzeros": rec["share_matched_0_9_by_nonzeros"]}


def recovery_sweep(dc: DictionaryConfig, sigmas: Sequence[float], rates: Sequence[float], *,
                   seed: int = 0) -> list[dict[str, Any]]:
    """:func:`recovery_point` over every (sigma, polysemy_rate), the world drawn with ``seed`` (the label-null
    permutations are not needed for recovery, so the fit runs with one)."""
    quick = dataclasses.replace(dc, permutations=1, baselines=[])
    return [recovery_point(quick, seed=seed, sigma=float(s), polysemy_rate=float(p)) for s in sigmas for p in rates]
