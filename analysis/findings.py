"""``mcicl findings``: every headline number of the README, made by code, each with its interval, controls,
selection rule and replication.

A *finding* is a JSON-safe record::

    id, group, claim, value, interval [low, high], resampled (seeds / episodes / concepts / words), n, better
    (higher / lower), controls [{name, value, interval}], p_value + p_text (a permutation p at its floor is written
    '< 1/(B+1)'), selection {rule, disjoint} (when a layer, head or beta was chosen), replication {description,
    first, second, overlap}, verdict, command

The verdict compares intervals, not point values: a finding *beats* a control when its interval lies wholly on the
better side of the control's interval (or value, for a control without one); otherwise it says which control it
does not beat. The replication is the same statistic on an independent seed, episode set or word half, with
whether the two intervals overlap.

Findings come in groups (``GROUPS`` of :mod:`mcicl.analysis.findings_config`); each finished group is saved as
``groups/<name>.json`` as soon as it completes, so ``--resume`` recomputes only what is missing, or what was
measured at other values of the settings that group reads (``GROUP_SETTINGS``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import multiprocessing
import os
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy.stats import spearmanr
from threadpoolctl import threadpool_limits

from mcicl.analysis.dictionary_recovery import recovery_sweep
from mcicl.analysis.engine.context_measures import drift_controlled
from mcicl.analysis.engine.controls import heldout_concept_probe
from mcicl.analysis.engine.measures import centring_report, encode_labels, geometry_summary, prepare
from mcicl.analysis.engine.qk_products import rank_correlation
from mcicl.analysis.engine.sparse_coding import bootstrap_mean
from mcicl.analysis.findings_config import GROUP_COST, GROUP_SETTINGS, NEEDS, FindingsConfig, fast_settings
from mcicl.analysis.fitted_world import compare_worlds, split_halves
from mcicl.analysis.matched import (
    MATCHING,
    PARAMETERS,
    agreement,
    agreement_rows,
    estimate_parameters,
    matched_config,
    matched_rows,
    mismatched_parameters,
    world_errors,
)
from mcicl.core.configuration import to_dict
from mcicl.core.io import read_json, write_json
from mcicl.core.jobs import JobContext
from mcicl.core.plotting import Caption, save_figure
from mcicl.core.pvalues import p_text
from mcicl.core.runs import RunFolder
from mcicl.core.vectors import LabelledVectors, Space
from mcicl.probing.contextual import ContextsConfig, load_contexts, measure_contexts
from mcicl.probing.datasets import load_concept_set
from mcicl.probing.datasets.supersenses import supersense_concepts
from mcicl.probing.dictionary import fit_space, measure_dictionary
from mcicl.probing.dictionary_config import DictionaryConfig
from mcicl.probing.dictionary_contexts import context_code_shift
from mcicl.probing.extract_config import ExtractionConfig
from mcicl.probing.geometry import BASELINE_NAMES, measure_baselines, measure_geometry, spaces_from_model
from mcicl.probing.geometry_config import GeometryConfig
from mcicl.probing.icl.attention import attention_probe, head_stability
from mcicl.probing.icl.attention_config import ATTENTION_CONDITIONS, AttentionConfig
from mcicl.probing.icl.episodes import CONTEXT_CONDITIONS, DEFAULT_CONDITIONS, EpisodeConfig
from mcicl.probing.icl.icl_config import IclConfig
from mcicl.probing.icl.run import icl_probe, summarise
from mcicl.probing.icl.stats import bootstrap_accuracy
from mcicl.probing.icl.tasks import load_suite
from mcicl.probing.mechanism.circuits import measure_circuits
from mcicl.probing.mechanism.circuits_config import CircuitsConfig
from mcicl.probing.mechanism.steer_config import SteerConfig
from mcicl.probing.mechanism.steering import steer
from mcicl.probing.models import LoadedModel, baseline_model, load_model
from mcicl.probing.semcor import default_semcor, load_semcor_contexts
from mcicl.probing.semcor_config import SemcorConfig
from mcicl.probing.semcor_job import measure_semcor, pair_auc_halves
from mcicl.synthetic.cells import StopRule, sweep_cells
from mcicl.synthetic.config import SyntheticConfig
from mcicl.synthetic.convergence import ci95
from mcicl.synthetic.data import build_dictionary
from mcicl.synthetic.export import feature_sets
from mcicl.synthetic.train import ALIGNS, align_sensitivity, train

log = logging.getLogger(__name__)

BEATS = "beats its controls"
GEOMETRY_BASELINES = ("random_weights", "embeddings", "random_blocks")
FOREST_CAPTION = Caption(
    "Findings beside their controls",
    "Each finding's estimate (black) and 95% interval beside its controls (squares with their intervals, coloured by "
    "kind: model baselines, context-blind or static readouts, nulls and chance, other conditions), one panel per "
    "group; the open circle is the replication's estimate; a cross marks a finding that does not "
    "beat a control.")
README_BEGIN, README_END = "<!-- findings:begin -->", "<!-- findings:end -->"
REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ records
def interval(low: float | None, high: float | None) -> list[float | None]:
    """[low, high] with non-finite ends as None."""
    return [_num(low), _num(high)]


def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def estimate(value: float | None, ci: Sequence[float | None], n: int) -> dict[str, Any]:
    """{value, interval, n}: one measurement of a statistic."""
    return {"value": _num(value), "interval": interval(*ci), "n": int(n)}


def control(name: str, value: float | None, ci: Sequence[float | None] | None = None) -> dict[str, Any]:
    """A control or baseline that could have produced the finding: its name, value and interval (None: a fixed
    reference such as chance)."""
    return {"name": name, "value": _num(value), "interval": interval(*ci) if ci is not None else None}


def overlaps(a: Sequence[float | None], b: Sequence[float | None]) -> bool | None:
    """Whether intervals ``a`` and ``b`` overlap (None when either has a missing end)."""
    if None in a or None in b:
        return None
    return bool(a[0] <= b[1] and b[0] <= a[1])


def replication(description: str, first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """The same statistic twice, on independent data: both estimates and whether their intervals overlap."""
    return {"description": description, "first": first, "second": second,
            "overlap": overlaps(first["interval"], second["interval"])}


def verdict(value_interval: Sequence[float | None], better: str, controls: Sequence[dict[str, Any]]) -> str:
    """'beats its controls', or 'does not beat <names>' for each control the interval does not clear."""
    lost = []
    for c in controls:
        ref = c["interval"] if c["interval"] is not None and None not in c["interval"] else [c["value"], c["value"]]
        if None in value_interval or None in ref:
            lost.append(c["name"])
        elif better == "higher" and not value_interval[0] > ref[1]:
            lost.append(c["name"])
        elif better == "lower" and not value_interval[1] < ref[0]:
            lost.append(c["name"])
    return BEATS if not lost else "does not beat " + ", ".join(lost)


def finding(id: str, group: str, claim: str, main: dict[str, Any], *, resampled: str, better: str,
            controls: Sequence[dict[str, Any]], second: dict[str, Any], replicated_on: str, command: str,
            p_value: float | None = None, permutations: int | None = None, selection: dict[str, str] | None = None,
            headline: bool = False, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One finding record (see the module docstring); ``main`` and ``second`` are :func:`estimate` dicts."""
    return {
        "id": id, "group": group, "claim": claim, "value": main["value"], "interval": main["interval"],
        "resampled": resampled, "n": main["n"], "better": better, "controls": list(controls),
        "p_value": _num(p_value), "permutations": permutations,
        "p_text": p_text(p_value, permutations) if permutations else None,
        "selection": selection, "replication": replication(replicated_on, main, second),
        "verdict": verdict(main["interval"], better, controls) if main["value"] is not None else
        "not measured (no estimate: see extra)", "command": command, "headline": headline,
        "extra": extra or {},
    }


def seed_estimate(values: Sequence[float], bounds: tuple[float, float] | None = (0.0, 1.0)) -> dict[str, Any]:
    """Mean over seeds with its Student-t 95% interval (n = seeds), clipped to ``bounds`` (a proportion's [0, 1];
    None for a rate or curvature): a t interval around an error near 0 would otherwise reach below 0."""
    v = [float(x) for x in values if x is not None and math.isfinite(x)]
    mean = float(np.mean(v)) if v else None
    low, high = ci95(v)
    if bounds is not None and low is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return estimate(mean, (low, high), len(v))


def stat_estimate(stat: dict[str, Any]) -> dict[str, Any]:
    """An estimate from a geometry/context Stat dict (value, ci_low, ci_high, n)."""
    return estimate(stat["value"], (stat["ci_low"], stat["ci_high"]), stat["n"])


def acc_estimate(acc: dict[str, Any], n_episodes: int) -> dict[str, Any]:
    """An estimate from an ICL accuracy cell (mean, ci_low, ci_high; resampled over episodes)."""
    return estimate(acc["mean"], (acc["ci_low"], acc["ci_high"]), n_episodes)


# ---------------------------------------------------------------------------------------- the groups
@dataclass
class Shared:
    """What the groups of one run share: the config, the real model (loaded once on first use) and the findings
    of the groups done so far (``done``: group -> findings; the matched world reads the icl group's)."""

    cfg: FindingsConfig
    _loaded: LoadedModel | None = None
    done: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)

    @property
    def loaded(self) -> LoadedModel:
        if self._loaded is None:
            self._loaded = load_model(self.cfg.model, device="cpu")
        return self._loaded

    def command(self, group: str) -> str:
        fast = " --fast" if self.cfg.fast else ""
        model = f" --model {self.cfg.model}" if self.cfg.model != "default" else ""
        return f"mcicl findings --groups {group}{model}{fast} --seed {self.cfg.seed}"


def _synthetic(cfg: FindingsConfig, seed: int, **kw: Any) -> Any:
    # One fixed test set unless a run asks for fresh ones: these runs' final errors are single evaluations (no
    # fit across evaluations), and a fixed set costs no prompt draw per evaluation; the convergence fits pass
    # test_prompts="fresh" (independent counts).
    kw.setdefault("test_prompts", "fixed")
    sc = SyntheticConfig(seeds=cfg.seeds, steps=kw.pop("steps", cfg.steps), n_test=cfg.n_test,
                         n_test_ood=cfg.n_test_ood, seed=seed, **kw)
    return train(sc, figures=False)


ORACLE_START = {"readout_init": "aligned", "readout_align": 0.2}  # the former default: an oracle warm start


def _converged(errors: Sequence[float], level: float = 0.01) -> int:
    """Seeds whose final test error is at most ``level``."""
    return sum(1 for e in errors if e is not None and e <= level)


def group_synthetic(sh: Shared) -> list[dict[str, Any]]:
    """The synthetic world from the default, non-oracle initialisation (a random readout: no label direction
    enters the init): test error, attention polarisation, convergence, every OOD scenario beside the
    context-blind query-only and the nearest-demonstration baselines; the oracle warm start beside it; the
    flipped-label claim on `value: projected` (labels and words both reach the output) beside the same model
    trained with the demonstrations' labels hidden (context-blind).

    Publication cost (5 seeds, 400 steps, 10,000 test prompts): 5 training runs with a fixed test set (main,
    replication, oracle start, projected, projected context-blind; about 60 s each on 2 shared cores) and 2 with
    fresh test prompts at every 10th step for the convergence fits (main and replication seeds; a prompt draw
    per evaluation, about 4 x a fixed-set run each): about 13 minutes in all."""
    cfg, group = sh.cfg, "synthetic"
    main = _synthetic(cfg, cfg.seed)
    # Fresh dictionaries per seed: the replication varies the world too, not only init and prompts.
    rep = _synthetic(cfg, cfg.replication_seed, dictionary="per_seed")
    oracle = _synthetic(cfg, cfg.seed, scenarios=[], **ORACLE_START)
    projected = _synthetic(cfg, cfg.seed, value="projected")
    blind = _synthetic(cfg, cfg.seed, value="projected", demo_labels="hidden")
    rep_text = (f"{cfg.seeds} seeds from seed {cfg.replication_seed}, a fresh dictionary per seed "
                f"(main: {cfg.seeds} seeds from seed {cfg.seed}, one shared dictionary)")
    common = {"group": group, "resampled": "seeds", "replicated_on": rep_text, "command": sh.command(group)}
    out = []

    def baselines(run: Any, scenario: str | None) -> list[dict[str, Any]]:
        b = run.summary["baselines"]["test"] if scenario is None else run.summary["baselines"]["ood"][scenario]
        return [control(f"{name.replace('_', '-')} baseline", **_seed_control(b[name]))
                for name in ("query_only", "nearest_demonstration")]

    def errors(run: Any, scenario: str | None) -> list[float]:
        s = run.summary
        return s["final_per_seed"]["test_zero_one"] if scenario is None else s["ood"][scenario]["per_seed_zero_one"]

    def init_extra(run: Any) -> dict[str, Any]:
        return {"oracle_init": run.summary["oracle_init"], "init": run.summary["init"]["rule"]}

    main_err = errors(main, None)
    out.append(finding(
        "synthetic.test_error", claim="The trained one-layer transformer's in-distribution test 0-1 error "
        f"({cfg.n_test} prompts per seed), from a random initialisation (no ground truth in the init).",
        main=seed_estimate(main_err), better="lower", controls=baselines(main, None),
        second=seed_estimate(errors(rep, None)), headline=True,
        extra={**init_extra(main), "per_seed": main_err, "seeds_converged_1pct": _converged(main_err),
               "oracle_start": seed_estimate(errors(oracle, None)), "oracle_start_init": init_extra(oracle)["init"]},
        **common))
    # With a random readout each concept's attention may go to same-sign or to opposite-sign demonstrations (the
    # readout's sign symmetry): polarisation |2 correct - 1| is the statistic that does not need the oracle sign.
    pol = main.summary["final_per_seed"]
    pol_main = [r for r in main.metrics[-1]["test"]["polarisation"]]
    pol_init = main.metrics[0]["test"]["polarisation"]
    out.append(finding(
        "synthetic.correct_attention", claim="Attention polarisation |2 x (mass on same-sign demonstrations) - 1| "
        "per concept after training (sign-symmetric: with a random readout a concept may attend to the "
        "opposite-sign demonstrations and read their label inverted).", main=seed_estimate(pol_main),
        better="higher", controls=[control("untrained model (step 0)", **_seed_control(pol_init))],
        second=seed_estimate(rep.metrics[-1]["test"]["polarisation"]), headline=True,
        extra={"statistic": "polarisation", "correct_attention_per_seed": pol["correct_attention"],
               "oracle_start_correct_attention": seed_estimate(oracle.summary["final_per_seed"]["correct_attention"])},
        **common))
    # Independent counts for the convergence fits: a fresh test set at every evaluation (every 10 steps), main
    # seeds and the replication's; the fixed-set fit of the main run is reported beside it.
    fresh_kw = {"scenarios": [], "test_prompts": "fresh", "eval_every": 10, "ood_every": 10}
    fresh = _synthetic(cfg, cfg.seed, **fresh_kw)
    fresh_rep = _synthetic(cfg, cfg.replication_seed, dictionary="per_seed", **fresh_kw)
    conv_fixed = main.summary["convergence"]
    conv, conv_rep, conv_or = (r.summary["convergence"] for r in (fresh, fresh_rep, oracle))
    window = {k: seed_estimate(v["per_seed"], None) for k, v in conv["rate_by_window_start"].items()}
    out.append(finding(
        "synthetic.convergence.rate", claim="The slope of logit(test error) per step over the window from 10% "
        "error to the last error (a binomial fit with quasi-binomial errors, per seed); the curve is not one "
        "exponential, so the rate is also given from window starts of 5% and 1%.",
        main=seed_estimate(conv["per_seed"]["rate"], None),
        better="higher", controls=[control("no decay (rate 0)", 0.0)],
        second=seed_estimate(conv_rep["per_seed"]["rate"], None), headline=True,
        extra={"exponential_beats_power_law": conv["exponential_beats_power_law"], "by": "QAIC",
               "seeds_fitted": conv["seeds_fitted"], "rate_by_window_start": window,
               "pearson_dispersion_per_seed": conv["per_seed"]["dispersion"],
               "test_prompts": "fresh per evaluation (every 10 steps)",
               "fixed_test_set_rate": seed_estimate(conv_fixed["per_seed"]["rate"], None),
               "fixed_test_set_dispersion_per_seed": conv_fixed["per_seed"]["dispersion"],
               "fixed_test_set_exponential_beats_power_law": conv_fixed["exponential_beats_power_law"],
               "replication_exponential_beats_power_law": conv_rep["exponential_beats_power_law"],
               "oracle_start_rate": seed_estimate(conv_or["per_seed"]["rate"], None),
               "oracle_start_exponential_beats_power_law": conv_or["exponential_beats_power_law"]},
        **common))
    out.append(finding(
        "synthetic.convergence.curvature", claim="The log error bends down (negative curvature): decay at least "
        "as fast as a single exponential.", main=seed_estimate(conv["per_seed"]["curvature"], None), better="lower",
        controls=[control("a single exponential (curvature 0)", 0.0)],
        second=seed_estimate(conv_rep["per_seed"]["curvature"], None),
        extra={"oracle_start": seed_estimate(conv_or["per_seed"]["curvature"], None)}, **common))
    for scenario in main.summary["ood"]:
        out.append(finding(
            f"synthetic.ood.{scenario}", claim=f"Test 0-1 error on the OOD scenario {scenario}, beside baselines "
            "that see the same prompts." + (" With value: label the output is sum_l alpha_l y_l, so this equals "
                                            "the in-distribution error by construction: see "
                                            "synthetic.projected.flipped_labels." if scenario == "flipped_labels"
                                            else ""),
            main=seed_estimate(errors(main, scenario)), better="lower",
            controls=baselines(main, scenario), second=seed_estimate(errors(rep, scenario)),
            headline=scenario in ("polysemous_query", "switched_features", "unseen_concept"), **common))
    flip_full, flip_blind = errors(projected, "flipped_labels"), errors(blind, "flipped_labels")
    out.append(finding(
        "synthetic.projected.flipped_labels", claim="With value: projected (v_l = W_V [x_l; y_l]: the words can "
        "carry the answer past the labels, so following the demonstrations is learned, not forced) the flipped-"
        "label error, beside the same model trained the same way with the demonstrations' labels hidden "
        "(context-blind).", main=seed_estimate(flip_full), better="lower",
        controls=[control("context-blind transformer (labels hidden)", **_seed_control(flip_blind))],
        second=seed_estimate(flip_full), headline=True,
        extra={"per_seed": flip_full, "context_blind_per_seed": flip_blind,
               "in_distribution": seed_estimate(errors(projected, None)),
               "context_blind_in_distribution": seed_estimate(errors(blind, None)),
               "ood": {sc: seed_estimate(errors(projected, sc)) for sc in projected.summary["ood"]},
               "replication": "none (the main seeds are shown twice)"},
        replicated_on="the main seeds (no separate replication run)", group=group, resampled="seeds",
        command=sh.command(group)))
    return out


def _seed_control(values: Sequence[float]) -> dict[str, Any]:
    e = seed_estimate(values)
    return {"value": e["value"], "ci": e["interval"]}


def group_synthetic_random_readout(sh: Shared) -> list[dict[str, Any]]:
    """What the protocol owes to its choices: the random readout at the former width (m = 8, lr = 2; share of
    seeds converging, where dead readout neurons stop some) and the sensitivity to an oracle warm start
    (readout_align 0, 0.05, 0.1, 0.2 on the default protocol).

    Publication cost (5 seeds): 2 runs of random_readout_steps (2,000) without OOD scenarios plus 4 runs of 400
    steps without OOD scenarios, about 4 minutes on 2 shared cores."""
    cfg, group = sh.cfg, "synthetic_random_readout"
    kw = {"m": 8, "lr": 2.0, "steps": cfg.random_readout_steps, "scenarios": []}
    main, rep = _synthetic(cfg, cfg.seed, **kw), _synthetic(cfg, cfg.replication_seed, dictionary="per_seed", **kw)
    common = {"group": group, "resampled": "seeds", "command": sh.command(group),
              "replicated_on": f"{cfg.seeds} seeds from seed {cfg.replication_seed}, a fresh dictionary per seed"}
    b = main.summary["baselines"]["test"]
    conv = main.summary["convergence"]
    err, err_rep = main.summary["final_per_seed"]["test_zero_one"], rep.summary["final_per_seed"]["test_zero_one"]
    table = align_sensitivity(SyntheticConfig(seeds=cfg.seeds, steps=cfg.steps, n_test=cfg.n_test, seed=cfg.seed,
                                              scenarios=[], test_prompts="fixed"), ALIGNS)

    def censored(values: Sequence[float | None]) -> list[float]:
        """Steps to 1% with a seed that never reaches it counted as the budget (censored: a lower bound)."""
        return [float(cfg.steps) if v is None else v for v in values]

    sens = {f"{a:g}": {"final_zero_one": seed_estimate(table["final_zero_one"][i]),
                       "step_1pct": seed_estimate(table["step_1pct"][i], None),
                       "seeds_reaching_1pct": sum(v is not None for v in table["step_1pct"][i]),
                       "exponential_wins": table["exponential_wins"][i],
                       "curvature_ci95": table["curvature_ci95"][i]} for i, a in enumerate(table["readout_align"])}
    return [
        finding("synthetic.random_readout.test_error", claim=f"A random readout at the former width m = 8 (lr 2, "
                f"{cfg.random_readout_steps} steps): the in-distribution test 0-1 error; seeds with a concept "
                "whose w_+ neurons all died stay near 0.125.",
                main=seed_estimate(err), better="lower",
                controls=[control("query-only baseline", **_seed_control(b["query_only"]))],
                second=seed_estimate(err_rep), headline=True,
                extra={"per_seed": err, "seeds_converged_1pct": _converged(err),
                       "replication_per_seed": err_rep, "replication_seeds_converged_1pct": _converged(err_rep)},
                **common),
        finding("synthetic.random_readout.convergence.rate", claim="m = 8 random readout: the slope of logit error "
                "over the window from 10% error (seeds whose error reaches the window).",
                main=seed_estimate(conv["per_seed"]["rate"], None), better="higher",
                controls=[control("no decay (rate 0)", 0.0)],
                second=seed_estimate(rep.summary["convergence"]["per_seed"]["rate"], None),
                extra={"exponential_beats_power_law": conv["exponential_beats_power_law"],
                       "seeds_fitted": conv["seeds_fitted"]}, **common),
        finding("synthetic.oracle_start.sensitivity", claim="Steps to 1% test error of the default protocol from a "
                "random readout (readout_align 0), beside oracle warm starts of readout_align 0.05, 0.1, 0.2 (the "
                "true label directions added to the readout); lower is faster, so the oracle starts are expected "
                "to 'win' here.",
                main=seed_estimate(censored(table["step_1pct"][0]), None), better="lower",
                controls=[control(f"oracle start readout_align {a:g}",
                                  **_seed_control_free(censored(table["step_1pct"][i]))) for i, a in
                          enumerate(table["readout_align"]) if i > 0],
                second=seed_estimate(censored(table["step_1pct"][0]), None),
                extra={"by_readout_align": sens, "censoring": f"a seed that never reaches 1% counts as the "
                       f"{cfg.steps}-step budget (a lower bound)"},
                **{**common, "replicated_on": "the main seeds (no separate replication run)"}),
    ]


def _seed_control_free(values: Sequence[float]) -> dict[str, Any]:
    e = seed_estimate(values, None)
    return {"value": e["value"], "ci": e["interval"]}


def _halves(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves of each concept's words (row indices), drawn at random."""
    rng = np.random.default_rng([seed, 17])
    a, b = [], []
    for lab in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == lab))
        a += rows[: len(rows) // 2].tolist()
        b += rows[len(rows) // 2:].tolist()
    return np.array(sorted(a)), np.array(sorted(b))


def _difference_estimate(d: dict[str, Any]) -> dict[str, Any]:
    """An estimate from a baseline Difference dict (trained minus baseline, concept-bootstrap interval)."""
    return estimate(d["difference"], (d["ci_low"], d["ci_high"]), d["n"])


def _heldout_probe_seeds(space: Any, center: bool, seeds: Sequence[int]) -> tuple[list[float], list[float]]:
    """(probe AUCs, plain-cosine AUCs) of the held-out-concept probe over random 2-fold splits of the concepts."""
    lv = space.concepts
    X = prepare(lv.vectors, lv.labels, center_vectors=center)
    codes, _ = encode_labels(lv.labels)
    runs = [heldout_concept_probe(X, codes, seed=s) for s in seeds]
    return [r.auc for r in runs], [r.cosine_auc for r in runs]


def group_geometry(sh: Shared) -> list[dict[str, Any]]:
    """Real concept geometry (input embeddings and last layer), each number beside what could fake it: the
    permutation null, the token-count-matched null, the same architecture with random weights, the input
    embeddings alone and the trained embeddings through random blocks (trained minus each, concept bootstrap),
    raw and centred cross-concept cosines with the centring identity, concept-direction |cos| against its
    permutation null with a BH-corrected per-pair test, and a probe tested on held-out concepts."""
    cfg, group = sh.cfg, "geometry"
    gc = GeometryConfig(extraction=ExtractionConfig(model=cfg.model, layers="0,-1", device="cpu"),
                        permutations=cfg.permutations, bootstrap=cfg.bootstrap, shuffles=cfg.shuffles,
                        probes=True, seed=cfg.seed, baselines=list(GEOMETRY_BASELINES))
    result = measure_geometry(gc, loaded=sh.loaded, quiet=True)
    first, last = result.spaces[0].name, result.last_layer
    stats = {name: {k: s.to_dict() for k, s in result.results[name]["stats"].items()} for name in (first, last)}
    halves: dict[str, tuple[dict, dict]] = {}
    for space in result.spaces:
        lv = space.concepts
        a, b = _halves(lv.labels, cfg.seed)
        halves[space.name] = tuple(
            {k: s.to_dict() for k, s in geometry_summary(
                lv.vectors[idx], lv.labels[idx], n_permutations=cfg.permutations, n_bootstrap=cfg.bootstrap,
                n_shuffles=1, seed=cfg.seed, whiten=space.reference, center_vectors=gc.center, lda=False,
                expensive_permutations=20, lda_permutations=5).items()} for idx in (a, b))
    # The replication of a baseline difference: the baselines re-initialised with another seed.
    rep_baselines, _ = measure_baselines(dataclasses.replace(gc, seed=cfg.replication_seed), result.spaces,
                                         sh.loaded, quiet=True)
    rep_text = "two disjoint random halves of each concept's words, measured apart"
    n_words = result.results[last]["n_words"]
    out = []

    def null_controls(layer: str, stat: str) -> list[dict[str, Any]]:
        s = stats[layer][stat]
        ctrl = [control("permutation null (concept labels shuffled)", s["null_mean"], (s["null_low"], s["null_high"]))]
        m = result.results[layer].get("matched", {}).get(stat)
        if m is not None:
            ctrl.append(control("matched null (labels shuffled among words of equal token count)", m["null"],
                                (m["null_low"], m["null_high"])))
        return ctrl

    def add(id: str, claim: str, layer: str, stat: str, better: str, controls: list[dict[str, Any]],
            headline: bool = False, extra: dict[str, Any] | None = None) -> None:
        s = stats[layer][stat]
        ha, hb = (h[stat] for h in halves[layer])
        out.append(finding(
            id, group, claim, stat_estimate(s), better=better,
            # The bootstrap resamples concepts; the direction statistic's unit is a pair of concepts.
            resampled="concept pairs" if stat == "concept_direction_abs_cos" else "concepts",
            controls=[*null_controls(layer, stat), *controls],
            second=stat_estimate(hb), replicated_on=rep_text, command=sh.command(group), p_value=s["p_value"],
            permutations=cfg.permutations, headline=headline,
            extra={"layer": layer, "n_words": n_words, "n_concepts": result.results[last]["n_concepts"],
                   "half_a": stat_estimate(ha),
                   "matched_null_p": (result.results[layer].get("matched", {}).get(stat) or {}).get("p_value"),
                   **(extra or {})}))
        # The replication compares the halves with each other (independent words), not a half with the whole.
        out[-1]["replication"] = replication(rep_text, stat_estimate(ha), stat_estimate(hb))

    def baseline_controls(layer: str, stat: str) -> list[dict[str, Any]]:
        return [control(f"{BASELINE_NAMES[kind]} (layer {layer})", d["baseline_value"],
                        (d["baseline_ci_low"], d["baseline_ci_high"]))
                for kind in GEOMETRY_BASELINES for d in [result.summary["baselines"][kind][layer][stat]]]

    def add_difference(kind: str, stat: str, what: str, headline: bool = False) -> None:
        d = result.summary["baselines"][kind][last][stat]
        r = rep_baselines[kind][last][stat]
        rep = f"the baselines re-initialised with seed {cfg.replication_seed} (the embeddings baseline is the same)"
        out.append(finding(
            f"geometry.{stat}.trained_minus_{kind}.last_layer", group,
            f"At the last layer, {what} of the trained model exceeds that of {BASELINE_NAMES[kind]}: trained minus "
            "baseline, same words, same centring.", _difference_estimate(d), resampled="concepts",
            better="higher", controls=[control("no difference (0)", 0.0)], second=_difference_estimate(r),
            replicated_on=rep, command=sh.command(group), headline=headline,
            extra={"layer": last, "trained": d["trained"], "baseline": d["baseline_value"],
                   "baseline_interval": [d["baseline_ci_low"], d["baseline_ci_high"]],
                   "per_layer": {layer: v[stat] for layer, v in result.summary["baselines"][kind].items()}}))

    add("geometry.within_concept.input_embeddings", "Words of one concept are more similar (centred cosine) "
        "than random word pairs already in the input embeddings.", first, "within_concept_cosine", "higher", [],
        headline=True)
    add("geometry.within_concept.last_layer", "Words of one concept are more similar (centred cosine) than random "
        "word pairs at the last layer, beside the baselines that could produce it.", last, "within_concept_cosine",
        "higher", baseline_controls(last, "within_concept_cosine"), headline=True)
    for kind in GEOMETRY_BASELINES:
        add_difference(kind, "within_concept_cosine", "the within-concept cosine", headline=kind == "random_blocks")
    for kind in GEOMETRY_BASELINES:
        add_difference(kind, "heldout_projection_auc", "the held-out projection AUC (30% of each concept's words "
                       "on directions fitted on 70%)")
    cross = stats[last]["cross_concept_cosine"]
    add("geometry.within_minus_cross.last_layer", "Within-concept cosine exceeds cross-concept cosine at the last "
        "layer.", last, "within_minus_cross", "higher", baseline_controls(last, "within_minus_cross"),
        extra={"cross_concept_cosine": stat_estimate(cross)})
    c = result.results[last]["centring"]
    raw_est = estimate(c["raw_cross"], (c["raw_cross_ci_low"], c["raw_cross_ci_high"]), cross["n"])
    centred = stat_estimate(cross)
    out.append(finding(
        "geometry.cross_concept.centred_vs_centring_identity", group,
        "Centred cross-concept cosine at the last layer beside the value centring alone forces, "
        "-(n + sum_c n_c(n_c-1) w_c) / sum_{c!=c'} n_c n_c'; a value at the expectation says nothing about "
        "orthogonality.", centred, resampled="concept pairs", better="lower",
        controls=[control("centring-identity expectation", c["centring_expectation"])],
        second=stat_estimate(halves[last][1]["cross_concept_cosine"]), replicated_on=rep_text,
        command=sh.command(group),
        extra={"layer": last, "pooled_centred_cross": c["centred_cross_pooled"],
               "centring_residual": c["centring_residual"], "raw_cross": raw_est}))
    out[-1]["replication"] = replication(rep_text, stat_estimate(halves[last][0]["cross_concept_cosine"]),
                                         stat_estimate(halves[last][1]["cross_concept_cosine"]))
    lv = result.spaces[-1].concepts
    raw_halves = []
    for idx in _halves(lv.labels, cfg.seed):
        h = centring_report(lv.vectors[idx], lv.labels[idx], n_permutations=100, n_bootstrap=cfg.bootstrap,
                            seed=cfg.seed)
        raw_halves.append(estimate(h["raw_cross"], (h["raw_cross_ci_low"], h["raw_cross_ci_high"]), cross["n"]))
    out.append(finding(
        "geometry.cross_concept.raw.last_layer", group,
        "Uncentred (raw) cross-concept cosine at the last layer is lower than for random concept labels.", raw_est,
        resampled="concept pairs", better="lower",
        controls=[control("permutation null of the raw cosine", c["raw_cross_null"],
                          (c["raw_cross_null_low"], c["raw_cross_null_high"]))],
        second=raw_halves[1], replicated_on=rep_text, command=sh.command(group),
        extra={"layer": last, "raw_within": c["raw_within"]}))
    out[-1]["replication"] = replication(rep_text, raw_halves[0], raw_halves[1])
    pairs = result.summary["direction_pairs"] or {}
    d = stats[last]["concept_direction_abs_cos"]
    add("geometry.direction_abs_cos.last_layer", "Mean |cos| between concept directions at the last layer, against "
        "its permutation null (and the isotropic value of random directions); related concepts are counted by a "
        "per-pair test with Benjamini-Hochberg correction.", last, "concept_direction_abs_cos", "higher",
        [control("isotropic baseline (random directions)", d["isotropic"])],
        headline=True, extra={"pair_test": {k: v for k, v in pairs.items() if k != "significant_pairs"},
                              "significant_pairs": [(p["concept_a"], p["concept_b"], p["abs_cos"])
                                                    for p in pairs.get("significant_pairs", [])[:20]]})
    space = result.spaces[-1]
    auc, cos_auc = _heldout_probe_seeds(space, gc.center, range(cfg.seed, cfg.seed + 5))
    auc_r, cos_r = _heldout_probe_seeds(space, gc.center, range(cfg.replication_seed, cfg.replication_seed + 5))
    cos_est = seed_estimate(cos_auc)
    out.append(finding(
        "geometry.heldout_concept_probe.last_layer", group,
        "A same-concept probe trained on pairs of words of some concepts separates pairs of words of held-out "
        "concepts (AUC) at the last layer, beyond chance and beyond the untrained cosine.", seed_estimate(auc),
        resampled="random 2-fold splits of the concepts (5)", better="higher",
        controls=[control("chance (AUC 0.5)", 0.5), control("plain cosine of the pair (no training)",
                                                            cos_est["value"], cos_est["interval"])],
        second=seed_estimate(auc_r), replicated_on="5 other random splits of the concepts",
        command=sh.command(group),
        extra={"layer": last, "probe": result.summary.get("heldout_concept_probe"),
               "note": "replaces the type-consistent control task, which is random labels at chance by "
                       "construction (one vector per word type)"}))
    return out


ICL_BETAS_SHOWN = (1.0, 20.0, 50.0)  # every finding that depends on beta is also shown at these
ICL_RESAMPLED = "episodes x query words x query concepts (three-way cluster bootstrap)"


def _icl(sh: Shared, seed: int, baselines: Sequence[str] = ("static_kernel",)) -> Any:
    """The in-prompt readout (the model reads the whole prompt) on one episode set, with ``baselines`` paired."""
    cfg = sh.cfg
    prompts = EpisodeConfig(suite="polysemy", shots=list(cfg.shots), episodes=cfg.icl_episodes, queries_per_episode=2,
                            conditions=[*DEFAULT_CONDITIONS, *CONTEXT_CONDITIONS])
    ic = IclConfig(extraction=ExtractionConfig(model=cfg.model, layers="last", device="cpu"), prompts=prompts,
                   readout="in_prompt", baselines=list(baselines), tune_episodes=cfg.tune_episodes,
                   bootstrap=cfg.bootstrap, permutations=cfg.permutations, seed=seed)
    return icl_probe(ic, loaded=sh.loaded)


def _episode_sets(result: Any, cfg: FindingsConfig) -> list[dict[str, Any]]:
    """The main run's episodes split into ``cfg.icl_sets`` disjoint sets (episode e goes to set e mod K), each
    summarised alone. Episodes are independent draws, so these are independent episode sets at no extra forward
    pass; only their means are read (the intervals of the whole set come from the cluster bootstrap)."""
    k = cfg.icl_sets
    baselines = list(result.summary["baselines"])
    out = []
    for j in range(k):
        rows = [row for row in result.rows if int(row["episode"]) % k == j]
        if not rows:
            raise ValueError(f"icl_sets {k}: episode set {j} is empty; accepted: icl_sets <= icl_episodes "
                             f"({cfg.icl_episodes})")
        with warnings.catch_warnings():  # one bootstrap draw of a small set can be empty: its interval is unused
            warnings.simplefilter("ignore", RuntimeWarning)
            out.append(summarise(rows, ways=result.summary["ways"], n_boot=1, seed=cfg.seed, baselines=baselines,
                                 permutations=1))
    return out


def _at_betas(result: Any, readout: str, cond: str, shots: str, key: str = "accuracy") -> dict[str, float]:
    """``key`` of one cell at the betas of :data:`ICL_BETAS_SHOWN` (from the run's beta sweep)."""
    return {f"{b:g}": r[key] for b in ICL_BETAS_SHOWN for r in result.beta_sweep
            if r["readout"] == readout and r["condition"] == cond and str(r["shots"]) == shots and r["beta"] == b}


def _cell_control(name: str, cell: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [control(name, cell["mean"], (cell["ci_low"], cell["ci_high"]))] if cell else []


def group_icl(sh: Shared) -> list[dict[str, Any]]:
    """ICL on the real model with the in-prompt readout (the whole prompt through the model, the query's state
    against the demonstrations' states), every condition at every shot count, beside chance, zero-shot, the static
    out-of-context kernel and the same readout on re-initialised weights; paired differences against the kernel;
    the skewed readout's pull to the majority label and the in-context sense effect, each also at beta 1, 20, 50."""
    cfg, group = sh.cfg, "icl"
    main = _icl(sh, cfg.seed, ("static_kernel", "random_weights"))
    rep = _icl(sh, cfg.replication_seed)
    s, r = main.summary, rep.summary
    rep_text = (f"an independent episode set (seed {cfg.replication_seed}; beta re-chosen on its own tune episodes: "
                f"{r['beta']['best']:g})")
    selection = {"rule": f"{s['beta']['rule']}, on {cfg.tune_episodes} tune episodes per shot count; chosen beta "
                         f"{s['beta']['best']:g} of the near-tied {s['beta']['near_tied']} (static kernel: "
                         f"{s['baselines']['static_kernel']['beta']['best']:g}); findings also shown at beta "
                         + ", ".join(f"{b:g}" for b in ICL_BETAS_SHOWN),
                 "disjoint": f"yes: tune episodes are drawn with seed {cfg.seed + 1}, evaluated ones with seed "
                             f"{cfg.seed}"}
    common = {"group": group, "resampled": ICL_RESAMPLED, "replicated_on": rep_text, "command": sh.command(group),
              "selection": selection}
    base = s["baselines"]

    sets = _episode_sets(main, cfg)

    def across(*keys: str) -> dict[str, Any]:
        """The statistic in each of the independent episode sets of :func:`_episode_sets`: values, mean and
        Student-t 95% interval across sets."""
        values = [_dig(x, keys)["mean"] for x in sets]
        e = seed_estimate(values, None)
        return {"seeds": [f"seed {cfg.seed}, episodes e with e mod {cfg.icl_sets} = {k}" for k in range(len(sets))],
                "values": values, "mean": e["value"], "interval": e["interval"], "n": e["n"]}
    chance = control(f"chance (1/{s['ways']} ways)", s["chance"])
    zero = _cell_control("zero-shot (in-prompt)", s["accuracy"].get("zero_shot", {}).get("0"))
    top = str(max(cfg.shots))
    out = []
    for cond, by_shots in s["accuracy"].items():
        for shots, acc in by_shots.items():
            n = acc["n"]
            static = base["static_kernel"]["accuracy"][cond][shots]
            random_w = base["random_weights"]["accuracy"][cond][shots]
            controls = [chance] + (zero if cond != "zero_shot" else []) + _cell_control("static kernel", static) \
                + _cell_control("random weights (same readout)", random_w)
            vs = {name: s["versus"][name][cond][shots] for name in ("static_kernel", "random_weights")}
            out.append(finding(
                f"icl.{cond}.{shots}shots", claim=f"Accuracy of the in-prompt readout on {cond.replace('_', ' ')} "
                f"episodes with {shots} demonstrations.", main=acc_estimate(acc, n), better="higher",
                controls=controls, second=acc_estimate(r["accuracy"][cond][shots], r["accuracy"][cond][shots]["n"]),
                headline=(shots == top and cond in ("in_distribution", "polysemous_query")) or cond == "zero_shot",
                extra={"versus": vs, "at_beta": _at_betas(main, "in_prompt", cond, shots),
                       "static_kernel_at_beta": _at_betas(main, "static_kernel", cond, shots),
                       "prompts": n, "queries_per_episode": 2, "across_sets": across("accuracy", cond, shots)},
                **common))
            v = vs["static_kernel"]
            out.append(finding(
                f"icl.in_prompt_vs_static.{cond}.{shots}shots", claim=f"Reading the prompt (in-prompt states) beats "
                f"the static out-of-context kernel on {cond.replace('_', ' ')} episodes with {shots} demonstrations "
                "(paired by prompt).", main=acc_estimate(v, n), better="higher",
                controls=[control("no difference", 0.0)],
                second=acc_estimate(r["versus"]["static_kernel"][cond][shots], n), p_value=v["p_value"],
                permutations=cfg.permutations, headline=shots == top and cond == "in_distribution",
                extra={"p_is": "two-sided episode sign-flip test of the paired difference",
                       "across_sets": across("versus", "static_kernel", cond, shots)}, **common))
    for shots, f in s["follows_majority"].get("skewed", {}).items():
        balanced = s["follows_majority"]["in_distribution"][shots]
        out.append(finding(
            f"icl.skewed.follows_majority.{shots}shots", claim=f"With 80/20-skewed demonstrations ({shots} shots) the "
            "in-prompt readout predicts the majority label more often than with balanced ones.",
            main=acc_estimate(f, f["n"]), better="higher",
            controls=_cell_control("balanced demonstrations (in distribution)", balanced),
            second=acc_estimate(r["follows_majority"]["skewed"][shots], f["n"]), headline=shots == top,
            extra={"at_beta": _at_betas(main, "in_prompt", "skewed", shots, "follows_majority"),
                   "balanced_at_beta": _at_betas(main, "in_prompt", "in_distribution", shots, "follows_majority"),
                   "accuracy_at_beta": _at_betas(main, "in_prompt", "skewed", shots),
                   "static_kernel_at_beta": _at_betas(main, "static_kernel", "skewed", shots, "follows_majority"),
                   "across_sets": across("follows_majority", "skewed", shots)}, **common))
    for shots, e in s.get("context_effect", {}).items():
        out.append(finding(
            f"icl.context_effect.{shots}shots", claim=f"A query sentence that selects the asked sense raises the "
            f"in-prompt readout's accuracy over one that selects the other sense ({shots} shots; paired by prompt).",
            main=acc_estimate(e, e["n"]), better="higher",
            controls=[control("no effect", 0.0)] + _cell_control(
                "static kernel's effect (contextual query vector)", base["static_kernel"]["context_effect"][shots])
            + _cell_control("random weights' effect", base["random_weights"]["context_effect"][shots]),
            second=acc_estimate(r["context_effect"][shots], e["n"]), headline=True,
            extra={"across_sets": across("context_effect", shots)}, **common))
    return out


def _dig(data: dict[str, Any], keys: Sequence[str]) -> Any:
    for key in keys:
        data = data[key]
    return data


def _attention(sh: Shared, seed: int) -> Any:
    cfg = sh.cfg
    prompts = EpisodeConfig(suite="polysemy", shots=list(cfg.attention_shots), episodes=cfg.attention_episodes,
                            conditions=list(ATTENTION_CONDITIONS))
    ac = AttentionConfig(extraction=ExtractionConfig(model=cfg.model, device="cpu"), prompts=prompts,
                         permutations=cfg.permutations, bootstrap=cfg.bootstrap, seed=seed)
    return attention_probe(ac, loaded=sh.loaded, show_progress=False)


def _top_heads_cell(result: Any, cond: str, shots: int, n_boot: int, seed: int) -> tuple[dict, list[dict], float]:
    """The chosen heads' mean correct attention in one cell (bootstrapped over episodes), their nulls and p."""
    rows = [p for p in result.prompt_rows if p["condition"] == cond and p["shots"] == shots]
    ci = bootstrap_accuracy([p["top_heads_value"] for p in rows], [p["episode"] for p in rows], n_boot=n_boot,
                            seed=seed)
    heads = set(result.top_heads)
    head_rows = [r for r in result.rows if r["condition"] == cond and r["shots"] == shots and r["kind"] == "demo"
                 and (r["layer"], r["head"]) in heads]
    mean = {k: float(np.mean([r[k] for r in head_rows])) for k in ("null", "position_null", "query_null", "chance")}
    controls = [control("null: concepts permuted", mean["null"]),
                control("null: position-matched", mean["position_null"])]
    # The query-swap null exists only where an episode's queries come from two concepts (not polysemous queries).
    if math.isfinite(mean["query_null"]):
        controls.append(control("null: queries swapped", mean["query_null"]))
    # The heads' p: the largest max-T corrected p of the chosen heads in this cell (each chosen head must pass).
    p_value = max(r["p_corrected"] for r in head_rows)
    return estimate(ci.mean, (ci.ci_low, ci.ci_high), len({p["episode"] for p in rows})), controls, p_value


def _attention_stability(sh: Shared, results: Sequence[Any], seeds: Sequence[int]) -> dict[str, Any]:
    """Do independent episode sets agree on the heads? Spearman rank correlation of every head's correct attention
    and Jaccard overlap of the significant heads (max-T p < alpha), in-distribution at the largest shots."""
    cfg = sh.cfg
    shots = max(cfg.attention_shots)

    def grid(result: Any, key: str) -> np.ndarray:
        rows = [x for x in result.rows if x["condition"] == "in_distribution" and x["shots"] == shots
                and x["kind"] == "demo"]
        layers, heads = result.summary["layers"], result.summary["heads"]
        out = np.zeros((layers, heads))
        for x in rows:
            out[x["layer"], x["head"]] = x[key]
        return out
    alpha = results[0].summary["alpha"]
    st = head_stability([grid(x, "value") for x in results], [grid(x, "p_corrected") < alpha for x in results])
    rho = st["spearman"]
    est = estimate(st["mean_spearman"], (min(rho), max(rho)), len(rho))
    other = estimate(rho[0], (rho[0], rho[0]), 1)
    return finding(
        "attention.head_stability", "attention", claim=f"Independent episode sets rank the heads alike (Spearman "
        f"correlation of every head's correct attention, in distribution, {shots} shots).", main=est,
        resampled=f"the {len(rho)} pairs of {len(results)} independent episode sets (interval: their range)",
        better="higher", controls=[control("no agreement", 0.0)], second=other,
        replicated_on="the first pair of sets alone", command=sh.command("attention"),
        extra={**st, "seeds": list(seeds), "significant_heads_jaccard": st["jaccard"],
               "top_heads": [[list(h) for h in x.top_heads] for x in results]})


def group_attention(sh: Shared) -> list[dict[str, Any]]:
    """The mechanism in the real model: the top heads' attention on same-concept demonstrations in every cell,
    heads chosen on held-out episodes, against the three nulls (all permuting whole episodes); and the heads'
    stability across ``icl_sets`` independent episode sets."""
    cfg, group = sh.cfg, "attention"
    main, rep = _attention(sh, cfg.seed), _attention(sh, cfg.replication_seed)
    heads = ", ".join(f"L{a}H{b}" for a, b in main.top_heads)
    selection = {"rule": f"top {len(main.top_heads)} heads by correct attention minus the largest null on held-out "
                         f"in-distribution episodes at {max(cfg.attention_shots)} shots: {heads}",
                 "disjoint": f"yes: heads chosen on episodes drawn with seed {cfg.seed + 1}, values measured on "
                             f"episodes drawn with seed {cfg.seed}"}
    rep_text = (f"an independent episode set (seed {cfg.replication_seed}), heads re-chosen on its own held-out "
                "episodes: " + ", ".join(f"L{a}H{b}" for a, b in rep.top_heads))
    more = [cfg.replication_seed + 10 * k for k in range(1, cfg.icl_sets - 1)]
    out = [_attention_stability(sh, [main, rep, *(_attention(sh, x) for x in more)],
                                [cfg.seed, cfg.replication_seed, *more])]
    for cond, by_shots in main.summary["cells"].items():
        for shots, cell in by_shots.items():
            est, controls, p_value = _top_heads_cell(main, cond, int(shots), cfg.bootstrap, cfg.seed)
            est_rep, _, _ = _top_heads_cell(rep, cond, int(shots), cfg.bootstrap, cfg.seed)
            out.append(finding(
                f"attention.top_heads.{cond}.{shots}shots", group, claim=f"The chosen heads put more of their "
                f"demonstration attention on same-concept demonstrations than the nulls ({cond.replace('_', ' ')}, "
                f"{shots} shots).", main=est, resampled="episodes", better="higher", controls=controls,
                second=est_rep, replicated_on=rep_text, command=sh.command(group),
                p_value=p_value, permutations=cfg.permutations, selection=selection,
                headline=cond in ("in_distribution", "flipped_labels") and int(shots) == max(cfg.attention_shots),
                extra={"heads": [list(h) for h in main.top_heads], "significant_heads": cell["significant_heads"],
                       "nulls": "concepts permuted per episode; position-matched (same slots, another episode's "
                                "prompts); queries swapped (paired queries of different concepts of one episode, "
                                "identity and same-concept swaps excluded); every test permutes whole episodes",
                       "heads_total": main.summary["layers"] * main.summary["heads"],
                       "p_is": "the largest max-T corrected p (over all heads) of the chosen heads in this cell",
                       "held_out": main.summary["top_heads"]}))
    return out


def group_contexts(sh: Shared) -> list[dict[str, Any]]:
    """Polysemous words in context: sense accuracy at the best layer (selection corrected) against the
    permutation null, the word out of context and layer 0."""
    cfg, group = sh.cfg, "contexts"
    cc = ContextsConfig(extraction=ExtractionConfig(model=cfg.model, batch_size=32, device="cpu"),
                        permutations=cfg.permutations, bootstrap=cfg.bootstrap, seed=cfg.seed)
    result = measure_contexts(cc, loaded=sh.loaded)
    poly = result.polysemous
    best, first = poly.best_layer, poly.layers[0]
    s = poly.best["sense_accuracy"].to_dict()
    base = poly.best["baseline_accuracy"].to_dict()
    l0 = poly.per_layer[first]["sense_accuracy"].to_dict()
    units = np.asarray(poly.word_units[best]["sense_accuracy"], float)
    # Replication: the words split in two random halves, each half's mean with a bootstrap over its words.
    rng = np.random.default_rng([cfg.seed, 19])
    order = rng.permutation(np.flatnonzero(np.isfinite(units)))
    parts = [units[order[: len(order) // 2]], units[order[len(order) // 2:]]]
    boots = [bootstrap_accuracy(p, n_boot=cfg.bootstrap, seed=cfg.seed) for p in parts]
    halves = [estimate(b.mean, (b.ci_low, b.ci_high), len(p)) for b, p in zip(boots, parts, strict=True)]
    f = finding(
        "contexts.sense_accuracy.best_layer", group, claim="A polysemous word's hidden state in a sense-tagged "
        "sentence sits nearer its tagged sense's concept than the other sense's (best layer, corrected for the "
        "choice).", main=stat_estimate(s), resampled="words", better="higher",
        controls=[control("permutation null (senses shuffled)", s["null_mean"], (s["null_low"], s["null_high"])),
                  control("the word out of context (in a neutral frame drawn at random per context)",
                          base["value"], (base["ci_low"], base["ci_high"])),
                  control(f"layer {first} (no context)", l0["value"], (l0["ci_low"], l0["ci_high"]))],
        second=halves[1], replicated_on="two disjoint random halves of the polysemous words (at the best layer, "
        "without the selection correction)", command=sh.command(group), p_value=s["p_value"],
        permutations=cfg.permutations, headline=True,
        selection={"rule": f"the layer of highest sense accuracy (layer {best}); value, null and bootstrap all take "
                           "the max over layers", "disjoint": "no: the choice is corrected by taking the same max "
                                                              "in the null and the bootstrap instead"},
        extra={"best_layer": best, "contexts": result.info.get("contexts")})
    f["replication"] = replication(f["replication"]["description"], halves[0], halves[1])
    return [f, *_drift_findings(sh, result, group)]


def _drift_findings(sh: Shared, result: Any, group: str, prefix: str = "contexts",
                    random: Any = None) -> list[dict[str, Any]]:
    """The polysemous words' in-context gain minus the monosemous controls' (drift), at the last layer (fixed in
    advance, no selection): accuracy gain and shift, against 2-way controls (the polysemous words' format); the
    difference against the all-concept controls is kept in ``extra``; with ``random`` (the same measured on random
    weights) its drift-controlled value is a control."""
    cfg = sh.cfg
    if not result.drift:
        return []
    last = result.polysemous.layers[-1]
    drift = result.drift[last]
    poly_units = result.polysemous.word_units[last]
    rng = np.random.default_rng([cfg.seed, 53])
    order = rng.permutation(len(poly_units["shift"]))
    halves = (order[: len(order) // 2], order[len(order) // 2:])
    c_units = result.drift_controls.word_units[last]
    out = []
    for stat, what in (("accuracy_gain", "sense accuracy in context minus out of context"),
                       ("shift", "shift toward the tagged sense (margin in context minus out of context)")):
        d = drift[f"{stat}_minus_controls_2way"]
        a = drift[f"{stat}_minus_controls_all"]
        p_units = (poly_units["sense_accuracy"] - poly_units["baseline_accuracy"] if stat == "accuracy_gain"
                   else poly_units["shift"])
        k_units = (c_units["sense_accuracy"] - c_units["baseline_accuracy"] if stat == "accuracy_gain"
                   else c_units["shift"])
        # Replication: each half of the polysemous words against the (2-way) controls, apart.
        reps = []
        for h in halves:
            half = drift_controlled(p_units[h], k_units, cfg.bootstrap, rng)
            reps.append(estimate(half["value"], (half["ci_low"], half["ci_high"]), len(h)))
        main = estimate(d["value"], (d["ci_low"], d["ci_high"]), d["n_polysemous"])
        controls = [control("no difference from the controls' drift (0)", 0.0)]
        if random is not None and random.drift:
            rd = random.drift[last][f"{stat}_minus_controls_2way"]
            controls.append(control("random weights (the same, drift-controlled)", rd["value"],
                                    (rd["ci_low"], rd["ci_high"])))
        out.append(finding(
            f"{prefix}.{stat}_minus_drift.last_layer", group,
            f"Polysemous words' {what} exceeds the drift of monosemous controls toward their own concept (the same "
            "2-way format: own concept against one other), at the last layer.", main, resampled="words",
            better="higher",
            controls=controls,
            second=reps[1], replicated_on="two disjoint random halves of the polysemous words, each against the "
                                          "controls", command=sh.command(group),
            selection={"rule": f"the last layer ({last}), fixed in advance", "disjoint": "no selection"},
            extra={"minus_all_concept_controls": estimate(a["value"], (a["ci_low"], a["ci_high"]), a["n_polysemous"]),
                   "polysemous": [d["polysemous"], d.get("polysemous_ci_low"), d.get("polysemous_ci_high")],
                   "controls_2way": [d["controls"], d.get("controls_ci_low"), d.get("controls_ci_high")],
                   "controls_all": [a["controls"], a.get("controls_ci_low"), a.get("controls_ci_high")],
                   "n_controls": d["n_controls"], "baseline": result.info.get("baseline"),
                   "per_layer": {layer: v[f"{stat}_minus_controls_2way"] for layer, v in result.drift.items()}}))
        out[-1]["replication"] = replication(out[-1]["replication"]["description"], reps[0], reps[1])
    return out


def _atoms_estimate(res: dict[str, Any], cfg: FindingsConfig) -> dict[str, Any]:
    """Mean best-atom |cos| over concepts with its bootstrap interval (the unit: a concept)."""
    per = res["atoms_vs_concepts"]["per_concept"]
    return estimate(float(per.mean()), bootstrap_mean(per, cfg.bootstrap, cfg.seed), len(per))


def _dictionary_finding(sh: Shared, id: str, claim: str, r: dict[str, Any], halves: Sequence[dict[str, Any]],
                        source: str, headline: bool = False) -> dict[str, Any]:
    """Atoms against concepts for one space: the mean best-atom |cos| (bootstrap over concepts) against the
    label-permutation and rotation nulls and, for a model's layer, the random-weight model's own dictionary (same
    words, tokenizer and size); replicated as two dictionaries learned on disjoint halves of the words."""
    cfg, vs = sh.cfg, r["atoms_vs_concepts"]
    controls = [control("labels shuffled across words (same data and atoms)", vs["label_null"], vs["label_null_band"]),
                control("the dictionary randomly rotated (same Gram matrix)", vs["mean_null"], vs["mean_null_band"])]
    extra_baselines = {}
    for kind, b in r.get("baselines", {}).items():
        base = _atoms_estimate(b, cfg)
        controls.append(control(f"{BASELINE_NAMES[kind]}: its own dictionary of the same size on the same words",
                                base["value"], base["interval"]))
        diff = b["difference"]
        extra_baselines[f"trained_minus_{kind}"] = estimate(float(diff.mean()),
                                                            bootstrap_mean(diff, cfg.bootstrap, cfg.seed), len(diff))
        extra_baselines[f"{kind}_label_null"] = b["atoms_vs_concepts"]["label_null"]
    f = finding(
        id, "dictionary", claim, _atoms_estimate(r, cfg), resampled="concepts", better="higher",
        controls=controls,
        second=_atoms_estimate(halves[1], cfg), replicated_on="dictionaries (of the chosen size) learned on two "
        "disjoint random halves of each concept's words", command=sh.command("dictionary"), p_value=vs["label_p"],
        permutations=vs["rotations"], headline=headline,
        selection={"rule": r["choice"].rule + f" (chosen: {r['choice'].atoms} atoms, {r['choice'].nonzeros} per "
                           "word)", "disjoint": "yes: sizes are scored on held-out words; the statistic does not "
                                                "enter the choice"},
        extra={"source": source, "atoms": r["choice"].atoms, "nonzeros": r["choice"].nonzeros,
               "size_at_grid_edge": r["choice"].atoms == max(row["atoms"] for row in r["choice"].rows),
               "n_words": r["n_words"], "n_concepts": len(r["concept_names"]), **extra_baselines})
    f["replication"] = replication(f["replication"]["description"], _atoms_estimate(halves[0], cfg),
                                   _atoms_estimate(halves[1], cfg))
    return f


def _half_fits(space: Any, dc: Any, seed: int, main: dict[str, Any]) -> list[dict[str, Any]]:
    """Dictionaries fitted on two disjoint random halves of each concept's words, at the size the main fit chose
    (the replication is of the statistic, not of the size choice; and the halves need no nulls)."""
    lv = space.concepts
    quick = dataclasses.replace(dc, permutations=1, atoms=str(main["choice"].atoms),
                                nonzeros=str(main["choice"].nonzeros))
    return [fit_space(Space(space.name, LabelledVectors(lv.vectors[i], lv.words[i], lv.labels[i])), quick)
            for i in _halves(lv.labels, seed)]


def _glove_space() -> Any:
    """The shared GloVe 6B 50d vectors of the built-in concept words (concepts with >= 3 of them), or None when
    the shared data folder is absent. Lines that are not UTF-8 (5 in the file) are skipped, and counted."""
    path = REPO.parent / "shared" / "data" / "glove" / "glove.6B.50d.top2445.txt"
    if not path.is_file():
        return None
    vectors, skipped = {}, 0
    with open(path, "rb") as fh:
        for raw in fh:
            try:
                word, *values = raw.decode("utf-8").rstrip().split(" ")
            except UnicodeDecodeError:
                skipped += 1
                continue
            vectors[word] = np.array(values, dtype=np.float64)
    cs = load_concept_set("builtin")
    rows = [(w, c) for c, ws in cs.concepts.items() for w in ws if w in vectors]
    counts: dict[str, int] = {}
    for _, c in rows:
        counts[c] = counts.get(c, 0) + 1
    rows = [(w, c) for w, c in rows if counts[c] >= 3]
    lv = LabelledVectors(np.stack([vectors[w] for w, _ in rows]), [w for w, _ in rows], [c for _, c in rows],
                         meta={"source": "GloVe 6B 50d (top 2,445 words)", "skipped_lines": skipped})
    return Space("glove", lv)


def _context_code_finding(sh: Shared, r: dict[str, Any], layer: str, dc: DictionaryConfig) -> dict[str, Any]:
    """The built-in contexts coded on the last layer's dictionary: the shift of a polysemous word's code toward its
    tagged sense's atoms (in context minus out of context) minus the monosemous controls' (drift)."""
    cfg = sh.cfg
    cs = load_concept_set("builtin")
    contexts, _ = load_contexts("builtin", cs)
    got = context_code_shift(r, layer, contexts, dc.extraction, sh.loaded, n_bootstrap=cfg.bootstrap, seed=cfg.seed)
    p_units, c_units = got["polysemous_units"], got["control_units"]
    order = np.random.default_rng([cfg.seed, 59]).permutation(len(p_units))
    halves = [drift_controlled(p_units[part], c_units, cfg.bootstrap, np.random.default_rng([cfg.seed, 61, i]))
              for i, part in enumerate((order[: len(order) // 2], order[len(order) // 2:]))]
    ests = [estimate(h["value"], (h["ci_low"], h["ci_high"]), h["n_polysemous"]) for h in halves]
    f = finding(
        "dictionary.context_code_shift.last_layer", "dictionary", "In a sentence tagged with one of its senses, a "
        "polysemous word's sparse code (last layer, the dictionary learned out of context) moves its loading toward "
        "the atoms of the tagged sense more than a monosemous word's code moves toward its own concept's atoms.",
        estimate(got["value"], (got["ci_low"], got["ci_high"]), got["n_polysemous"]),
        resampled="words (two-sample bootstrap: polysemous words and controls each resampled)", better="higher",
        controls=[control("monosemous controls' own shift (drift) subtracted: difference 0", 0.0)],
        second=ests[1], replicated_on="two disjoint random halves of the polysemous words, each against all controls",
        command=sh.command("dictionary"),
        extra={"layer": layer, "polysemous_shift": got["polysemous"], "controls_shift": got["controls"],
               "n_controls": got["n_controls"], "n_contexts": got["n_contexts"], "statistic": got["statistic"],
               "contexts": contexts.name})
    f["replication"] = replication(f["replication"]["description"], ests[0], ests[1])
    return f


def _fitted_world_findings(sh: Shared, lv: LabelledVectors, r: dict[str, Any],
                           dc: DictionaryConfig) -> list[dict[str, Any]]:
    """The synthetic world built from the last layer's fitted code against today's moment-matched world, on
    held-out words: fit on one random half of each concept's words, measure on the other; replicated with the halves'
    roles swapped (:func:`analysis.fitted_world.compare_worlds`)."""
    cfg = sh.cfg
    halves = split_halves(lv, cfg.seed)
    kw = {"atoms": r["choice"].atoms, "nonzeros": r["choice"].nonzeros, "n_boot": cfg.bootstrap, "seed": cfg.seed,
          "iterations": dc.iterations, "replicates": 2 if cfg.fast else 4, "moment_per_sign": cfg.matched_per_sign}
    main, rep = compare_worlds(halves[0], halves[1], **kw), compare_worlds(halves[1], halves[0], **kw)
    common = {"command": sh.command("dictionary"),
              "replicated_on": "the two disjoint halves of each concept's words with their roles swapped (fit on "
                               "the held-out half, measured on the fitting half)",
              "selection": {"rule": f"dictionary size chosen by probe dictionary on all words ({r['choice'].atoms} "
                                    f"atoms, {r['choice'].nonzeros} per word: held-out reconstruction error, one-SE "
                                    "rule); both worlds' parameters fitted on the fitting half only",
                            "disjoint": "yes for the worlds: the statistics compared are measured on words neither "
                                        "world was fitted on; the size choice read every word's reconstruction"}}
    resampled = {"cosines": "concepts (within) and concept pairs (cross) of the held-out words (paired bootstrap; "
                            "the worlds' simulated units resampled too)",
                 "loadings": "held-out words (paired bootstrap; the worlds' simulated words resampled too)"}

    def dist(c: dict[str, Any], world: str, stat: str) -> dict[str, Any]:
        d = c["distances"][world]
        return estimate(d[stat], d[f"{stat}_ci"], c["real"]["pairs"] + c["real"]["concepts"] if stat == "cosines"
                        else c["real"]["words"])

    def diff(c: dict[str, Any], stat: str) -> dict[str, Any]:
        d = c["distances"]["moment_matched"]
        return estimate(d[f"{stat}_fitted_minus_this"], d[f"{stat}_fitted_minus_this_ci"],
                        c["real"]["pairs"] + c["real"]["concepts"] if stat == "cosines" else c["real"]["words"])

    extra = {"code_parameters": main["code_parameters"], "worlds": main["worlds"], "distances": main["distances"],
             "closer": main["closer"], "replication_closer": rep["closer"], "moment_loss": main["moment_loss"],
             "replication_worlds": rep["worlds"], "real": main["real"], "units": main["units"],
             "distance": "1-Wasserstein between the held-out real units' and the world's distributions; cosines: "
                         "mean of the within-concept and the cross-pair distance"}
    names = {"moment_matched": "moment-matched world (today's matched group)",
             "defaults": "the fitted world's concepts with the generator's default parameters",
             "mismatched": "the fitted world's concepts with deliberately mismatched parameters"}
    out = [finding(
        "dictionary.fitted_world_vs_moment_matched", "dictionary", "A synthetic world whose generative parameters "
        "(concepts, irrelevant concepts, within/cross feature cosines, co-occurring energy, noise) are read off the "
        "last layer's fitted sparse code reproduces the real held-out words' within/cross cosines per concept pair: "
        "its distance, beside the moment-matched world and two controls.", dist(main, "fitted", "cosines"),
        resampled=resampled["cosines"], better="lower",
        controls=[control(names[w], main["distances"][w]["cosines"], main["distances"][w]["cosines_ci"])
                  for w in ("moment_matched", "defaults", "mismatched")],
        second=dist(rep, "fitted", "cosines"), extra=extra, **common)]
    for stat, what in (("cosines", "within/cross cosines per concept pair"),
                       ("loadings", "off-concept code loadings per word")):
        out.append(finding(
            f"dictionary.fitted_world_minus_moment_matched.{stat}", "dictionary", "The world read off the fitted code "
            f"is closer to the real held-out {what} than the moment-matched world: fitted minus moment-matched "
            "distance (paired; below 0 = the fitted world is closer).", diff(main, stat), resampled=resampled[stat],
            better="lower", controls=[control("no difference", 0.0)], second=diff(rep, stat),
            headline=stat == "cosines",
            extra={"fitted": main["distances"]["fitted"][stat], "moment_matched":
                   main["distances"]["moment_matched"][stat], "closer": main["closer"][stat]}, **common))
    return out


def group_dictionary(sh: Shared) -> list[dict[str, Any]]:
    """The paper's sparse-coding premise without labels: a dictionary learned on the words' vectors, its atoms
    against the concept directions (label-permutation and rotation nulls), polysemous words' codes against random
    senses, and recovery of the synthetic world's known dictionary by the same procedure."""
    cfg, group = sh.cfg, "dictionary"
    dc = DictionaryConfig(extraction=ExtractionConfig(model=cfg.model, layers="0,-1", device="cpu"),
                          permutations=cfg.permutations, bootstrap=cfg.bootstrap, seed=cfg.seed,
                          iterations=5 if cfg.fast else 30, baselines=["random_weights"])
    result = measure_dictionary(dc, loaded=sh.loaded, quiet=True)
    names = list(result.results)
    last = names[-1]
    out = []
    for space in result.spaces:
        first = space.name == names[0]
        out.append(_dictionary_finding(
            sh, f"dictionary.atoms_concepts.{'input_embeddings' if first else 'last_layer'}",
            "Atoms of a sparse dictionary learned without labels on "
            f"{'the input embeddings' if first else 'the last layer'} line up with concept directions: each "
            "concept's best-matching atom, mean |cos|.",
            result.results[space.name], _half_fits(space, dc, cfg.seed, result.results[space.name]),
            result.summary["source"],
            headline=not first))
    r = result.results[last]
    if "polysemy" in r:
        p = r["polysemy"]
        diff = p["recall"] - p["chance"]
        rng = np.random.default_rng([cfg.seed, 23])
        order = rng.permutation(len(diff))
        parts = [diff[order[: len(order) // 2]], diff[order[len(order) // 2:]]]
        halves_est = [estimate(float(x.mean()), bootstrap_mean(x, cfg.bootstrap, cfg.seed), len(x)) for x in parts]
        f = finding(
            "dictionary.polysemy_codes.last_layer", group, "A polysemous word's sparse code at the last layer loads "
            "on atoms of its senses more than on atoms of random senses: recall of its senses among its "
            "largest atoms minus the same with random senses.",
            estimate(float(diff.mean()), bootstrap_mean(diff, cfg.bootstrap, cfg.seed), len(diff)),
            resampled="polysemous words", better="higher", controls=[control("random senses (difference 0)", 0.0)],
            second=halves_est[1], replicated_on="two disjoint random halves of the polysemous words",
            command=sh.command(group),
            extra={"recall": float(p["recall"].mean()), "chance": float(p["chance"].mean()),
                   "monosemous_recall": float(r["monosemous_recall"].mean())})
        f["replication"] = replication(f["replication"]["description"], halves_est[0], halves_est[1])
        out.append(f)
    out.append(_context_code_finding(sh, r, last, dc))
    out += _fitted_world_findings(sh, result.spaces[-1].concepts, r, dc)
    glove = _glove_space()
    if glove is not None:
        glove_fit = fit_space(glove, dc)
        out.append(_dictionary_finding(sh, "dictionary.atoms_concepts.glove", "Atoms of a sparse dictionary learned "
                                       "on static GloVe vectors line up with concept directions.", glove_fit,
                                       _half_fits(glove, dc, cfg.seed, glove_fit), "GloVe 6B 50d"))
    # Recovery against noise and sparsity (the figure's numbers): the default world is sigma 0.03, rate 0.1.
    sweep = recovery_sweep(dc, (0.03,) if cfg.fast else (0.01, 0.03, 0.1, 0.3), (0.1,) if cfg.fast else
                           (0.1, 0.3), seed=cfg.seed)
    # Recovery: the synthetic world's known dictionary, by the same procedure (sizes chosen on held-out words).
    recoveries = []
    for seed in (cfg.seed, cfg.replication_seed):
        torch.manual_seed(seed)
        sc = SyntheticConfig(seed=seed)
        fs = feature_sets(sc, build_dictionary(sc))
        space = Space("synthetic", fs["features"], polysemy=fs.get("polysemy"))
        recoveries.append(fit_space(space, dc, truth=fs["dictionary"]))

    def rec(res: dict[str, Any]) -> dict[str, Any]:
        hit = (res["recovery"]["matched_cos"] >= 0.9).astype(float)
        return estimate(float(hit.mean()), bootstrap_mean(hit, cfg.bootstrap, cfg.seed), len(hit))

    first = recoveries[0]["recovery"]
    out.append(finding(
        "dictionary.recovery.synthetic", group, "On the default synthetic world, whose dictionary is known, the "
        "same procedure recovers it: the share of true atoms matched (one to one) by a learned atom with |cos| >= "
        "0.9.", rec(recoveries[0]), resampled="true atoms", better="higher",
        controls=[control("a random dictionary of the same size (share 0 by construction)", 0.0)],
        second=rec(recoveries[1]), replicated_on=f"a synthetic world drawn with seed {cfg.replication_seed}",
        command=sh.command(group),
        extra={"atoms": recoveries[0]["choice"].atoms, "nonzeros": recoveries[0]["choice"].nonzeros,
               "amari": first["amari"], "share_by_nonzeros_at_chosen_atoms": first["share_matched_0_9_by_nonzeros"],
               "min_matched_cos": float(first["matched_cos"].min()),
               "procedure": "vectors fitted as they are (no centring), sizes by the one-SE rule on held-out words, "
                            "each fit by sparsity continuation (1, 2, ... atoms per word), best of 3 starts",
               "recovery_by_noise_and_sparsity": sweep,
               "note": "the true dictionary here is the 2K task atoms mu_k^+-; the words also carry the K_irr "
                       "irrelevant concepts' features"}))
    return out


def group_semcor(sh: Shared) -> list[dict[str, Any]]:
    """SemCor 3.0 (real text): supersense accuracy of polysemous nouns in context and the WiC-style pair AUC at
    the last layer (fixed in advance: no selection), beside the word out of context, random weights and chance;
    every layer is in extra. Not measured (no estimate) where the corpus is absent."""
    cfg, group = sh.cfg, "semcor"
    chance = control("chance (pair AUC 1/2)", 0.5)
    if default_semcor() is None:
        missing = estimate(None, (None, None), 0)
        return [finding("semcor.pair_auc.last_layer", group, claim="SemCor not found (../shared/data/semcor3.0).",
                        main=missing, resampled="words", better="higher", controls=[chance], second=missing,
                        replicated_on="not measured", command=sh.command(group))]
    sc = SemcorConfig(extraction=ExtractionConfig(model=cfg.model, batch_size=32, device="cpu"),
                      max_files=12 if cfg.fast else 0, min_per_sense=3 if cfg.fast else 5,
                      max_per_sense=3 if cfg.fast else 10, permutations=cfg.permutations, bootstrap=cfg.bootstrap,
                      seed=cfg.seed)
    result = measure_semcor(sc, loaded=sh.loaded, quiet=True)
    trained = result.details["trained"].polysemous
    last = trained.layers[-1]

    def row(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
        return next(r for r in rows if all(r[k] == v for k, v in match.items()))

    acc = row(result.accuracy, model="trained", group="polysemous", layer=last, stat="in_context")
    alone = row(result.accuracy, model="trained", group="polysemous", layer=last, stat="out_of_context")
    rnd = row(result.accuracy, model="random", group="polysemous", layer=last, stat="in_context")
    units = np.asarray(trained.word_units[last]["sense_accuracy"], float)
    order = np.random.default_rng([cfg.seed, 29]).permutation(np.flatnonzero(np.isfinite(units)))
    parts = [units[order[: len(order) // 2]], units[order[len(order) // 2:]]]
    boots = [bootstrap_accuracy(p, n_boot=cfg.bootstrap, seed=cfg.seed) for p in parts]
    halves = [estimate(b.mean, (b.ci_low, b.ci_high), len(p)) for b, p in zip(boots, parts, strict=True)]
    per_layer = {"accuracy": result.accuracy, "pair_auc": result.pairs}
    f1 = finding(
        "semcor.supersense_accuracy.last_layer", group, claim="In real text (SemCor), a polysemous noun's hidden "
        "state at the last layer is nearer the centroid of its tagged sense's WordNet supersense than its other "
        "supersenses'.", main=estimate(acc["value"], (acc["ci_low"], acc["ci_high"]), acc["n_words"]),
        resampled="words", better="higher",
        controls=[control("permutation null (supersenses shuffled within words)", acc["null"]),
                  control("the word out of context", alone["value"], (alone["ci_low"], alone["ci_high"])),
                  control("random weights, in context", rnd["value"], (rnd["ci_low"], rnd["ci_high"]))],
        second=halves[1], replicated_on="two disjoint random halves of the polysemous nouns", command=sh.command(group),
        p_value=acc["p_value"], permutations=cfg.permutations,
        selection={"rule": f"the last layer ({last}), fixed in advance", "disjoint": "no selection"},
        extra={"layer": last, "semcor": result.report, "selection": result.info["selection"], **per_layer})
    f1["replication"] = replication(f1["replication"]["description"], halves[0], halves[1])
    auc = row(result.pairs, model="trained", label="supersense", layer=last)
    auc_rnd = row(result.pairs, model="random", label="supersense", layer=last)
    two = pair_auc_halves(result, last, seed=cfg.seed, n_bootstrap=cfg.bootstrap)
    ests = [estimate(h["auc"], (h["ci_low"], h["ci_high"]), h["n_words"]) for h in two]
    f2 = finding(
        "semcor.pair_auc.last_layer", group, claim="Two SemCor occurrences of one noun have a higher contextual "
        "cosine (last layer) when they share a WordNet supersense than when they do not (WiC-style pair AUC).",
        main=estimate(auc["auc"], (auc["ci_low"], auc["ci_high"]), auc["n_words"]), resampled="words (cluster "
        "bootstrap: a word's pairs move together)", better="higher",
        controls=[chance, control("random weights", auc_rnd["auc"], (auc_rnd["ci_low"], auc_rnd["ci_high"]))],
        second=ests[1], replicated_on="two disjoint random halves of the polysemous nouns", command=sh.command(group),
        selection={"rule": f"the last layer ({last}), fixed in advance", "disjoint": "no selection"},
        extra={"layer": last, "n_positive": auc["n_positive"], "n_negative": auc["n_negative"],
               "per_word_mean": auc["per_word_mean"]})
    f2["replication"] = replication(f2["replication"]["description"], ests[0], ests[1])
    drift = _drift_findings(sh, result.details["trained"], group, prefix="semcor",
                            random=result.details.get("random"))
    return [f1, f2, *drift, *_semcor_icl_findings(sh, group)]


SEMCOR_ICL_SHOTS = 4  # fixed in advance: one shot count for the real-sentence ICL findings


def _semcor_icl(sh: Shared, part: int) -> Any:
    """The in-prompt readout on ``--suite supersenses`` with queries in the SemCor sentences of one half of the tag
    files (``part`` 0 or 1: alternate files), beside the static kernel and random weights."""
    cfg = sh.cfg
    cs = supersense_concepts()
    ctx = load_semcor_contexts(f"semcor:{default_semcor()}", cs, min_per_sense=2 if cfg.fast else 3,
                               seed=cfg.seed, max_files=12 if cfg.fast else 0, part=(part, 2))
    prompts = EpisodeConfig(suite="supersenses", shots=[SEMCOR_ICL_SHOTS], episodes=cfg.icl_episodes,
                            queries_per_episode=2,
                            conditions=["polysemous_in_context", "polysemous_in_context_zero_shot"])
    ic = IclConfig(extraction=ExtractionConfig(model=cfg.model, layers="last", device="cpu"), prompts=prompts,
                   readout="in_prompt", baselines=["static_kernel", "random_weights"],
                   tune_episodes=cfg.tune_episodes, bootstrap=cfg.bootstrap, permutations=cfg.permutations,
                   seed=cfg.seed)
    return icl_probe(ic, loaded=sh.loaded, concept_set=cs, contexts=ctx)


def _semcor_icl_findings(sh: Shared, group: str) -> list[dict[str, Any]]:
    """Real-sentence ICL: accuracy of polysemous queries in their SemCor sentences, and majority-sense minus
    minority-sense accuracy (the real counterpart of the skewed-concept shift), each replicated on the other half
    of the tag files."""
    cfg = sh.cfg
    halves = [_semcor_icl(sh, k).summary for k in (0, 1)]
    cond, shots = "polysemous_in_context", str(SEMCOR_ICL_SHOTS)
    rep_text = "the other half of the SemCor tag files (alternate files: disjoint sentences)"
    selection = {"rule": f"{SEMCOR_ICL_SHOTS} shots, fixed in advance; beta: {halves[0]['beta']['rule']}",
                 "disjoint": f"yes: beta tuned on in-distribution episodes (seed {cfg.seed + 1})"}
    common = {"command": sh.command(group), "replicated_on": rep_text, "selection": selection}

    def cell(summary: dict[str, Any], tree: str = "accuracy", name: str | None = None, c: str = cond,
             k: str = shots) -> dict[str, Any] | None:
        node = summary if name is None else summary["baselines"][name]
        return node.get(tree, {}).get(c, {}).get(k)

    def est(x: dict[str, Any] | None) -> dict[str, Any]:
        return estimate(x["mean"], (x["ci_low"], x["ci_high"]), x.get("n_words", x["n"])) if x else \
            estimate(None, (None, None), 0)

    s = halves[0]
    acc = [cell(h) for h in halves]
    controls = [control(f"chance (1/{s['ways']} ways)", s["chance"]),
                *_cell_control("zero-shot (the same queries, no demonstrations)",
                               cell(s, c="polysemous_in_context_zero_shot", k="0")),
                *_cell_control("static kernel", cell(s, name="static_kernel")),
                *_cell_control("random weights (same readout)", cell(s, name="random_weights"))]
    f1 = finding(
        f"semcor.icl.in_context.{shots}shots", group,
        claim=f"With {shots} demonstrations of monosemous nouns labelled by WordNet supersense, a polysemous noun read "
              "in its real SemCor sentence is classified as its tagged supersense (in-prompt readout).",
        main=est(acc[0]), resampled=ICL_RESAMPLED, better="higher", controls=controls, second=est(acc[1]),
        extra={"contexts_report": s.get("contexts_report"), "beta": s["beta"]["best"]}, **common)
    freq = [h.get("sense_frequency", {}) for h in halves]

    def diff(f: dict[str, Any], name: str | None = None) -> dict[str, Any] | None:
        node = f if name is None else f.get("baselines", {}).get(name, {})
        return node.get(cond, {}).get(shots)

    mm = [diff(f) for f in freq]
    parts = {kind: [m[kind] if m else None for m in mm] for kind in ("majority", "minority")}
    base_controls = [control("no difference (0)", 0.0)]
    for name, label in (("static_kernel", "static kernel"), ("random_weights", "random weights (same readout)")):
        b = diff(freq[0], name)
        if b and b["difference"]["mean"] is not None and math.isfinite(b["difference"]["mean"]):
            d = b["difference"]
            base_controls.append(control(f"{label}: its majority minus minority", d["mean"],
                                         (d["ci_low"], d["ci_high"])))
    f2 = finding(
        f"semcor.icl.majority_minus_minority.{shots}shots", group,
        claim="In real text, a polysemous noun's query in its majority (most frequent) supersense is classified more "
              "accurately than one in a minority supersense (the real counterpart of the skewed-concept shift).",
        main=est(mm[0]["difference"] if mm[0] else None), resampled="query words (cluster bootstrap: a word's "
        "prompts move together)", better="higher", controls=base_controls,
        second=est(mm[1]["difference"] if mm[1] else None),
        extra={"majority": [est(x) for x in parts["majority"]], "minority": [est(x) for x in parts["minority"]],
               "tied_left_out": [f.get("tied_left_out") for f in freq],
               "zero_shot": [(f.get("polysemous_in_context_zero_shot") or {}).get("0") for f in freq],
               "baselines": {name: diff(freq[0], name) for name in ("static_kernel", "random_weights")}}, **common)
    return [f1, f2]


MAP_SCENARIOS: list[str] = []  # the map measures learning speed; OOD errors are the synthetic group's


def _map_cells(sh: Shared, seed: int, crosses: Sequence[float]) -> list[dict[str, Any]]:
    """Every (within_cosine, cross_overlap) cell of the map trained to 1% test error or ``map_max_steps`` (one
    batched program): per cell its point, status, per-seed steps to 1% (None: censored) and their KM median."""
    cfg = sh.cfg
    points = [(w, c) for c in crosses for w in cfg.map_within]
    configs = [SyntheticConfig(seeds=cfg.seeds, steps=cfg.map_max_steps, n_test=cfg.n_test, within_cosine=w,
                               cross_overlap=c, scenarios=list(MAP_SCENARIOS), seed=seed) for w, c in points]
    results = sweep_cells(configs, StopRule(max_steps=cfg.map_max_steps))
    out = []
    for (w, c), res in zip(points, results, strict=True):
        s = res.summary
        out.append({"within_cosine": w, "cross_overlap": c, "status": s["status"],
                    "per_seed": (s.get("per_seed") or {}).get("steps_to_stop_error"),
                    "km": s.get("steps_to_stop_error"), "test_zero_one": (s.get("final") or {}).get("test_zero_one")})
    return out


def _censored_steps(cell: dict[str, Any], budget: int) -> list[float]:
    """Per-seed steps to 1%, a seed that never got there counted as the budget (a lower bound)."""
    return [float(budget) if v is None else float(v) for v in (cell["per_seed"] or [])]


def _cell_estimate(cell: dict[str, Any], budget: int) -> dict[str, Any]:
    """A cell's KM median steps to 1% with the range over seeds; a censored upper end is the budget (a lower
    bound); no estimate when fewer than half the seeds reached 1% (the median is then '>= budget')."""
    km = cell["km"] or {}
    if km.get("median") is None:
        return estimate(None, (None, None), km.get("seeds", 0))
    high = km["high"] if km.get("high") is not None else float(budget)
    return estimate(km["median"], (km["low"], high), km["seeds"])


def _trend(cells: Sequence[dict[str, Any]], budget: int, permutations: int, n_boot: int,
           seed: int) -> tuple[dict[str, Any], float]:
    """Spearman correlation of within_cosine with per-seed steps to 1% (censored seeds at the budget) over the
    cells, pooled over cross_overlap strata: the estimate with a bootstrap over seeds (each cell's seeds resampled)
    and a permutation p that shuffles within_cosine among the cells of each stratum (two-sided)."""
    strata: dict[float, list[int]] = {}
    for i, c in enumerate(cells):
        strata.setdefault(c["cross_overlap"], []).append(i)
    steps = [np.asarray(_censored_steps(c, budget)) for c in cells]
    x = np.asarray([c["within_cosine"] for c in cells], float)

    def rho(xs: np.ndarray, ys: Sequence[np.ndarray]) -> float:
        xx = np.concatenate([np.full(len(y), v) for v, y in zip(xs, ys, strict=True)])
        yy = np.concatenate(list(ys))
        if np.ptp(yy) == 0:
            return 0.0  # every seed at the same step (all censored, say): no trend to rank
        return float(spearmanr(xx, yy).statistic)

    value = rho(x, steps)
    rng = np.random.default_rng([seed, 31])
    boot = [rho(x, [y[rng.integers(0, len(y), len(y))] for y in steps]) for _ in range(n_boot)]
    null = []
    for _ in range(permutations):
        xp = x.copy()
        for idx in strata.values():
            xp[idx] = x[rng.permutation(idx)]
        null.append(rho(xp, steps))
    p = float((1 + np.sum(np.abs(null) >= abs(value) - 1e-12)) / (permutations + 1))
    low, high = np.percentile(boot, [2.5, 97.5])
    return estimate(value, (float(min(low, value)), float(max(high, value))), len(cells)), p


def group_map(sh: Shared) -> list[dict[str, Any]]:
    """The geometry-to-learning-speed map: steps to 1% test error over within_cosine x cross_overlap, each cell
    trained to 1% or a stated maximum (censored cells marked), its KM median over seeds beside the budget; and
    whether steps grow with within_cosine (Spearman, permutation p). Replicated on independent seeds."""
    cfg, group = sh.cfg, "map"
    budget = cfg.map_max_steps
    main = _map_cells(sh, cfg.seed, cfg.map_cross)
    rep = _map_cells(sh, cfg.replication_seed, cfg.map_cross)
    common = {"group": group, "command": sh.command(group),
              "replicated_on": f"{cfg.seeds} seeds from seed {cfg.replication_seed} (an independent world and "
                               "training run per cell)"}
    out = []
    for a, b in zip(main, rep, strict=True):
        w, c = a["within_cosine"], a["cross_overlap"]
        out.append(finding(
            f"map.steps_to_1pct.within_{w:g}.cross_{c:g}", claim=f"Steps to 1% test error of the default protocol "
            f"(random readout) at within_cosine {w:g}, cross_overlap {c:g}: the Kaplan-Meier median over seeds, "
            f"beside the {budget}-step budget (a cell is censored when some seed never reaches 1%).",
            main=_cell_estimate(a, budget), resampled="seeds (interval: range over seeds; a censored upper end is "
            "the budget, a lower bound)", better="lower",
            controls=[control(f"the step budget (censoring at {budget})", float(budget))],
            second=_cell_estimate(b, budget), headline=False,
            extra={"status": a["status"], "per_seed": a["per_seed"], "km": a["km"],
                   "replication_status": b["status"], "replication_per_seed": b["per_seed"],
                   "test_zero_one_at_stop": a["test_zero_one"]}, **common))
    est, p = _trend(main, budget, cfg.permutations, cfg.bootstrap, cfg.seed)
    est_rep, _ = _trend(rep, budget, cfg.permutations, cfg.bootstrap, cfg.replication_seed)
    statuses = [x["status"] for x in main]
    out.append(finding(
        "map.within_cosine_slows_learning", claim="Across the map, a larger within-concept cosine (the two senses "
        "of a concept more alike) takes more steps to reach 1% test error: Spearman correlation of within_cosine "
        "with per-seed steps (censored seeds at the budget), pooled over cross_overlap.", main=est,
        resampled="seeds within cells (bootstrap); p: within_cosine permuted among the cells of each cross_overlap",
        better="higher", controls=[control("no trend", 0.0)], second=est_rep, p_value=p,
        permutations=cfg.permutations, headline=True,
        extra={"cells": len(main), "censored_cells": statuses.count("censored"),
               "diverged_cells": statuses.count("diverged"), "budget": budget,
               "grid": {"within_cosine": list(cfg.map_within), "cross_overlap": list(cfg.map_cross)}}, **common))
    return out


MATCHED_SCENARIOS = [s for s, _, _ in MATCHING if s != "in_distribution"]


def _real_readouts(sh: Shared, which: str) -> dict[str, Any]:
    """The real model's ICL accuracy per condition and shots as an ICL summary's ``accuracy`` tree, read from the
    icl group's findings of this run (``which``: 'first', the main episode set, or 'second', the replication)."""
    icl = sh.done.get("icl")
    if not icl:
        raise ValueError("findings group 'matched' compares with the real ICL readouts of group 'icl'; accepted: "
                         "--groups with icl before matched (or icl saved in --out, with --resume)")
    accuracy: dict[str, dict[str, dict[str, Any]]] = {}
    for f in icl:
        m = re.fullmatch(r"icl\.([a-z_]+)\.(\d+)shots", f["id"])
        if not m:
            continue
        e = f["replication"][which]
        accuracy.setdefault(m.group(1), {})[m.group(2)] = {"mean": e["value"], "ci_low": e["interval"][0],
                                                            "ci_high": e["interval"][1], "n": e["n"]}
    return {"accuracy": accuracy}


def _world_agreements(sh: Shared, real_lv: LabelledVectors, seed: int, which: str) -> dict[str, Any]:
    """The matched, default and mismatched worlds trained on ``seeds`` seeds from ``seed``; each one's agreement
    (mean absolute error difference from the real readouts ``which``) and the matched world's paired differences."""
    cfg = sh.cfg
    base = SyntheticConfig(seeds=cfg.seeds, steps=cfg.steps, n_test=cfg.matched_n_test, n_test_ood=cfg.matched_n_test,
                           scenarios=list(MATCHED_SCENARIOS), seed=seed, test_prompts="fixed")  # final errors only
    est = estimate_parameters(real_lv.vectors, real_lv.labels, base, n_per_sign=cfg.matched_per_sign, seed=seed)
    defaults = SyntheticConfig()
    worlds = {"matched": matched_config(base, est),
              "default": dataclasses.replace(base, **{p: getattr(defaults, p) for p in PARAMETERS}),
              "mismatched": dataclasses.replace(base, **mismatched_parameters(est.parameters, base.d))}
    icl = _real_readouts(sh, which)
    results, rows = {}, {}
    for name, wc in worlds.items():
        summary = train(wc, figures=False).summary
        rows[name] = matched_rows(summary, icl, wc.L)
        real = {r["synthetic_condition"]: (r["real_error"], r["real_error_low"], r["real_error_high"])
                for r in rows[name] if math.isfinite(r["real_error"])}
        results[name] = agreement(world_errors(summary, list(real)), real, n_bootstrap=cfg.bootstrap, seed=seed)
    table = {r["world"]: r for r in agreement_rows(results)}
    return {"estimate": est, "results": results, "table": table, "rows": rows,
            "parameters": {n: {p: getattr(wc, p) for p in PARAMETERS} for n, wc in worlds.items()}}


def _mad(a: dict[str, Any]) -> dict[str, Any]:
    return estimate(a["value"], (a["ci_low"], a["ci_high"]), a["seeds"])


def group_matched(sh: Shared) -> list[dict[str, Any]]:
    """Does a synthetic world whose generator parameters are fitted to the real model's last-layer geometry
    reproduce the real model's ICL errors better than the unmatched default world and a deliberately mismatched
    one? One agreement statistic (mean absolute error difference over the shared conditions) per world, the
    matched world's paired differences, replicated on independent seeds against the replication episode set."""
    cfg, group = sh.cfg, "matched"
    spaces, _ = spaces_from_model(GeometryConfig(extraction=ExtractionConfig(model=cfg.model, layers="-1",
                                                                             device="cpu")),
                                  loaded=sh.loaded, quiet=True)
    real_lv = spaces[-1].concepts
    main = _world_agreements(sh, real_lv, cfg.seed, "first")
    rep = _world_agreements(sh, real_lv, cfg.replication_seed, "second")
    common = {"group": group, "command": sh.command(group),
              "replicated_on": f"worlds re-estimated and trained on {cfg.seeds} seeds from seed "
                               f"{cfg.replication_seed}, against the icl group's replication episode set"}
    resampled = "world seeds (paired across conditions) x real errors drawn from their intervals"
    m, r = main["table"], rep["table"]
    out = [finding(
        "matched.agreement", claim="The geometry-matched synthetic world's 0-1 errors are close to the real model's "
        "ICL errors: mean absolute difference over the conditions both worlds have, beside the unmatched default "
        "world and a deliberately mismatched one.", main=_mad(main["results"]["matched"]), resampled=resampled,
        better="lower", controls=[control(f"{w} world", m[w]["mad"], (m[w]["ci_low"], m[w]["ci_high"]))
                                  for w in ("default", "mismatched")],
        second=_mad(rep["results"]["matched"]), headline=True,
        selection={"rule": "generator parameters fitted to four moments of the last layer's raw cosines (within/"
                           "cross mean and spread); the ICL errors play no part in the fit",
                   "disjoint": "yes: the fit reads word geometry only, the agreement reads ICL errors"},
        extra={"parameters": main["parameters"], "moment_loss": main["estimate"].loss,
               "per_condition": {w: a["per_condition"] for w, a in main["results"].items()},
               "conditions": main["results"]["matched"]["conditions"],
               "rows": main["rows"]["matched"], "replication_parameters": rep["parameters"]}, **common)]
    for w in ("default", "mismatched"):
        out.append(finding(
            f"matched.closer_than_{w}", claim=f"The matched world is closer to the real ICL errors than the {w} world "
            "(matched minus that world's mean absolute difference; below 0 = closer).",
            main=estimate(m[w]["matched_minus_this"], (m[w]["diff_ci_low"], m[w]["diff_ci_high"]), m[w]["seeds"]),
            resampled=resampled, better="lower", controls=[control("no difference", 0.0)],
            second=estimate(r[w]["matched_minus_this"], (r[w]["diff_ci_low"], r[w]["diff_ci_high"]), r[w]["seeds"]),
            extra={"interval_is": "percentile interval of the difference of independent bootstrap draws"}, **common))
    return out


STEER_ALPHA = 1.0  # the stated strength (the grid's largest): a vector as long as a typical query state
STEER_ALPHAS = (0.0, 0.25, STEER_ALPHA)


def _steer(sh: Shared, seed: int, episodes: int) -> Any:
    """``probe steer`` on the real model at every layer, one episode set."""
    cfg = sh.cfg
    sc = SteerConfig(extraction=ExtractionConfig(model=cfg.model, layers="all", device="cpu"), episodes=episodes,
                     alphas=list(STEER_ALPHAS), bootstrap=cfg.bootstrap, seed=seed)
    return steer(sc, loaded=sh.loaded)


def _steer_estimate(result: Any, layer: str, key: str, alpha: float = STEER_ALPHA) -> dict[str, Any]:
    cell = result.summary["per_layer"][layer][key][f"{alpha:g}"]
    return estimate(cell["mean"], (cell["ci_low"], cell["ci_high"]), cell["n"])


def group_steer(sh: Shared) -> list[dict[str, Any]]:
    """Sense steering of polysemous ICL queries on the real model: per layer, the rate at which the answer moves to
    the target sense when the query's residual state is pushed along (target - other sense) at the stated strength,
    minus the same with matched-norm random directions (paired by reading); beside the unrelated concept-pair
    direction's own excess over random; replicated on an independent episode set; the headline layer chosen on a
    third, disjoint episode set."""
    cfg, group = sh.cfg, "steer"
    episodes = max(3, cfg.icl_episodes // 5)  # 40 at publication settings: every layer x 3 kinds x 2 alphas
    main = _steer(sh, cfg.seed, episodes)
    rep = _steer(sh, cfg.replication_seed, episodes)
    select = _steer(sh, cfg.seed + 1, max(3, episodes // 2))
    s = main.summary
    a = f"{STEER_ALPHA:g}"
    resampled = "episodes x query words (two-way cluster bootstrap; each reading paired with its random control)"
    rep_text = f"an independent episode set (seed {cfg.replication_seed})"
    common = {"group": group, "resampled": resampled, "better": "higher", "replicated_on": rep_text,
              "command": sh.command(group)}
    what = (f"{s['readout']} readout, {s['shots']} demonstrations split between the two senses, alpha {a} x the "
            "median query-state norm at the layer")

    def record(id: str, layer: str, claim: str, **kw: Any) -> dict[str, Any]:
        unrelated = _steer_estimate(main, layer, "unrelated_minus_random")
        controls = [control("no difference", 0.0), control("unrelated concept-pair direction minus random",
                                                           unrelated["value"], unrelated["interval"])]
        cells = s["per_layer"][layer]
        low = f"{min(x for x in STEER_ALPHAS if x > 0):g}"
        return finding(id, claim=claim, main=_steer_estimate(main, layer, "sense_minus_random"), controls=controls,
                       second=_steer_estimate(rep, layer, "sense_minus_random"), extra={
                           "layer": int(layer), "alpha": STEER_ALPHA, "setting": what,
                           "rate_sense": cells["sense"][a], "rate_random": cells["random"][a],
                           "rate_unrelated": cells["unrelated"][a],
                           f"sense_minus_random_at_alpha_{low}": cells["sense_minus_random"][low],
                           f"rate_sense_at_alpha_{low}": cells["sense"][low],
                           "scale": s["scale"][layer], "scale_rule": s["scale_rule"],
                           "direction_words": s["direction_words"], "prompts": s["prompts"],
                           "random_weights": s["random_weights"]}, **common, **kw)

    out = []
    for layer in map(str, s["layers"]):
        out.append(record(
            f"steer.sense_minus_random.layer{layer}", layer,
            f"Adding alpha times (target sense - other sense) to a polysemous query's residual state at layer {layer} "
            "moves the answer to the target sense more often than a random direction of the same norm (rate toward "
            "the target, steered minus random, paired by reading).",
            selection={"rule": f"every layer reported; alpha {a} stated in advance", "disjoint": "no selection"}))
    gains = {layer: select.summary["per_layer"][layer]["sense_minus_random"][a]["mean"]
             for layer in map(str, select.summary["layers"])}
    best = max(gains, key=lambda k: (gains[k], -int(k)))
    out.append(record(
        "steer.sense_minus_random.selected_layer", best,
        f"At the layer where steering works best on held-out episodes (layer {best}), pushing a polysemous query along "
        "(target sense - other sense) moves its answer to the target sense more often than a matched-norm random "
        "direction.", headline=True,
        selection={"rule": f"the layer with the largest steered-minus-random rate at alpha {a} (ties: the earliest) "
                           f"on {select.summary['episodes']} selection episodes; gains per layer {gains}",
                   "disjoint": f"yes: chosen on episodes drawn with seed {cfg.seed + 1}, measured on seed {cfg.seed} "
                               f"and replicated on seed {cfg.replication_seed}"}))
    return out


def _circuits_config(sh: Shared, seed: int) -> CircuitsConfig:
    cfg = sh.cfg
    prompts = EpisodeConfig(suite="polysemy", shots=[4], episodes=cfg.attention_episodes,
                            conditions=["in_distribution"])
    return CircuitsConfig(extraction=ExtractionConfig(model=cfg.model, device="cpu"), prompts=prompts,
                          role_sequences=4 if cfg.fast else 16, permutations=cfg.permutations,
                          bootstrap=cfg.bootstrap, batch_size=32, seed=seed)


def _head_rho(rows: Sequence[dict[str, Any]], x: str, y: str, n_boot: int, seed: int) -> dict[str, Any]:
    """Spearman's rho of two head columns with a percentile bootstrap interval over heads."""
    a = np.array([r[x] for r in rows], dtype=float)
    b = np.array([r[y] for r in rows], dtype=float)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(a), len(a))
        boots.append(rank_correlation(a[i], b[i], permutations=1)[0])
    boots = np.array(boots)
    boots = boots[np.isfinite(boots)]
    rho = rank_correlation(a, b, permutations=1)[0]
    low, high = np.quantile(boots, [0.025, 0.975]) if len(boots) else (None, None)
    return estimate(rho, (low, high), len(a))


def group_circuits(sh: Shared) -> list[dict[str, Any]]:
    """The paper's QK products read from the real model's weights, per head: do heads whose W_Q, W_K match concept
    directions to themselves attend to same-concept demonstrations (rank correlation, directions and attention on
    disjoint episodes), how many heads pass the product test against the random-weight model, and which heads
    carry the readout causally (patching), replicated on an independent episode set."""
    cfg, group = sh.cfg, "circuits"
    cs = load_suite("polysemy")
    main = measure_circuits(_circuits_config(sh, cfg.seed), sh.loaded, cs, show_progress=False)
    random_model = baseline_model(sh.loaded, "random_weights", seed=cfg.seed)
    base = measure_circuits(_circuits_config(sh, cfg.seed), random_model, cs, causal_heads=[], show_progress=False)
    s = main.summary
    top = [(t["layer"], t["head"]) for t in s["top_causal"][:3]]
    rep = measure_circuits(_circuits_config(sh, cfg.replication_seed), sh.loaded, cs, causal_heads=top,
                           show_progress=False)
    rep_text = f"an independent episode set (seed {cfg.replication_seed}; directions from seed " \
               f"{cfg.replication_seed + 1}), the same model"
    corr = s["correlations"]["weight_vs_attention"]
    base_corr = base.summary["correlations"]["weight_vs_attention"]
    est = _head_rho(main.rows, "weight_score", "attention_excess", cfg.bootstrap, cfg.seed)
    out = [finding(
        "circuits.weight_vs_attention", group, claim="Heads whose weights make a concept's direction attend to "
        "itself more than to the other concepts' (concept minus complement product of W_Q, W_K) are the heads "
        "that attend to same-concept demonstrations (Spearman rho over every head, in distribution, 4 shots).",
        main=est, resampled="heads (interval: bootstrap over heads; p: permutation of the head pairing)",
        better="higher", controls=[control("no association", 0.0),
                                   control("random-weight model (its own directions and attention)",
                                           base_corr["rho"])],
        second=_head_rho(rep.rows, "weight_score", "attention_excess", cfg.bootstrap, cfg.seed), replicated_on=rep_text,
        command=sh.command(group), p_value=corr["p_value"], permutations=cfg.permutations, headline=True,
        selection={"rule": "none: every head", "disjoint": s["disjoint"]},
        extra={"layer_norm": s["layer_norm"], "directions": s["directions"], "heads": s["layers"] * s["heads"],
               "random_weights_p": base_corr["p_value"], "replication_rho_p": rep.summary["correlations"][
                   "weight_vs_attention"]["p_value"], "induction_vs_attention": s["correlations"][
                   "induction_vs_attention"]})]
    count, base_count, rep_count = s["product_heads"], base.summary["product_heads"], rep.summary["product_heads"]
    out.append(finding(
        "circuits.product_heads", group, claim="More heads of the trained model than of the random-weight model "
        "have a concept-minus-complement product above both nulls (random directions of the same norm, permuted "
        "concept labels; max-T over every head).", main=estimate(count, (count, count), s["layers"] * s["heads"]),
        resampled="none: a count of heads (each head's p from the two nulls' permutations)", better="higher",
        controls=[control("random-weight model", base_count)],
        second=estimate(rep_count, (rep_count, rep_count), s["layers"] * s["heads"]), replicated_on=rep_text,
        command=sh.command(group),
        extra={"alpha": s["alpha"], "permutations": cfg.permutations, "heads": s["layers"] * s["heads"],
               "passing": [[r["layer"], r["head"]] for r in main.rows if r["product_p_corrected"] < s["alpha"]]}))
    head = top[0]
    row = next(r for r in main.rows if (r["layer"], r["head"]) == head)
    rep_row = next(r for r in rep.rows if (r["layer"], r["head"]) == head)
    effects = np.array([r["patch_effect"] for r in main.rows], dtype=float)
    out.append(finding(
        "circuits.top_causal_head", group, claim=f"Patching head L{head[0]}H{head[1]}'s query-position output from "
        "label-rotated prompts lowers the in-prompt readout margin (the head's causal indirect effect).",
        main=estimate(row["patch_effect"], (row["patch_low"], row["patch_high"]), s["episodes"]),
        resampled="episodes", better="higher",
        controls=[control("no effect", 0.0), control("median head's patching effect", float(np.median(effects)))],
        second=estimate(rep_row["patch_effect"], (rep_row["patch_low"], rep_row["patch_high"]), s["episodes"]),
        replicated_on=rep_text + ": the head chosen on the main set, measured on the independent one",
        command=sh.command(group),
        selection={"rule": "the head of largest patching effect on the main episode set",
                   "disjoint": "no for the main estimate (chosen and measured on it); yes for the replication"},
        extra={"top_causal": s["top_causal"], "patch_vs_attention": s["correlations"]["patch_vs_attention"],
               "zero_vs_attention": s["correlations"]["zero_vs_attention"],
               "mean_vs_attention": s["correlations"]["mean_vs_attention"],
               "zero_effect": [row["zero_effect"], row["zero_low"], row["zero_high"]],
               "mean_effect": [row["mean_effect"], row["mean_low"], row["mean_high"]],
               "clean_accuracy": s["clean_accuracy"], "clean_margin": s["clean_margin"],
               "readout": s["readout"], "patch_source": s["patch_source"],
               "replication_top": rep.summary["top_causal"]}))
    return out


GROUP_FUNCTIONS: dict[str, Callable[[Shared], list[dict[str, Any]]]] = {
    "synthetic": group_synthetic, "synthetic_random_readout": group_synthetic_random_readout,
    "geometry": group_geometry, "icl": group_icl, "attention": group_attention, "contexts": group_contexts,
    "dictionary": group_dictionary,
    "semcor": group_semcor,
    "circuits": group_circuits, "steer": group_steer,
    "map": group_map, "matched": group_matched,
}


# ---------------------------------------------------------------------------------------- result and files
@dataclass
class FindingsResult:
    """Every finding of a run, the seconds each group took and the settings; ``summary`` is findings.json."""

    config: FindingsConfig
    findings: list[dict[str, Any]]
    seconds: dict[str, float]
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)
    wall_seconds: float | None = None  # this invocation, start to end
    resumed: list[str] = dataclasses.field(default_factory=list)  # groups read from an earlier run, not measured

    def __post_init__(self) -> None:
        if not self.summary:
            self.summary = {"settings": to_dict(self.config), "group_seconds": self.seconds,
                            "wall_seconds": self.wall_seconds, "resumed_groups": self.resumed,
                            "n_findings": len(self.findings), "findings": self.findings}

    def figures(self) -> dict[str, Figure]:
        """The forest plot: every finding beside its controls."""
        return {"findings_forest": forest_figure(self.findings)}

    def save(self, run: RunFolder) -> None:
        """Write config.yaml, findings.json, findings.md, summary.json and the forest plot into ``run``."""
        run.save_config(self.config)
        write_json(run.path / "findings.json", self.summary)
        (run.path / "findings.md").write_text(render_markdown(self.summary))
        for name, fig in self.figures().items():
            save_figure(fig, run.figures, name, caption=FOREST_CAPTION)
        run.write_summary({"n_findings": len(self.findings), "group_seconds": self.seconds,
                           "verdicts": {f["id"]: f["verdict"] for f in self.findings}})


def run_findings(cfg: FindingsConfig, run: RunFolder, *, resume: bool = False) -> FindingsResult:
    """Run every group of ``cfg`` (``--fast``: at tiny settings), saving each as groups/<name>.json when done;
    with ``resume`` a group whose file exists (with the same settings) is read, not recomputed. With
    ``cfg.jobs`` > 1 the groups run that many at a time, each in a process of its own (:func:`_run_parallel`)."""
    start = time.perf_counter()
    settings = to_dict(cfg)
    groups_dir = run.path / "groups"
    groups_dir.mkdir(exist_ok=True)
    shared = Shared(cfg)
    saved: dict[str, tuple[list[dict[str, Any]], float]] = {}
    for name in cfg.groups:
        path = groups_dir / f"{name}.json"
        if resume and path.is_file():
            data = read_json(path)
            if _same_settings(name, data["settings"], settings):
                log.info("findings: group %s read from %s", name, path)
                saved[name] = (data["findings"], data["seconds"])
                continue
            log.info("findings: group %s in %s has other settings; recomputing", name, path)
    resumed = list(saved)
    todo = [name for name in cfg.groups if name not in saved]
    if cfg.jobs > 1 and len(todo) > 1:
        _run_parallel(cfg, todo, groups_dir)
        saved.update({name: _read_group(groups_dir, name) for name in todo})
    else:
        for name in todo:
            if name in NEEDS:
                shared.done[NEEDS[name]] = saved[NEEDS[name]][0]
            saved[name] = _run_group(shared, name, groups_dir)
    findings = [f for name in cfg.groups for f in saved[name][0]]
    return FindingsResult(cfg, findings, {name: saved[name][1] for name in cfg.groups},
                          wall_seconds=round(time.perf_counter() - start, 1), resumed=resumed)


def _run_group(shared: Shared, name: str, groups_dir: Path) -> tuple[list[dict[str, Any]], float]:
    """Group ``name`` measured and saved as groups/<name>.json (its findings and seconds)."""
    start = time.perf_counter()
    log.info("findings: group %s", name)
    got = GROUP_FUNCTIONS[name](shared)
    seconds = round(time.perf_counter() - start, 1)
    write_json(groups_dir / f"{name}.json", {"group": name, "seconds": seconds, "settings": to_dict(shared.cfg),
                                            "findings": got})
    log.info("findings: group %s done in %.0f s (%d findings)", name, seconds, len(got))
    return got, seconds


def _read_group(groups_dir: Path, name: str) -> tuple[list[dict[str, Any]], float]:
    data = read_json(groups_dir / f"{name}.json")
    return data["findings"], data["seconds"]


def _group_process(cfg: FindingsConfig, name: str, groups_dir: str, threads: int) -> float:
    """One group in a worker process: ``threads`` torch threads, the findings it reads (:data:`NEEDS`) from their
    saved files, the result saved as groups/<name>.json. Returns its seconds."""
    torch.set_num_threads(threads)
    shared = Shared(cfg)
    if name in NEEDS:
        shared.done[NEEDS[name]] = _read_group(Path(groups_dir), NEEDS[name])[0]
    # BLAS and OpenMP pools too: N workers each spinning a pool of every core's threads run many times slower
    with threadpool_limits(limits=threads):
        return _run_group(shared, name, Path(groups_dir))[1]


def _usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _run_parallel(cfg: FindingsConfig, todo: Sequence[str], groups_dir: Path) -> None:
    """Run the groups ``todo`` ``cfg.jobs`` at a time, each in a fresh spawned process with an equal share of the
    cores as torch threads; the costliest first (:data:`GROUP_COST`), a group that reads another's findings only
    once that one is saved. The first failure stops every worker and is raised; groups finished by then stay saved
    (``--resume`` keeps them). Numbers equal the in-process run's up to the order of float reductions that the
    thread count changes."""
    threads = max(1, _usable_cores() // cfg.jobs)
    pending = sorted(todo, key=lambda g: -GROUP_COST.get(g, 1.0))
    running: dict[str, Any] = {}
    done: set[str] = {g for g in cfg.groups if g not in todo}
    log.info("findings: %d groups, %d at a time, %d torch thread(s) each", len(todo), cfg.jobs, threads)
    pool = multiprocessing.get_context("spawn").Pool(cfg.jobs, maxtasksperchild=1)
    try:
        while pending or running:
            for name in [g for g in pending if NEEDS.get(g) in (None, *done)]:
                if len(running) >= cfg.jobs:
                    break
                pending.remove(name)
                log.info("findings: group %s started", name)
                running[name] = pool.apply_async(_group_process, (cfg, name, str(groups_dir), threads))
            finished = [g for g, r in running.items() if r.ready()]
            for name in finished:
                seconds = running.pop(name).get()  # re-raises the worker's exception
                done.add(name)
                log.info("findings: group %s done in %.0f s", name, seconds)
            if not finished:
                time.sleep(0.2)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()


def _same_settings(group: str, saved: dict[str, Any], now: dict[str, Any]) -> bool:
    """Whether a saved group was measured at the settings it reads now (:data:`GROUP_SETTINGS`; every setting but
    the list of groups for a group not in that table). A setting the saved file lacks counts as changed."""
    names = GROUP_SETTINGS.get(group) or [k for k in now if k not in ("groups", "jobs")]
    missing = object()
    return all(saved.get(k, missing) == now.get(k) for k in names)


def execute(cfg: FindingsConfig, ctx: JobContext) -> int:
    """``mcicl findings``: run the groups into the run folder (or, with --readme, render the README block)."""
    if ctx.options.get("readme"):
        path = write_readme_block()
        print(f"wrote the findings block of {path} from docs/findings.json")
        return 0
    if cfg.fast:
        cfg = fast_settings(cfg)
    run = ctx.create_run(inputs={"--model": cfg.model}, resumable=True)
    result = run_findings(cfg, run, resume=ctx.resume)
    result.save(run)
    beaten = sum(f["verdict"] == BEATS for f in result.findings)
    print(f"{len(result.findings)} findings ({beaten} beat their controls) in {result.wall_seconds:.0f} s wall time "
          f"({sum(result.seconds.values()):.0f} s of group time, {cfg.jobs} at a time); output is in {run.path}")
    return 0


# ---------------------------------------------------------------------------------------- text
def fmt(x: float | None) -> str:
    """A number as findings text writes it: 3 significant digits (3 decimals below 1), 'n/a' when missing."""
    if x is None:
        return "n/a"
    if x == 0:
        return "0.000"
    if abs(x) < 0.001:
        return f"{x:.1e}"
    if abs(x) < 10:
        return f"{x:.3f}"
    return f"{x:.1f}"


def fmt_ci(ci: Sequence[float | None] | None) -> str:
    """'[low, high]' as findings text writes it."""
    return "" if ci is None else f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def _controls_text(f: dict[str, Any]) -> str:
    return "; ".join(f"{c['name']} {fmt(c['value'])}" + (f" {fmt_ci(c['interval'])}" if c["interval"] else "")
                     for c in f["controls"])


def _wall_text(summary: dict[str, Any]) -> str:
    """The run's wall time, its --jobs, and which groups were read from an earlier run (their times are theirs)."""
    wall, resumed = summary.get("wall_seconds"), summary.get("resumed_groups") or []
    if wall is None:
        return ""
    text = f" Wall time {fmt(wall)} s with {summary['settings'].get('jobs', 1)} group(s) at a time"
    if resumed:
        text += f"; read from an earlier run (--resume), not timed here: {', '.join(resumed)}"
    return text + "."


def render_markdown(summary: dict[str, Any]) -> str:
    """findings.md: one table per group (value, interval, controls, verdict) and the replications side by side."""
    s = summary["settings"]
    lines = ["# Findings", "", "## This run", "",
             f"Made by `mcicl findings`{' --fast (tiny settings: not for quoting)' if s.get('fast') else ''}: "
             f"{summary['n_findings']} findings. Settings: {s['seeds']} synthetic seeds, {s['icl_episodes']} ICL "
             f"episodes per cell, {s['attention_episodes']} attention episodes per cell, {s['permutations']} "
             f"permutations, {s['bootstrap']} bootstrap resamples. Group times (s): "
             + ", ".join(f"{k} {fmt(v)}" for k, v in summary["group_seconds"].items()) + "." + _wall_text(summary),
             ""]
    groups: dict[str, list[dict]] = {}
    for f in summary["findings"]:
        groups.setdefault(f["group"], []).append(f)
    for group, fs in groups.items():
        lines += [f"## {group}", "", "| finding | value [95% interval] | resampled (n) | controls | p | verdict |",
                  "|---|---|---|---|---|---|"]
        for f in fs:
            lines.append(f"| `{f['id']}` | {fmt(f['value'])} {fmt_ci(f['interval'])} | {f['resampled']} ({f['n']}) "
                         f"| {_controls_text(f)} | {f['p_text'] or ''} | {f['verdict']} |")
        sel = {f["selection"]["rule"] + " (disjoint: " + f["selection"]["disjoint"] + ")" for f in fs
               if f["selection"]}
        lines += [""] + [f"Selection: {t}." for t in sorted(sel)] + [""]
        sets = [f["extra"]["across_sets"] for f in fs if "across_sets" in f["extra"]]
        lines += [f"Replication: {fs[0]['replication']['description']}."
                  + (f" Across sets: the statistic in each of {sets[0]['n']} independent episode sets ("
                     f"{'; '.join(str(x) for x in sets[0]['seeds'])}), their mean and Student-t 95% interval."
                     if sets else ""), "",
                  "| finding | first | second | intervals overlap |" + (" across sets |" if sets else ""),
                  "|---|---|---|---|" + ("---|" if sets else "")]
        for f in fs:
            a, b = f["replication"]["first"], f["replication"]["second"]
            row = (f"| `{f['id']}` | {fmt(a['value'])} {fmt_ci(a['interval'])} | {fmt(b['value'])} "
                   f"{fmt_ci(b['interval'])} | {'yes' if f['replication']['overlap'] else 'no'} |")
            if sets:
                x = f["extra"].get("across_sets")
                row += (f" {fmt(x['mean'])} {fmt_ci(x['interval'])}: " + ", ".join(fmt(v) for v in x["values"]) + " |"
                        if x else " |")
            lines.append(row)
        lines += ["", f"Reproduce: `{fs[0]['command']}`", ""]
    return "\n".join(lines)


def render_readme_block(summary: dict[str, Any]) -> str:
    """The README's "What it finds" block: one table row per headline finding (value, interval, controls,
    replication, verdict), quoted from findings.json by id."""
    s = summary["settings"]
    lines = [README_BEGIN,
             f"*Generated by `mcicl findings --readme` from docs/findings.json: {s['seeds']} synthetic seeds, "
             f"{s['icl_episodes']} ICL episodes per condition and shot count, {s['attention_episodes']} attention "
             f"episodes per cell, {s['permutations']} permutations; 95% intervals. The headline rows of "
             f"{summary['n_findings']} findings; every one, with its claim and all its controls, is in "
             "docs/findings.md.*", ""]
    groups: dict[str, list[dict]] = {}
    for f in summary["findings"]:
        if f["headline"]:
            groups.setdefault(f["group"], []).append(f)
    for group, fs in groups.items():
        lines += [f"**{group}**", "", "| finding | value [95% interval] (n) | controls | replication (overlap) "
                  "| verdict |", "|---|---|---|---|---|"]
        for f in fs:
            b = f["replication"]["second"]
            p = f"; {f['p_text']}" if f["p_text"] else ""
            overlap = {True: "yes", False: "no", None: "n/a"}[f["replication"]["overlap"]]
            lines.append(f"| `{f['id']}` | {fmt(f['value'])} {fmt_ci(f['interval'])} ({f['n']} {f['resampled']}"
                         f"{p}) | {_controls_text(f)} | {fmt(b['value'])} {fmt_ci(b['interval'])} ({overlap}) "
                         f"| {f['verdict']} |")
        lines.append("")
    lines.append(README_END)
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    """``text`` with the part between the findings markers (markers included) replaced by ``block``."""
    pattern = re.compile(re.escape(README_BEGIN) + ".*?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        raise ValueError(f"no {README_BEGIN} ... {README_END} block; accepted: a README with both markers")
    return pattern.sub(lambda _: block, text, count=1)


DOCS_INTRO = """\
# Findings

<!-- Generated by `mcicl findings --readme` from docs/findings.json: edit analysis/findings.py, not this file. -->
`mcicl findings` (`make findings`) measures every headline number of the README at publication settings and
writes a run folder with `findings.json`, `findings.md` (this table), `groups/<name>.json` (one per finding group,
saved as each finishes; `--resume --out DIR` skips the saved ones) and `figures/findings_forest.png`. `--jobs N`
runs N groups at a time, each in a process of its own with an equal share of the cores (`make findings` uses 2;
the numbers do not depend on it). `mcicl findings --fast` runs the same code at tiny settings (a structure check;
its numbers are not for quoting).

Each finding is a record: an id, the claim, the value with its 95% interval and what was resampled (seeds,
episodes, concepts or words), the controls that could have produced it (baselines, nulls, chance, the
embeddings-only layer, zero-shot), the rule by which anything was chosen (beta, heads, best layer) and whether
choice and evaluation used disjoint data, a replication on an independent seed, episode set or word half, and a
verdict: "beats its controls" only when the interval clears every control's interval. A permutation p-value at
its floor is written `p < 1/(B+1)`. The README's "What it finds" quotes the headline findings from
docs/findings.json by id; `mcicl findings --readme` regenerates that block and this file, and
tests/test_findings_readme.py fails when they differ from docs/findings.json.

"""


def write_readme_block(readme: Path = REPO / "README.md", findings: Path = REPO / "docs" / "findings.json",
                       docs: Path | None = REPO / "docs" / "findings.md") -> Path:
    """Render the README block (and docs/findings.md) from ``findings``; return the README's path."""
    summary = read_json(findings)
    readme.write_text(replace_block(readme.read_text(), render_readme_block(summary)))
    if docs is not None:
        docs.write_text(render_docs(summary))
    return readme


def render_docs(summary: dict[str, Any]) -> str:
    """docs/findings.md: what the job does, then :func:`render_markdown` of the committed findings."""
    return DOCS_INTRO + render_markdown(summary).split("\n", 1)[1].lstrip("\n")


# ---------------------------------------------------------------------------------------- figure
# Control kinds, each one colour in the forest plot: what could have produced the effect. A name is matched by its
# words (first kind that matches), so a new control lands in a kind without a table edit; "other" is what is left.
CONTROL_KINDS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("model baseline: random weights, embeddings only, untrained", "#7570b3",
     ("random weight", "random-weight", "re-initialised", "embeddings alone", "input embeddings", "untrained")),
    ("context-blind or static readout", "#1b9e77",
     ("zero-shot", "static kernel", "query-only", "context-blind", "out of context", "nearest-demonstration",
      "no context", "plain cosine")),
    ("null, chance or no effect", "#d95f02",
     ("null", "chance", "shuffled", "permuted", "rotated", "random directions", "random senses", "random dictionary",
      "no ", "drift", "unrelated", "expectation", "single exponential", "median head")),
)
OTHER_KIND = ("other condition (budget, world, start)", "#e7298a")


def control_kind(name: str) -> tuple[str, str]:
    """The (kind, colour) of a control by its name (:data:`CONTROL_KINDS`; :data:`OTHER_KIND` when none fits)."""
    low = name.lower()
    for kind, colour, words in CONTROL_KINDS:
        if any(w in low for w in words):
            return kind, colour
    return OTHER_KIND


def forest_figure(findings: Sequence[dict[str, Any]]) -> Figure:
    """One panel per group: each finding's estimate and interval (black), its controls (coloured) and its
    replication's estimate (open circle), the better direction marked in the label."""
    groups: dict[str, list[dict]] = {}
    for f in findings:
        groups.setdefault(f["group"], []).append(f)
    heights = [max(len(fs), 2) for fs in groups.values()]
    fig = Figure(figsize=(11, 0.26 * sum(heights) + 1.2 * len(groups)))
    axes = fig.subplots(len(groups), 1, gridspec_kw={"height_ratios": heights}, squeeze=False)[:, 0]
    for ax, (group, fs) in zip(axes, groups.items(), strict=True):
        ys = np.arange(len(fs))[::-1]
        for y, f in zip(ys, fs, strict=True):
            for k, c in enumerate(f["controls"]):
                colour = control_kind(c["name"])[1]
                if c["value"] is None:
                    continue
                if c["interval"] and None not in c["interval"]:
                    ax.plot(c["interval"], [y - 0.15 - 0.08 * k] * 2, color=colour, lw=1.2)
                ax.plot(c["value"], y - 0.15 - 0.08 * k, "s", color=colour, ms=3.5)
            if f["interval"] and None not in f["interval"]:
                ax.plot(f["interval"], [y, y], color="black", lw=2)
            if f["value"] is not None:
                ax.plot(f["value"], y, "o", color="black", ms=4.5)
            second = f["replication"]["second"]["value"]
            if second is not None:
                ax.plot(second, y + 0.22, "o", mfc="none", color="0.4", ms=4)
        labels = [f"{f['id'].split('.', 1)[1] if '.' in f['id'] else f['id']} "
                  f"({'↓' if f['better'] == 'lower' else '↑'}){'' if f['verdict'] == BEATS else ' ✗'}" for f in fs]
        ax.set_yticks(ys, labels, fontsize=7)
        ax.set_ylim(-0.8, len(fs) - 0.4)
        ax.set_title(group, fontsize=9, loc="left")
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    handles = [axes[0].plot([], [], "o", color="black")[0], axes[0].plot([], [], "o", mfc="none", color="0.4")[0]]
    kinds = [*((k, c) for k, c, _ in CONTROL_KINDS), OTHER_KIND]
    handles += [axes[0].plot([], [], "s", color=c)[0] for _, c in kinds]
    height = fig.get_figheight()  # inches: title and legend keep a fixed strip at the top however tall the figure
    fig.suptitle("Findings beside their controls (↑/↓: better direction; ✗: does not beat a control)", fontsize=10,
                 y=1 - 0.12 / height, va="top")
    fig.legend(handles, ["finding, 95% interval", "replication (open)", *(k for k, _ in kinds)], loc="upper center",
               bbox_to_anchor=(0.5, 1 - 0.36 / height), ncol=3, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.75 / height))
    return fig
