"""A synthetic world built from a fitted sparse code, compared with the moment-matched world on held-out words.

The moment-matched world (:mod:`analysis.matched`) chooses four generator parameters so that the sampler's words
reproduce four moments of a real space's raw cosines. The *fitted* world reads the generator's parameters off a
sparse dictionary learned on the real vectors instead (:func:`analysis.engine.code_parameters.code_parameters`:
number of concepts and of irrelevant concepts, within- and cross-concept feature cosines, co-occurring feature
energy, noise energy) and maps them onto :class:`synthetic.config.SyntheticConfig` (:func:`world_from_code`).

Comparison (:func:`compare_worlds`): the real words are split per concept into a fitting half and a held-out half.
Both worlds are fitted on the fitting half only; the held-out half gives the real statistics: the mean raw cosine
within each concept and between each concept pair, and each word's off-concept loading (the share of its OMP code's
|loading| on atoms its concept does not own, on the dictionary learned on the fitting half). Each world is measured
by the same procedure on its own words: words drawn by the synthetic sampler with as many per concept as the real
fitting and held-out halves have, a dictionary with as many atoms per concept as the real one learned on the world's
fitting words, the statistics on its held-out words, pooled over ``replicates`` independently drawn dictionaries. A
world's distance is the 1-Wasserstein distance between its distribution of each statistic and the real held-out
one (cosines: the mean of the within and the cross distance); intervals come from a paired bootstrap over the real
units (concepts, concept pairs, words) with the worlds' own units resampled too
(:func:`analysis.engine.code_parameters.paired_distances`). Controls: the fitted world's concepts with the
generator's default parameters, and with deliberately mismatched ones (:func:`analysis.matched.mismatched_parameters`).
"""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from mcicl.analysis.engine.code_parameters import (
    CodeParameters,
    HeldOutStatistics,
    atom_owners,
    code_parameters,
    heldout_statistics,
    paired_distances,
)
from mcicl.analysis.engine.measures import encode_labels
from mcicl.analysis.engine.sparse_coding import Learner, learn_dictionaries, sparse_codes
from mcicl.analysis.matched import (
    PARAMETERS,
    estimate_parameters,
    matched_config,
    mismatched_parameters,
    simulate_words,
)
from mcicl.core.io import strict_json
from mcicl.core.jobs import JobContext
from mcicl.core.vectors import LabelledVectors
from mcicl.probing.dictionary import DictionaryResult
from mcicl.probing.dictionary import execute as dictionary_execute
from mcicl.probing.dictionary import learner as solver_of
from mcicl.probing.dictionary_config import DictionaryConfig
from mcicl.synthetic.config import SyntheticConfig
from mcicl.synthetic.data import _allowed

WORLDS = ("fitted", "moment_matched", "defaults", "mismatched")


def allowed_partners(K: int, K_irr: int, cooccurrence: str) -> float:
    """Mean number of concepts that may co-occur in a task concept's word under the generator's rule."""
    return float(_allowed(K + K_irr, K, cooccurrence)[:K].sum(dim=1).double().mean())


def rate_from_energy(energy: float, cross: float, n_allowed: float) -> float:
    """polysemy_rate r whose co-occurring features have energy ``energy`` in own-feature units: with m ~
    Binomial(n, r) unit features of pairwise cosine ``cross``, E||sum||^2 = n r + n (n - 1) r^2 cross; the root in
    [0, 1] (clipped)."""
    n = float(n_allowed)
    if n <= 0 or energy <= 0:
        return 0.0
    a, b = n * (n - 1) * cross, n
    r = energy / b if a <= 1e-12 else (-b + math.sqrt(b * b + 4 * a * energy)) / (2 * a)
    return float(min(max(r, 0.0), 1.0))


def world_from_code(params: CodeParameters, base: SyntheticConfig) -> SyntheticConfig:
    """``base`` with the generator parameters read off a fitted code: K and K_irr from the atoms, within_cosine and
    cross_overlap clipped into the generator's ranges, polysemy_rate from the co-occurring energy under ``base``'s
    co-occurrence rule, sigma giving the code's noise energy at the world's dimension (``base.d``, raised to what
    the dictionary needs)."""
    K, K_irr = max(1, params.n_concepts), params.n_irrelevant
    within = float(min(max(params.within_cosine, 0.0), 0.97))
    cross = float(min(max(params.cross_overlap, 0.0), (1 + within) / 2 * 0.999))
    rate = rate_from_energy(params.other_energy, cross, allowed_partners(K, K_irr, base.cooccurrence))
    # directions_needed read off a namespace: a config at too small a d would not construct.
    need = SyntheticConfig.directions_needed(SimpleNamespace(K=K, K_irr=K_irr, shared_labels=base.shared_labels,
                                                             cross_overlap=cross))  # type: ignore[arg-type]
    d = max(base.d, need)
    return dataclasses.replace(base, K=K, K_irr=K_irr, within_cosine=within, cross_overlap=cross, d=d,
                               polysemy_rate=rate, sigma=math.sqrt(max(params.noise_energy, 0.0) / d), scenarios=[])


def fit_code(x: np.ndarray, labels: np.ndarray, atoms: int, nonzeros: int, *, seed: int, iterations: int,
             learner: Learner = learn_dictionaries) -> tuple[np.ndarray, CodeParameters]:
    """A dictionary of ``atoms`` atoms at ``nonzeros`` per word learned on ``x`` and the parameters its code reads."""
    x = np.asarray(x, dtype=np.float64)
    dic = learner(x, min(atoms, len(x)), [nonzeros], seed=seed, max_iter=iterations)[nonzeros]
    return dic, code_parameters(x, labels, dic, sparse_codes(x, dic, nonzeros), nonzeros)


def _per_sign(labels: np.ndarray) -> int:
    """Words per (concept, sign) that mirror a real half: half its median words per concept (at least 1)."""
    _, counts = np.unique(np.asarray(labels, dtype=str), return_counts=True)
    return max(1, int(math.ceil(float(np.median(counts)) / 2)))


def world_statistics(config: SyntheticConfig, *, atoms_per_concept: float, nonzeros: int, fit_per_sign: int,
                     heldout_per_sign: int, replicates: int, seed: int, iterations: int,
                     learner: Learner = learn_dictionaries) -> HeldOutStatistics:
    """A world's held-out statistics by the real data's procedure (module docstring), pooled over ``replicates``
    dictionaries drawn with seeds from ``seed``."""
    parts = []
    for r in range(replicates):
        cfg = dataclasses.replace(config, seed=int(seed) * 101 + r, scenarios=[])
        fit = simulate_words(cfg, fit_per_sign, seed=2 * r)
        held = simulate_words(cfg, heldout_per_sign, seed=2 * r + 1)
        atoms = max(2, int(round(atoms_per_concept * cfg.K)))
        dic = learner(fit.vectors, min(atoms, len(fit.vectors)), [nonzeros], seed=seed + r,
                      max_iter=iterations)[nonzeros]
        lab, names = encode_labels(fit.labels)
        owner = atom_owners(sparse_codes(fit.vectors, dic, nonzeros), lab, len(names))
        parts.append(heldout_statistics(held.vectors, held.labels, dic, owner, names, nonzeros))
    return HeldOutStatistics(*(np.concatenate([getattr(p, f.name) for p in parts])
                               for f in dataclasses.fields(HeldOutStatistics)))


def compare_worlds(fit: LabelledVectors, heldout: LabelledVectors, *, atoms: int, nonzeros: int,
                   base: SyntheticConfig | None = None, n_boot: int = 1000, seed: int = 0, iterations: int = 30,
                   replicates: int = 4, moment_per_sign: int = 40,
                   learner: Learner = learn_dictionaries) -> dict[str, Any]:
    """The fitted world against the moment-matched world and two controls on the held-out words (module docstring).
    ``fit`` and ``heldout``: disjoint words of the same concepts; ``atoms``, ``nonzeros``: the real dictionary's
    size (probe dictionary's choice). Returns the parameters of every world, the real code's estimates, and per world
    its distances with intervals and the fitted world's paired differences from it."""
    base = base or SyntheticConfig()
    with threadpool_limits(limits=1, user_api="blas"):  # many small products: threads only add overhead
        dic, params = fit_code(fit.vectors, fit.labels, atoms, nonzeros, seed=seed, iterations=iterations,
                               learner=learner)
        fitted = world_from_code(params, base)
        mm_base = dataclasses.replace(base, scenarios=[])
        est = estimate_parameters(fit.vectors, fit.labels, mm_base, n_per_sign=moment_per_sign, seed=seed)
        defaults = SyntheticConfig()
        worlds = {"fitted": fitted, "moment_matched": matched_config(mm_base, est),
                  "defaults": dataclasses.replace(fitted, **{p: getattr(defaults, p) for p in PARAMETERS}),
                  "mismatched": dataclasses.replace(
                      fitted, **mismatched_parameters({p: getattr(fitted, p) for p in PARAMETERS}, fitted.d))}
        real = heldout_statistics(heldout.vectors, heldout.labels, dic, params.atom_owner, params.concept_names,
                                  nonzeros)
        per_concept = atoms / max(params.n_concepts, 1)
        stats = {name: world_statistics(cfg, atoms_per_concept=per_concept, nonzeros=nonzeros,
                                        fit_per_sign=_per_sign(fit.labels), heldout_per_sign=_per_sign(heldout.labels),
                                        replicates=replicates, seed=seed, iterations=iterations, learner=learner)
                 for name, cfg in worlds.items()}
    distances = paired_distances(real, stats, "fitted", n_boot=n_boot, seed=seed)
    closer = distances["moment_matched"]
    return {
        "code_parameters": params.row(),
        "worlds": {name: {"K": cfg.K, "K_irr": cfg.K_irr, "d": cfg.d, **{p: float(getattr(cfg, p))
                                                                        for p in PARAMETERS}}
                   for name, cfg in worlds.items()},
        "moment_loss": est.loss, "distances": distances,
        "real": {"concepts": len(real.within), "pairs": len(real.cross), "words": len(real.off_loading),
                 "fit_words": len(fit.vectors)},
        "atoms": atoms, "nonzeros": nonzeros, "replicates": replicates,
        "closer": {stat: ("fitted" if closer[f"{stat}_fitted_minus_this_ci"][1] < 0 else "moment_matched"
                          if closer[f"{stat}_fitted_minus_this_ci"][0] > 0 else "neither (interval spans 0)")
                   for stat in ("cosines", "loadings")},
        "units": {"cosines": "concepts (within) and concept pairs (cross) of the held-out words",
                  "loadings": "held-out words"},
    }


def split_halves(lv: LabelledVectors, seed: int) -> tuple[LabelledVectors, LabelledVectors]:
    """Two disjoint random halves of each concept's words; concepts of fewer than 4 words are left out (each half
    needs a pair of words per concept for its within-concept cosine)."""
    rng = np.random.default_rng([seed, 17])
    a, b = [], []
    for lab in dict.fromkeys(lv.labels.tolist()):
        rows = rng.permutation(np.flatnonzero(lv.labels == lab))
        if len(rows) < 4:
            continue
        cut = (len(rows) + 1) // 2
        a += rows[:cut].tolist()
        b += rows[cut:].tolist()
    pick = [np.array(sorted(p)) for p in (a, b)]
    return tuple(LabelledVectors(lv.vectors[i], lv.words[i], lv.labels[i]) for i in pick)  # type: ignore[return-value]


def world_rows(comparison: dict[str, Any]) -> list[dict[str, Any]]:
    """worlds.csv: per world its parameters, distances with intervals and the fitted world's paired differences."""
    rows = []
    for name, params in comparison["worlds"].items():
        dist = comparison["distances"][name]
        row: dict[str, Any] = {"world": name, **params}
        for key, value in dist.items():
            if isinstance(value, list):
                row[f"{key}_low"], row[f"{key}_high"] = value
            else:
                row[key] = value
        rows.append(row)
    return rows


def add_world(result: DictionaryResult, seed: int, n_boot: int, iterations: int) -> str:
    """``probe dictionary --world``: :func:`compare_worlds` on the last fitted layer, words split into disjoint
    halves per concept (fit on the first, measured on the second), at the size the job chose for that layer; into
    the result's summary ('fitted_world') and worlds.csv. Returns the headline's line."""
    layer = list(result.results)[-1]
    choice = result.results[layer]["choice"]
    fit, held = split_halves(result.spaces[-1].concepts, seed)
    comparison = compare_worlds(fit, held, atoms=choice.atoms, nonzeros=choice.nonzeros, n_boot=n_boot, seed=seed,
                                iterations=iterations, learner=solver_of(result.config))
    result.summary["fitted_world"] = strict_json({"layer": layer, **comparison})
    result.world_rows = world_rows(comparison)
    d = comparison["distances"]["moment_matched"]
    lo, hi = d["cosines_fitted_minus_this_ci"]
    return (f"fitted world minus moment-matched world, cosine distance {d['cosines_fitted_minus_this']:+.3f} "
            f"[{lo:+.3f}, {hi:+.3f}] (closer: {comparison['closer']['cosines']}); ")


def execute(cfg: DictionaryConfig, ctx: JobContext) -> int:
    """``mcicl probe dictionary``: the probing job, plus the fitted world against the moment-matched one with
    ``--world`` (this layer, because the worlds need the synthetic sampler and the moment-matched estimator)."""
    if not cfg.world:
        return dictionary_execute(cfg, ctx)
    return dictionary_execute(cfg, ctx, extend=lambda r: add_world(r, cfg.seed, cfg.bootstrap, cfg.iterations))
