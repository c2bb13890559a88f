"""The geometry-matched synthetic world: the generator parameters that reproduce a real space's geometry.

Four generator parameters of :class:`synthetic.config.SyntheticConfig` -- ``within_cosine``,
``cross_overlap``, ``polysemy_rate`` and ``sigma`` -- are estimated from four moments of a labelled space's
raw (uncentred) cosine geometry:

- the mean within-concept cosine and the mean cross-concept cosine (:func:`analysis.geometry.concept_cosines`,
  the engine's own statistics), and
- the spread (standard deviation) of within-concept and of cross-concept pairwise cosines.

The map from parameters to moments is the synthetic sampler itself (``synthetic.data.sample_words``, the
words the transformer is trained on), evaluated with common random numbers and inverted numerically (a
coarse random search, then Nelder-Mead on bounded coordinates). Why these moments: the mean and spread of
within-concept cosines separate the two senses' cosine from the isotropic noise energy (same-sign pairs sit
near 1/(1+E), opposite-sign pairs near within_cosine/(1+E)); the cross mean is the shared component; the
cross spread grows with co-occurring features of other concepts (polysemy). The estimate is made at the
base config's dimension d, so sigma is the per-coordinate noise that gives the same noise share there.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from mcicl.analysis.engine.measures import concept_cosines, encode_labels, unit_rows
from mcicl.core.io import read_json
from mcicl.core.plotting import Caption, on_axes, palette, save_figure, styled, subplots
from mcicl.core.runs import RunFolder
from mcicl.core.shifts import matching
from mcicl.core.vectors import LabelledVectors
from mcicl.synthetic.data import build_dictionary, sample_words, train_spec
from mcicl.synthetic.train import train

log = logging.getLogger("mcicl")

PARAMETERS = ("within_cosine", "cross_overlap", "polysemy_rate", "sigma")
MOMENTS = ("within_mean", "within_std", "cross_mean", "cross_std")

# Synthetic OOD scenario -> (real ICL condition, how its shots relate to the synthetic L), read from the one table
# of distribution shifts (mcicl.core.shifts), which also says why some pairs are only the closest ones.
MATCHING = matching()


@dataclass
class Moments:
    """Raw-cosine moments of a labelled space (pairs of distinct words)."""

    within_mean: float
    within_std: float
    cross_mean: float
    cross_std: float

    def array(self) -> np.ndarray:
        """The moments in MOMENTS order."""
        return np.array([getattr(self, m) for m in MOMENTS])


@dataclass
class Estimate:
    """Estimated generator parameters, the target moments, the moments they reproduce, and the fit loss."""

    parameters: dict[str, float]
    target: Moments
    achieved: Moments
    loss: float
    evaluations: int
    d: int

    def rows(self) -> list[dict[str, Any]]:
        """Rows for estimate.csv: parameters, then moments (target vs achieved)."""
        out: list[dict[str, Any]] = [{"quantity": k, "kind": "parameter", "value": v, "target": "",
                                      "achieved": ""} for k, v in self.parameters.items()]
        out += [{"quantity": m, "kind": "moment", "value": "", "target": getattr(self.target, m),
                 "achieved": getattr(self.achieved, m)} for m in MOMENTS]
        return out


def measure_moments(vectors: np.ndarray, labels: Sequence[str] | np.ndarray) -> Moments:
    """The four raw-cosine moments of (vectors, labels): within/cross means (geometry engine) and spreads."""
    cos = concept_cosines(vectors, labels)
    U = unit_rows(np.asarray(vectors, dtype=np.float64))
    codes, _ = encode_labels(labels)
    G = U @ U.T
    same = codes[:, None] == codes[None, :]
    upper = np.triu(np.ones_like(same), k=1)
    within = G[same & upper]
    cross = G[~same & upper]
    return Moments(cos.within_mean, float(within.std()), cos.cross_mean, float(cross.std()))


def simulate_words(config: Any, n_per_sign: int = 40, seed: int = 0) -> LabelledVectors:
    """Words drawn by the synthetic sampler (training distribution), ``n_per_sign`` per (concept, sign)."""


    dic = build_dictionary(config)
    gen = torch.Generator().manual_seed(int(seed))
    k = torch.arange(config.K).repeat_interleave(2 * n_per_sign)
    s = torch.tensor([1, -1]).repeat_interleave(n_per_sign).repeat(config.K)
    words, _ = sample_words(dic, train_spec(config), k, s, gen)
    return LabelledVectors(words.double().numpy(), [f"w{i}" for i in range(len(k))], [f"c{int(c)}" for c in k],
                           s.numpy())


def simulate_moments(config: Any, n_per_sign: int = 40, seed: int = 0) -> Moments:
    """The moments of the synthetic sampler's words under ``config``."""
    words = simulate_words(config, n_per_sign, seed)
    return measure_moments(words.vectors, words.labels)


def _bounds(base: Any) -> dict[str, tuple[float, float]]:
    # sigma up to noise energy sigma^2 d = 4 (signal share 20%): beyond that no concept structure survives.
    return {"within_cosine": (0.0, 0.97), "cross_overlap": (0.0, 1.0), "polysemy_rate": (0.0, 1.0),
            "sigma": (0.0, 2.0 / math.sqrt(base.d))}


def _params(z: np.ndarray, bounds: Mapping[str, tuple[float, float]]) -> dict[str, float]:
    """Unbounded coordinates -> parameters (sigmoid into each range; cross_overlap as a share of its maximum)."""
    u = 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))
    p = {name: lo + (hi - lo) * float(ui) for (name, (lo, hi)), ui in zip(bounds.items(), u, strict=True)}
    p["cross_overlap"] *= (1.0 + p["within_cosine"]) / 2 * 0.999  # its valid range depends on within_cosine
    return p


def _coords(params: Mapping[str, float], bounds: Mapping[str, tuple[float, float]]) -> np.ndarray:
    p = dict(params)
    p["cross_overlap"] /= (1.0 + p["within_cosine"]) / 2 * 0.999
    z = []
    for name, (lo, hi) in bounds.items():
        u = np.clip((p[name] - lo) / (hi - lo), 1e-4, 1 - 1e-4)
        z.append(math.log(u / (1 - u)))
    return np.array(z)


def estimate_parameters(vectors: np.ndarray, labels: Sequence[str] | np.ndarray, base: Any, *,
                        n_per_sign: int = 80, seed: int = 0, n_search: int = 60, max_evals: int = 300) -> Estimate:
    """Generator parameters whose sampled words reproduce the moments of (vectors, labels), at ``base.d``."""

    # Hundreds of tiny (320 x 48) problems: one thread each is ~10x faster than a contended thread pool.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            return _estimate(vectors, labels, base, n_per_sign=n_per_sign, seed=seed, n_search=n_search,
                             max_evals=max_evals)
    finally:
        torch.set_num_threads(threads)


def _estimate(vectors: np.ndarray, labels: Sequence[str] | np.ndarray, base: Any, *, n_per_sign: int, seed: int,
              n_search: int, max_evals: int) -> Estimate:

    target = measure_moments(vectors, labels)
    goal = target.array()
    bounds = _bounds(base)
    # The synthetic world is evaluated without its OOD scenarios: they only add directions to the dictionary.
    base = replace(base, scenarios=[s for s in base.scenarios if s != "unseen_concept"])
    cache: dict[tuple, np.ndarray] = {}

    def moments_at(params: Mapping[str, float]) -> np.ndarray:
        key = tuple(round(params[p], 10) for p in PARAMETERS)
        if key not in cache:
            cache[key] = simulate_moments(replace(base, **params), n_per_sign, seed).array()
        return cache[key]

    def loss(z: np.ndarray) -> float:
        return float(np.sum((moments_at(_params(z, bounds)) - goal) ** 2))

    rng = np.random.default_rng(seed)
    # Coarse search: quasi-uniform points of the box, plus the base config's own parameters.
    starts = [_coords({p: getattr(base, p) for p in PARAMETERS}, bounds)]
    starts += [np.log(u / (1 - u)) for u in rng.uniform(0.03, 0.97, size=(n_search, len(PARAMETERS)))]
    scored = sorted(((loss(z), i) for i, z in enumerate(starts)))
    best = None
    for _, i in scored[:2]:  # refine the two best starts; keep the better
        res = minimize(loss, starts[i], method="Nelder-Mead",
                       options={"maxfev": max_evals // 2, "xatol": 1e-3, "fatol": 1e-9})
        if best is None or res.fun < best.fun:
            best = res
    params = _params(best.x, bounds)
    achieved = Moments(*moments_at(params))
    return Estimate({k: float(v) for k, v in params.items()}, target, achieved, float(best.fun), len(cache),
                    int(base.d))


def matched_config(base: Any, estimate: Estimate) -> Any:
    """``base`` with the estimated generator parameters."""
    return replace(base, **estimate.parameters)


# ----------------------------------------------------------------------------------------- comparison


def _get(mapping: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, Mapping) or key not in mapping:
            return None
        mapping = mapping[key]
    return mapping


def _nearest_shots(available: Sequence[str], want: float) -> str | None:
    shots = sorted((int(s) for s in available if str(s).isdigit()), key=lambda s: (abs(s - want), s))
    return str(shots[0]) if shots else None


def matched_rows(synthetic_summary: Mapping[str, Any], icl_summary: Mapping[str, Any] | None,
                 L: int) -> list[dict[str, Any]]:
    """One row per matching condition: the synthetic 0-1 error beside the real ICL error (1 - accuracy)."""
    rows = []
    accuracy = (icl_summary or {}).get("accuracy", {})
    for scenario, condition, factor in MATCHING:
        syn = (_get(synthetic_summary, "final", "test_zero_one") if scenario == "in_distribution"
               else _get(synthetic_summary, "ood", scenario, "test_zero_one"))
        if syn is None:
            continue
        row: dict[str, Any] = {"synthetic_condition": scenario, "synthetic_L": int(round(L * factor)),
                               "synthetic_error": float(syn), "real_condition": condition, "real_shots": "",
                               "real_error": math.nan, "real_error_low": math.nan, "real_error_high": math.nan,
                               "real_n": 0}
        per_shot = accuracy.get(condition) or {}
        shots = _nearest_shots(list(per_shot), L * factor)
        if shots is not None:
            acc = per_shot[shots]
            row.update(real_shots=int(shots), real_error=1 - float(acc["mean"]),
                       real_error_low=1 - float(acc["ci_high"]), real_error_high=1 - float(acc["ci_low"]),
                       real_n=int(acc.get("n", 0)))
        rows.append(row)
    return rows


MATCHED_CAPTION = Caption(
    "Geometry-matched synthetic world vs the real model",
    "Left: error of the synthetic transformer trained on the world whose generator parameters were estimated "
    "from the real model's geometry, in distribution and in each OOD scenario. Right: the real model's "
    "attention-readout ICL error on the matching conditions (bars: bootstrap 95% intervals).")


@styled
def matched_figure(rows: Sequence[Mapping[str, Any]], *, chance: float | None = None, title: str = "",
                   ax: Axes | None = None) -> Figure:
    """Bars: the matched synthetic world's error and the real model's ICL error per matching condition."""

    labels = [f"{r['synthetic_condition']} (L={r['synthetic_L']})\nreal: {r['real_condition']}"
              + (f"\n{r['real_shots']} shots" if r["real_shots"] != "" else "") for r in rows]
    x = np.arange(len(rows))
    syn = np.array([float(r["synthetic_error"]) for r in rows])
    real = np.array([float(r["real_error"]) for r in rows])
    lo = np.array([float(r["real_error_low"]) for r in rows])
    hi = np.array([float(r["real_error_high"]) for r in rows])
    c_syn, c_real = palette(2)
    fig, ax = on_axes(ax, figsize=(max(6.5, 1.9 * len(rows) + 1.5), 4.8))
    ax.bar(x - 0.2, syn, 0.4, color=c_syn, label="matched synthetic transformer")
    has_real = np.isfinite(real)
    if has_real.any():
        err = np.vstack([real - lo, hi - real])[:, has_real]
        ax.bar(x[has_real] + 0.2, real[has_real], 0.4, color=c_real, label="real model ICL (1 - accuracy)",
               yerr=err, capsize=3, ecolor="black")
    if chance is not None:
        ax.axhline(1 - chance, color="grey", ls="--", lw=1, label=f"chance error ({1 - chance:.2f})")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("0-1 error (fraction of test prompts)")
    ax.set_ylim(0, max(0.1, float(np.nanmax(np.concatenate([syn, hi[has_real] if has_real.any() else syn]))) * 1.15))
    ax.set_title(title or "Geometry-matched synthetic world vs the real model, per matching condition")
    ax.legend(loc="upper left", fontsize=8)
    return fig


def world_errors(summary: Mapping[str, Any], conditions: Sequence[str]) -> dict[str, list[float]]:
    """Per-seed 0-1 errors of a synthetic train summary for each condition (in_distribution: the test set; else
    the OOD scenario), where the summary has them."""
    out = {}
    for c in conditions:
        vals = (_get(summary, "final_per_seed", "test_zero_one") if c == "in_distribution"
                else _get(summary, "ood", c, "per_seed_zero_one"))
        if vals:
            out[c] = [float(v) for v in vals]
    return out


def agreement(errors: Mapping[str, Sequence[float]], real: Mapping[str, tuple[float, float, float]], *,
              n_bootstrap: int = 2000, seed: int = 0) -> dict[str, Any]:
    """How close a synthetic world is to the real model's readouts: the mean absolute difference of error over
    the conditions both have,

        MAD = (1 / |C|) sum_{c in C} | mean_s e_{s,c} - r_c |,

    with ``errors[c]`` the world's per-seed errors (the same seeds in every condition) and ``real[c]`` = (error,
    low, high), the real readout with its 95% interval. Interval: 2.5/97.5 percentiles over ``n_bootstrap`` draws
    that resample the world's seeds (paired across conditions) and draw each real error from a normal whose
    95% interval is the readout's (sd = (high - low) / 3.92). ``draws`` are kept for paired comparisons."""
    shared = [c for c in errors if c in real and all(math.isfinite(v) for v in real[c])]
    if not shared:
        return {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan, "conditions": [], "seeds": 0,
                "draws": np.array([])}
    E = np.array([errors[c] for c in shared], float)  # (C, S)
    r = np.array([real[c][0] for c in shared], float)
    sd = np.array([(real[c][2] - real[c][1]) / 3.92 for c in shared], float)
    value = float(np.mean(np.abs(E.mean(1) - r)))
    rng = np.random.default_rng(seed)
    S = E.shape[1]
    idx = rng.integers(0, S, size=(n_bootstrap, S))
    world = E[:, idx].mean(2).T  # (B, C)
    reals = r + sd * rng.standard_normal((n_bootstrap, len(shared)))
    draws = np.abs(world - reals).mean(1)
    lo, hi = np.percentile(draws, [2.5, 97.5])
    per_condition = dict(zip(shared, (float(v) for v in np.abs(E.mean(1) - r)), strict=True))
    return {"value": value, "ci_low": float(lo), "ci_high": float(hi), "conditions": shared, "seeds": S,
            "per_condition": per_condition,
            "bootstrap": n_bootstrap, "draws": draws,
            "unit": "world seeds resampled (paired across conditions) x real readout error drawn from its interval"}


def mismatched_parameters(estimate: Mapping[str, float], d: int) -> dict[str, float]:
    """A deliberately mismatched world: each estimated generator parameter moved to the other side of its range
    (within_cosine 0.9 or 0.1, cross_overlap 0 or 0.3, polysemy_rate 0.5 or 0, sigma 4x smaller or larger within
    the estimate's bound)."""
    w = 0.9 if estimate["within_cosine"] < 0.5 else 0.1
    cross = 0.0 if estimate["cross_overlap"] > 0.15 else min(0.3, (1 + w) / 2 * 0.9)
    poly = 0.5 if estimate["polysemy_rate"] < 0.25 else 0.0
    top = 2.0 / math.sqrt(d)
    sigma = estimate["sigma"] / 4 if estimate["sigma"] > top / 4 else min(top, 4 * estimate["sigma"] + 0.02)
    return {"within_cosine": w, "cross_overlap": cross, "polysemy_rate": poly, "sigma": sigma}


CONTROL_WORLDS = ("matched", "default", "mismatched")


def agreement_rows(results: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """agreement.csv: per world its MAD and interval, and (controls) the matched world's MAD minus theirs with the
    interval of the difference (independent bootstrap draws of the two worlds)."""
    rows = []
    m = results.get("matched")
    for name, a in results.items():
        row = {"world": name, "mad": a["value"], "ci_low": a["ci_low"], "ci_high": a["ci_high"],
               "conditions": len(a["conditions"]), "seeds": a["seeds"], "matched_minus_this": math.nan,
               "diff_ci_low": math.nan, "diff_ci_high": math.nan}
        if m is not None and name != "matched" and len(a["draws"]) and len(m["draws"]):
            diff = m["draws"] - a["draws"]
            row.update(matched_minus_this=m["value"] - a["value"], diff_ci_low=float(np.percentile(diff, 2.5)),
                       diff_ci_high=float(np.percentile(diff, 97.5)))
        rows.append(row)
    return rows


def run_matched(real: LabelledVectors, base: Any, run: RunFolder, *, icl_summary: Mapping[str, Any] | None = None,
                seed: int = 0, n_per_sign: int = 80, estimate: Estimate | None = None,
                controls: bool = True) -> dict[str, Any]:
    """Estimate (unless given), train the matched world into ``run.path/'synthetic'``, write matched.csv,
    estimate.csv and the figure; with ``controls`` (and real ICL readouts) also train the unmatched default world
    (SyntheticConfig's own geometry) and a deliberately mismatched one (:func:`mismatched_parameters`) with the
    same seeds and write agreement.csv: each world's mean absolute error difference from the real readouts, and
    whether the matched world is closer than both. Return the headline numbers."""

    if estimate is None:
        estimate = estimate_parameters(real.vectors, real.labels, base, n_per_sign=n_per_sign, seed=seed)
    log.info("matched world: %s (moment loss %.2e)", estimate.parameters, estimate.loss)
    config = matched_config(base, estimate)
    syn_run = RunFolder.create(run.path / "synthetic", "synthetic train (geometry-matched)", overwrite=True)
    syn_summary = train(config, syn_run).summary
    rows = matched_rows(syn_summary, icl_summary, config.L)
    run.write_csv("matched.csv", rows)
    run.write_csv("estimate.csv", estimate.rows())
    chance = (icl_summary or {}).get("chance")
    fig = matched_figure(rows, chance=float(chance) if chance is not None else None)
    png = save_figure(fig, run.figures, "matched", caption=MATCHED_CAPTION)
    out = {"parameters": estimate.parameters, "target_moments": asdict(estimate.target),
           "achieved_moments": asdict(estimate.achieved), "moment_loss": estimate.loss,
           "synthetic_run": str(syn_run.path), "rows": rows, "figure": str(png)}
    real_err = {r["synthetic_condition"]: (r["real_error"], r["real_error_low"], r["real_error_high"]) for r in rows
                if math.isfinite(r["real_error"])}
    if controls and real_err:
        defaults = type(base)()
        worlds = {"matched": (config, syn_summary),
                  "default": (replace(base, **{p: getattr(defaults, p) for p in PARAMETERS}), None),
                  "mismatched": (replace(base, **mismatched_parameters(estimate.parameters, base.d)), None)}
        results = {}
        for name, (cfg, summary) in worlds.items():
            if summary is None:
                summary = train(cfg).summary
            results[name] = agreement(world_errors(summary, list(real_err)), real_err, seed=seed)
        table = agreement_rows(results)
        run.write_csv("agreement.csv", table)
        by = {r["world"]: r for r in table}
        closer = all(by[w]["diff_ci_high"] < 0 for w in ("default", "mismatched"))
        out["agreement"] = {
            "statistic": "mean absolute difference of 0-1 error over shared conditions (world seed mean vs real)",
            "interval": "95% percentile bootstrap: " + results["matched"].get("unit", ""),
            "worlds": {r["world"]: {k: v for k, v in r.items() if k != "world"} for r in table},
            "per_condition": {name: a["per_condition"] for name, a in results.items()},
            "parameters": {name: {p: getattr(cfg, p) for p in PARAMETERS} for name, (cfg, _) in worlds.items()},
            "matched_closer_than_both": bool(closer),
            "verdict": ("the matched world is closer to the real readouts than both controls (both differences' "
                        "intervals below 0)" if closer else "the matched world is NOT shown closer than both "
                        "controls (a difference interval reaches 0 or above)")}
        fig = agreement_figure(table, {name: a["per_condition"] for name, a in results.items()})
        out["agreement"]["figure"] = str(save_figure(fig, run.figures, "agreement", caption=AGREEMENT_CAPTION))
    return out


AGREEMENT_CAPTION = Caption(
    "Matched world against its controls",
    "Mean absolute difference between each synthetic world's 0-1 error (mean over seeds) and the real model's ICL "
    "error, over the conditions both have; bars: 95% bootstrap intervals (world seeds resampled, real errors drawn "
    "from their intervals). The matched world must sit below the unmatched default world and a deliberately "
    "mismatched one.")


@styled
def agreement_figure(rows: Sequence[Mapping[str, Any]],
                     per_condition: Mapping[str, Mapping[str, float]] | None = None) -> Figure:
    """Left: each world's mean absolute error difference from the real readouts, with its interval. Right (with
    ``per_condition``): the absolute difference per condition and world, so a reader sees which conditions the mean
    is made of. Two panels, so it draws its own figure (no ``ax``)."""
    fig, axes = subplots(1, 2 if per_condition else 1, figsize=(11.5 if per_condition else 5.5, 4.3),
                         squeeze=False)
    ax = axes[0][0]
    x = np.arange(len(rows))
    v = np.array([r["mad"] for r in rows], float)
    lo = np.array([r["ci_low"] for r in rows], float)
    hi = np.array([r["ci_high"] for r in rows], float)
    colours = palette(len(rows))
    ax.bar(x, v, 0.6, color=colours, yerr=np.vstack([v - lo, hi - v]), capsize=4, ecolor="black")
    ax.set_xticks(x, [f"{r['world']}\n({r['seeds']} seeds, {r['conditions']} cond.)" for r in rows], fontsize=8)
    ax.set_ylabel("mean |synthetic error - real error|")
    ax.set_title("Which synthetic world is closest to the real readouts", fontsize=10)
    if per_condition:
        ax2 = axes[0][1]
        conditions = list(next(iter(per_condition.values())))
        for k, (row, colour) in enumerate(zip(rows, colours, strict=True)):
            vals = per_condition[row["world"]]
            ax2.scatter(np.arange(len(conditions)) + (k - 1) * 0.15, [vals.get(c, np.nan) for c in conditions],
                        color=colour, label=row["world"], zorder=3)
        ax2.set_xticks(np.arange(len(conditions)), [c.replace("_", " ") for c in conditions], rotation=30,
                       ha="right", fontsize=8)
        ax2.set_ylabel("|synthetic error - real error|")
        ax2.set_title("per condition", fontsize=10)
        ax2.legend(fontsize=8)
    return fig


def load_icl_summary(path: str | Path | None) -> dict[str, Any] | None:
    """The summary.json of a ``probe icl`` run folder (None when no folder is given)."""
    if path is None:
        return None
    path = Path(path)
    file = path / "summary.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"ICL summary not found: {file} (a `mcicl probe icl` run folder)")
    return read_json(file)
