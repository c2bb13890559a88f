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

Findings come in groups (synthetic, synthetic_random_readout, geometry, icl, attention, contexts); each finished
group is saved as ``groups/<name>.json`` as soon as it completes, so ``--resume`` recomputes only what is missing.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from mcicl.analysis.engine.measures import geometry_summary
from mcicl.analysis.findings_config import FindingsConfig, fast_settings
from mcicl.core.configuration import to_dict
from mcicl.core.io import read_json, write_json
from mcicl.core.jobs import JobContext
from mcicl.core.plotting import Caption, save_figure
from mcicl.core.pvalues import p_text
from mcicl.core.runs import RunFolder
from mcicl.probing.contextual import ContextsConfig, measure_contexts
from mcicl.probing.extract_config import ExtractionConfig
from mcicl.probing.geometry import measure_geometry
from mcicl.probing.geometry_config import GeometryConfig
from mcicl.probing.icl.attention import attention_probe
from mcicl.probing.icl.attention_config import ATTENTION_CONDITIONS, AttentionConfig
from mcicl.probing.icl.episodes import CONTEXT_CONDITIONS, DEFAULT_CONDITIONS, EpisodeConfig
from mcicl.probing.icl.icl_config import IclConfig
from mcicl.probing.icl.run import icl_probe
from mcicl.probing.icl.stats import bootstrap_accuracy
from mcicl.probing.models import LoadedModel, load_model
from mcicl.probing.semcor import default_semcor
from mcicl.probing.semcor_config import SemcorConfig
from mcicl.probing.semcor_job import measure_semcor, pair_auc_halves
from mcicl.synthetic.config import SyntheticConfig
from mcicl.synthetic.convergence import ci95
from mcicl.synthetic.train import train

log = logging.getLogger(__name__)

BEATS = "beats its controls"
FOREST_CAPTION = Caption(
    "Findings beside their controls",
    "Each finding's estimate (black) and 95% interval beside its controls (coloured markers with their intervals), "
    "one panel per group; the open circle is the replication's estimate; a cross marks a finding that does not "
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
    """What the groups of one run share: the config and the real model, loaded once on first use."""

    cfg: FindingsConfig
    _loaded: LoadedModel | None = None

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
    sc = SyntheticConfig(seeds=cfg.seeds, steps=kw.pop("steps", cfg.steps), n_test=cfg.n_test,
                         n_test_ood=cfg.n_test_ood, seed=seed, **kw)
    return train(sc, figures=False)


def group_synthetic(sh: Shared) -> list[dict[str, Any]]:
    """The synthetic world (warm-started readout): test error, correct attention, convergence, every OOD scenario
    beside the context-blind query-only and the nearest-demonstration baselines."""
    cfg, group = sh.cfg, "synthetic"
    main = _synthetic(cfg, cfg.seed)
    # Fresh dictionaries per seed: the replication varies the world too, not only init and prompts.
    rep = _synthetic(cfg, cfg.replication_seed, dictionary="per_seed")
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

    out.append(finding(
        "synthetic.test_error", claim="The trained one-layer transformer's in-distribution test 0-1 error "
        f"({cfg.n_test} prompts per seed).", main=seed_estimate(errors(main, None)), better="lower",
        controls=baselines(main, None), second=seed_estimate(errors(rep, None)), headline=True, **common))
    att = main.summary["final_per_seed"]["correct_attention"]
    init = main.metrics[0]["test"]["correct_attention"]  # step 0: the untrained model on the same test prompts
    out.append(finding(
        "synthetic.correct_attention", claim="Attention on the demonstrations that share the query's concept "
        "after training.", main=seed_estimate(att), better="higher",
        controls=[control("untrained model (step 0)", **_seed_control(init))],
        second=seed_estimate(rep.summary["final_per_seed"]["correct_attention"]), headline=True, **common))
    conv, conv_rep = main.summary["convergence"], rep.summary["convergence"]
    out.append(finding(
        "synthetic.convergence.rate", claim="The tail of the test 0-1 error decays exponentially: rate per step "
        "of a binomial (logit) fit, per seed.", main=seed_estimate(conv["per_seed"]["rate"], None), better="higher",
        controls=[control("no decay (rate 0)", 0.0)], second=seed_estimate(conv_rep["per_seed"]["rate"], None),
        headline=True, extra={"exponential_beats_power_law": conv["exponential_beats_power_law"],
                              "seeds_fitted": conv["seeds_fitted"],
                              "replication_exponential_beats_power_law": conv_rep["exponential_beats_power_law"]},
        **common))
    out.append(finding(
        "synthetic.convergence.curvature", claim="The log error bends down (negative curvature): decay at least "
        "as fast as a single exponential.", main=seed_estimate(conv["per_seed"]["curvature"], None), better="lower",
        controls=[control("a single exponential (curvature 0)", 0.0)],
        second=seed_estimate(conv_rep["per_seed"]["curvature"], None), **common))
    for scenario in main.summary["ood"]:
        out.append(finding(
            f"synthetic.ood.{scenario}", claim=f"Test 0-1 error on the OOD scenario {scenario}, beside baselines "
            "that see the same prompts.", main=seed_estimate(errors(main, scenario)), better="lower",
            controls=baselines(main, scenario), second=seed_estimate(errors(rep, scenario)),
            headline=scenario in ("flipped_labels", "polysemous_query", "switched_features", "unseen_concept"),
            **common))
    return out


def _seed_control(values: Sequence[float]) -> dict[str, Any]:
    e = seed_estimate(values)
    return {"value": e["value"], "ci": e["interval"]}


def group_synthetic_random_readout(sh: Shared) -> list[dict[str, Any]]:
    """The synthetic world with a randomly initialised readout: does it converge at all, and how fast."""
    cfg, group = sh.cfg, "synthetic_random_readout"
    kw = {"readout_init": "random", "steps": cfg.random_readout_steps}
    main, rep = _synthetic(cfg, cfg.seed, **kw), _synthetic(cfg, cfg.replication_seed, dictionary="per_seed", **kw)
    common = {"group": group, "resampled": "seeds", "command": sh.command(group),
              "replicated_on": f"{cfg.seeds} seeds from seed {cfg.replication_seed}, a fresh dictionary per seed"}
    b = main.summary["baselines"]["test"]
    conv, conv_rep = main.summary["convergence"], rep.summary["convergence"]
    return [
        finding("synthetic.random_readout.test_error", claim=f"With a random readout ({cfg.random_readout_steps} "
                "steps) the in-distribution test 0-1 error.",
                main=seed_estimate(main.summary["final_per_seed"]["test_zero_one"]), better="lower",
                controls=[control("query-only baseline", **_seed_control(b["query_only"]))],
                second=seed_estimate(rep.summary["final_per_seed"]["test_zero_one"]), headline=True,
                extra={"per_seed": main.summary["final_per_seed"]["test_zero_one"]}, **common),
        finding("synthetic.random_readout.convergence.rate", claim="With a random readout, the exponential rate of "
                "the error's tail (seeds whose error reaches the fit window).",
                main=seed_estimate(conv["per_seed"]["rate"], None), better="higher",
                controls=[control("no decay (rate 0)", 0.0)], second=seed_estimate(conv_rep["per_seed"]["rate"], None),
                extra={"exponential_beats_power_law": conv["exponential_beats_power_law"],
                       "seeds_fitted": conv["seeds_fitted"]}, **common),
    ]


def _halves(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves of each concept's words (row indices), drawn at random."""
    rng = np.random.default_rng([seed, 17])
    a, b = [], []
    for lab in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == lab))
        a += rows[: len(rows) // 2].tolist()
        b += rows[len(rows) // 2:].tolist()
    return np.array(sorted(a)), np.array(sorted(b))


def group_geometry(sh: Shared) -> list[dict[str, Any]]:
    """Real concept geometry (input embeddings and last layer): within-concept cosine, within minus cross,
    concept-direction |cos|, against the permutation null, the embeddings-only layer and the isotropic baseline."""
    cfg, group = sh.cfg, "geometry"
    gc = GeometryConfig(extraction=ExtractionConfig(model=cfg.model, layers="0,-1", device="cpu"),
                        permutations=cfg.permutations, bootstrap=cfg.bootstrap, shuffles=cfg.shuffles,
                        probes=False, seed=cfg.seed)
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
    rep_text = "two disjoint random halves of each concept's words, measured apart"
    n_words = result.results[last]["n_words"]
    out = []

    def add(id: str, claim: str, layer: str, stat: str, better: str, controls: list[dict[str, Any]],
            headline: bool = False, extra: dict[str, Any] | None = None) -> None:
        s = stats[layer][stat]
        ha, hb = (h[stat] for h in halves[layer])
        null = control("permutation null (concept labels shuffled)", s["null_mean"], (s["null_low"], s["null_high"]))
        out.append(finding(
            id, group, claim, stat_estimate(s), better=better,
            # The bootstrap resamples concepts; the direction statistic's unit is a pair of concepts.
            resampled="concept pairs" if stat == "concept_direction_abs_cos" else "concepts",
            controls=[null, *controls],
            second=stat_estimate(hb), replicated_on=rep_text, command=sh.command(group), p_value=s["p_value"],
            permutations=cfg.permutations, headline=headline,
            extra={"layer": layer, "n_words": n_words, "n_concepts": result.results[last]["n_concepts"],
                   "half_a": stat_estimate(ha), **(extra or {})}))
        # The replication compares the halves with each other (independent words), not a half with the whole.
        out[-1]["replication"] = replication(rep_text, stat_estimate(ha), stat_estimate(hb))

    def embeddings_only(stat: str) -> dict[str, Any]:
        s = stats[first][stat]
        return control(f"embeddings only (layer {first})", s["value"], (s["ci_low"], s["ci_high"]))

    add("geometry.within_concept.input_embeddings", "Words of one concept are more similar (centred cosine) "
        "than random word pairs already in the input embeddings.", first, "within_concept_cosine", "higher", [],
        headline=True)
    add("geometry.within_concept.last_layer", "Words of one concept are more similar (centred cosine) than random "
        "word pairs at the last layer.", last, "within_concept_cosine", "higher",
        [embeddings_only("within_concept_cosine")], headline=True)
    cross = stats[last]["cross_concept_cosine"]
    add("geometry.within_minus_cross.last_layer", "Within-concept cosine exceeds cross-concept cosine at the last "
        "layer.", last, "within_minus_cross", "higher", [embeddings_only("within_minus_cross")],
        extra={"cross_concept_cosine": stat_estimate(cross)})
    d = stats[last]["concept_direction_abs_cos"]
    add("geometry.direction_abs_cos.last_layer", "Concept directions are near-orthogonal: mean |cos| between "
        "concept directions at the last layer, above the isotropic baseline of random directions.", last,
        "concept_direction_abs_cos", "higher", [control("isotropic baseline (random directions)", d["isotropic"])],
        headline=True)
    return out


def _icl(sh: Shared, seed: int) -> Any:
    cfg = sh.cfg
    prompts = EpisodeConfig(suite="polysemy", shots=list(cfg.shots), episodes=cfg.icl_episodes,
                            conditions=[*DEFAULT_CONDITIONS, *CONTEXT_CONDITIONS])
    ic = IclConfig(extraction=ExtractionConfig(model=cfg.model, layers="last", device="cpu"), prompts=prompts,
                   readout="attention", tune_episodes=cfg.tune_episodes, bootstrap=cfg.bootstrap, seed=seed)
    return icl_probe(ic, loaded=sh.loaded)


def group_icl(sh: Shared) -> list[dict[str, Any]]:
    """ICL probes on the real model (attention readout): accuracy of every condition at every shot count against
    chance and zero-shot, the skewed readout's pull to the majority label, and the in-context sense effect."""
    cfg, group = sh.cfg, "icl"
    main, rep = _icl(sh, cfg.seed), _icl(sh, cfg.replication_seed)
    # More independent episode sets, 10 seeds apart so no set's beta-tuning episodes (seed + 1) are another's.
    set_seeds = [cfg.seed, cfg.replication_seed] + [cfg.replication_seed + 10 * k for k in range(1, cfg.icl_sets - 1)]
    sets = [main.summary, rep.summary] + [_icl(sh, seed).summary for seed in set_seeds[2:]]
    s, r = main.summary, rep.summary

    def across(*keys: str) -> dict[str, Any]:
        """The statistic in every episode set: values, mean and Student-t 95% interval across sets."""
        values = [_dig(x, keys)["mean"] for x in sets]
        e = seed_estimate(values, None)
        return {"seeds": set_seeds, "values": values, "mean": e["value"], "interval": e["interval"], "n": e["n"]}
    rep_text = f"an independent episode set (seed {cfg.replication_seed}; beta re-chosen on its own tune episodes)"
    selection = {"rule": f"beta (the readout's inverse temperature) chosen for the highest in-distribution accuracy "
                         f"on {cfg.tune_episodes} tune episodes per shot count; chosen beta {s['beta']['best']}",
                 "disjoint": f"yes: tune episodes are drawn with seed {cfg.seed + 1}, evaluated ones with seed "
                             f"{cfg.seed}"}
    common = {"group": group, "resampled": "episodes", "replicated_on": rep_text, "command": sh.command(group),
              "selection": selection}
    chance = control(f"chance (1/{s['ways']} ways)", s["chance"])
    zero = s["accuracy"].get("zero_shot", {}).get("0")
    zero_ctl = [control("zero-shot", zero["mean"], (zero["ci_low"], zero["ci_high"]))] if zero else []
    top = str(max(cfg.shots))
    out = []
    for cond, by_shots in s["accuracy"].items():
        for shots, acc in by_shots.items():
            controls = [chance] + (zero_ctl if cond != "zero_shot" else [])
            out.append(finding(
                f"icl.{cond}.{shots}shots", claim=f"Accuracy of the attention readout on {cond.replace('_', ' ')} "
                f"episodes with {shots} demonstrations.", main=acc_estimate(acc, cfg.icl_episodes), better="higher",
                controls=controls, second=acc_estimate(r["accuracy"][cond][shots], cfg.icl_episodes),
                headline=(shots == top and cond in ("in_distribution", "polysemous_query")) or cond == "zero_shot",
                extra={"across_sets": across("accuracy", cond, shots)}, **common))
    for shots, f in s["follows_majority"].get("skewed", {}).items():
        base = s["follows_majority"]["in_distribution"][shots]
        out.append(finding(
            f"icl.skewed.follows_majority.{shots}shots", claim=f"With 80/20-skewed demonstrations ({shots} shots) the "
            "readout predicts the majority label more often than with balanced ones.",
            main=acc_estimate(f, cfg.icl_episodes), better="higher",
            controls=[control("balanced demonstrations (in distribution)", base["mean"],
                              (base["ci_low"], base["ci_high"]))],
            second=acc_estimate(r["follows_majority"]["skewed"][shots], cfg.icl_episodes),
            headline=shots == top, extra={"across_sets": across("follows_majority", "skewed", shots)}, **common))
    for shots, e in s.get("context_effect", {}).items():
        out.append(finding(
            f"icl.context_effect.{shots}shots", claim=f"A query sentence that selects the asked sense raises accuracy "
            f"over one that selects the other sense ({shots} shots; paired by episode).",
            main=acc_estimate(e, cfg.icl_episodes), better="higher", controls=[control("no effect", 0.0)],
            second=acc_estimate(r["context_effect"][shots], cfg.icl_episodes), headline=True,
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


def group_attention(sh: Shared) -> list[dict[str, Any]]:
    """The mechanism in the real model: the top heads' attention on same-concept demonstrations in every cell,
    heads chosen on held-out episodes, against the three nulls."""
    cfg, group = sh.cfg, "attention"
    main, rep = _attention(sh, cfg.seed), _attention(sh, cfg.replication_seed)
    heads = ", ".join(f"L{a}H{b}" for a, b in main.top_heads)
    selection = {"rule": f"top {len(main.top_heads)} heads by correct attention minus the largest null on held-out "
                         f"in-distribution episodes at {max(cfg.attention_shots)} shots: {heads}",
                 "disjoint": f"yes: heads chosen on episodes drawn with seed {cfg.seed + 1}, values measured on "
                             f"episodes drawn with seed {cfg.seed}"}
    rep_text = (f"an independent episode set (seed {cfg.replication_seed}), heads re-chosen on its own held-out "
                "episodes: " + ", ".join(f"L{a}H{b}" for a, b in rep.top_heads))
    out = []
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
                  control("the word out of context", base["value"], (base["ci_low"], base["ci_high"])),
                  control(f"layer {first} (no context)", l0["value"], (l0["ci_low"], l0["ci_high"]))],
        second=halves[1], replicated_on="two disjoint random halves of the polysemous words (at the best layer, "
        "without the selection correction)", command=sh.command(group), p_value=s["p_value"],
        permutations=cfg.permutations, headline=True,
        selection={"rule": f"the layer of highest sense accuracy (layer {best}); value, null and bootstrap all take "
                           "the max over layers", "disjoint": "no: the choice is corrected by taking the same max "
                                                              "in the null and the bootstrap instead"},
        extra={"best_layer": best, "contexts": result.info.get("contexts")})
    f["replication"] = replication(f["replication"]["description"], halves[0], halves[1])
    return [f]


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
                      max_files=4 if cfg.fast else 0, min_per_sense=3 if cfg.fast else 5,
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
    return [f1, f2]


GROUP_FUNCTIONS: dict[str, Callable[[Shared], list[dict[str, Any]]]] = {
    "synthetic": group_synthetic, "synthetic_random_readout": group_synthetic_random_readout,
    "geometry": group_geometry, "icl": group_icl, "attention": group_attention, "contexts": group_contexts,
    "semcor": group_semcor,
}


# ---------------------------------------------------------------------------------------- result and files
@dataclass
class FindingsResult:
    """Every finding of a run, the seconds each group took and the settings; ``summary`` is findings.json."""

    config: FindingsConfig
    findings: list[dict[str, Any]]
    seconds: dict[str, float]
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.summary:
            self.summary = {"settings": to_dict(self.config), "group_seconds": self.seconds,
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
    with ``resume`` a group whose file exists (with the same settings) is read, not recomputed."""
    settings = to_dict(cfg)
    groups_dir = run.path / "groups"
    groups_dir.mkdir(exist_ok=True)
    shared = Shared(cfg)
    findings, seconds = [], {}
    for name in cfg.groups:
        path = groups_dir / f"{name}.json"
        if resume and path.is_file():
            saved = read_json(path)
            if _same_settings(saved["settings"], settings):
                log.info("findings: group %s read from %s", name, path)
                findings += saved["findings"]
                seconds[name] = saved["seconds"]
                continue
            log.info("findings: group %s in %s has other settings; recomputing", name, path)
        start = time.perf_counter()
        log.info("findings: group %s", name)
        got = GROUP_FUNCTIONS[name](shared)
        seconds[name] = round(time.perf_counter() - start, 1)
        write_json(path, {"group": name, "seconds": seconds[name], "settings": settings, "findings": got})
        log.info("findings: group %s done in %.0f s (%d findings)", name, seconds[name], len(got))
        findings += got
    return FindingsResult(cfg, findings, seconds)


def _same_settings(a: dict[str, Any], b: dict[str, Any]) -> bool:
    # Which groups run does not change a group's numbers.
    return {**a, "groups": None} == {**b, "groups": None}


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
    print(f"{len(result.findings)} findings ({beaten} beat their controls) in {sum(result.seconds.values()):.0f} s; "
          f"output is in {run.path}")
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


def render_markdown(summary: dict[str, Any]) -> str:
    """findings.md: one table per group (value, interval, controls, verdict) and the replications side by side."""
    s = summary["settings"]
    lines = ["# Findings", "", "## This run", "",
             f"Made by `mcicl findings`{' --fast (tiny settings: not for quoting)' if s.get('fast') else ''}: "
             f"{summary['n_findings']} findings. Settings: {s['seeds']} synthetic seeds, {s['icl_episodes']} ICL "
             f"episodes per cell, {s['attention_episodes']} attention episodes per cell, {s['permutations']} "
             f"permutations, {s['bootstrap']} bootstrap resamples. Group times (s): "
             + ", ".join(f"{k} {fmt(v)}" for k, v in summary["group_seconds"].items()) + ".", ""]
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
                  + (f" Across sets: the statistic in each of {sets[0]['n']} independent episode sets (seeds "
                     f"{', '.join(str(x) for x in sets[0]['seeds'])}), their mean and Student-t 95% interval."
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
saved as each finishes; `--resume --out DIR` skips the saved ones) and `figures/findings_forest.png`. `mcicl
findings --fast` runs the same code at tiny settings (a structure check; its numbers are not for quoting).

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
CONTROL_COLOURS = ("#d95f02", "#7570b3", "#1b9e77", "#e7298a")


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
                colour = CONTROL_COLOURS[k % len(CONTROL_COLOURS)]
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
    handles += [axes[0].plot([], [], "s", color=c)[0] for c in CONTROL_COLOURS]
    height = fig.get_figheight()  # inches: title and legend keep a fixed strip at the top however tall the figure
    fig.suptitle("Findings beside their controls (↑/↓: better direction; ✗: does not beat a control)", fontsize=10,
                 y=1 - 0.12 / height, va="top")
    fig.legend(handles, ["finding, 95% interval", "replication", "1st control", "2nd control", "3rd control",
                         "4th control"], loc="upper center", bbox_to_anchor=(0.5, 1 - 0.38 / height), ncol=6,
               fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.65 / height))
    return fig
