"""``mcicl findings``: every finding's record is complete (fields, interval around the value, controls computed,
replication present) at --fast settings on a tiny random-weight encoder, --resume recomputes only missing groups,
and the verdict and p-value text follow their rules. The numbers are not checked here (see test_findings_readme)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from mcicl.analysis import findings as fnd
from mcicl.analysis.findings_config import GROUP_SETTINGS, GROUPS, NEEDS, FindingsConfig, fast_settings
from mcicl.core.configuration import ConfigError
from mcicl.core.pvalues import p_floor, p_text
from mcicl.core.runs import RunFolder
from mcicl.probing.tiny import build_tiny_model

FIELDS = ("id", "group", "claim", "value", "interval", "resampled", "n", "better", "controls", "p_value", "p_text",
          "selection", "replication", "verdict", "command")


def test_p_text_writes_the_floor_as_a_bound():
    assert p_text(1 / 1001, 1000) == "p < 1/(1000+1) = 0.001"
    assert p_text(1 / 201, 200) == "p < 1/(200+1) = 0.005"
    assert p_text(0.0123, 1000) == "p = 0.0123"
    assert p_text(None, 1000) == "p n/a"
    assert p_floor(99) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="permutations"):
        p_floor(0)


def test_verdict_compares_intervals():
    ctl = [fnd.control("null", 0.5, (0.45, 0.55))]
    assert fnd.verdict([0.6, 0.7], "higher", ctl) == fnd.BEATS
    assert fnd.verdict([0.5, 0.7], "higher", ctl) == "does not beat null"
    assert fnd.verdict([0.1, 0.2], "lower", [fnd.control("chance", 0.5)]) == fnd.BEATS
    assert fnd.verdict([0.0, 0.0], "lower", [fnd.control("query-only", 0.0, (0.0, 0.0))]) == "does not beat query-only"


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> Path:
    return build_tiny_model("bert", tmp_path_factory.mktemp("tiny") / "bert", hidden=32, heads=2, layers=2)


def check_structure(found: list[dict]) -> None:
    assert found
    ids = [f["id"] for f in found]
    assert len(ids) == len(set(ids)), "finding ids are unique"
    for f in found:
        missing = [k for k in FIELDS if k not in f]
        assert not missing, f"{f['id']}: missing {missing}"
        low, high = f["interval"]
        if f["value"] is None:  # an estimate that cannot be made (no seed reached the fit window) says so
            assert f["verdict"].startswith("not measured"), f["id"]
        else:
            assert None not in (low, high), f"{f['id']}: interval computed"
            assert low - 1e-9 <= f["value"] <= high + 1e-9, f"{f['id']}: interval {f['interval']} holds {f['value']}"
        assert f["controls"], f"{f['id']}: has controls"
        for c in f["controls"]:
            assert c["value"] is not None and math.isfinite(c["value"]), f"{f['id']}: control {c['name']} computed"
        rep = f["replication"]
        assert rep["description"] and "value" in rep["second"], f"{f['id']}: replication present"
        assert rep["overlap"] in (True, False) or f["value"] is None or rep["second"]["value"] is None, (
            f"{f['id']}: replication intervals {rep['first']['interval']} and {rep['second']['interval']}")
        assert f["verdict"] == fnd.BEATS or f["verdict"].startswith(("does not beat ", "not measured"))
        assert f["command"].startswith("mcicl findings")
        if f["permutations"]:
            assert f["p_text"].startswith("p ")
        if f["group"] == "icl":  # every ICL statistic is also measured on each independent episode set
            sets = f["extra"]["across_sets"]
            assert len(sets["values"]) == sets["n"] >= 2 and len(set(sets["seeds"])) == sets["n"], f["id"]
    groups = {f["group"] for f in found}
    assert groups == set(GROUPS)
    # Every shot count and condition is measured, not a chosen one.
    assert {"icl.polysemous_query.2shots", "icl.polysemous_query.8shots", "icl.zero_shot.0shots",
            "icl.context_effect.2shots", "icl.context_effect.8shots"} <= set(ids)


def test_fast_run_structure_and_resume(tiny_encoder, tmp_path):
    cfg = fast_settings(FindingsConfig(model=str(tiny_encoder), fast=True))
    start = time.perf_counter()
    run = RunFolder.create(tmp_path / "run", "findings")
    result = fnd.run_findings(cfg, run)
    result.save(run)
    log_time = time.perf_counter() - start
    print(result.seconds)
    check_structure(result.findings)
    for name in ("findings.json", "findings.md", "figures/findings_forest.png"):
        assert (run.path / name).is_file(), name
    assert sorted(p.stem for p in (run.path / "groups").glob("*.json")) == sorted(GROUPS)
    md = (run.path / "findings.md").read_text()
    assert "| finding | first | second | intervals overlap |" in md

    # Resume: delete one group's file; only that group is recomputed.
    (run.path / "groups" / "synthetic.json").unlink()
    called = []
    original = dict(fnd.GROUP_FUNCTIONS)

    def spy(name):
        def run_group(shared):
            called.append(name)
            return original[name](shared)
        return run_group

    try:
        for name in original:
            fnd.GROUP_FUNCTIONS[name] = spy(name)
        again = RunFolder.create(tmp_path / "run", "findings", resume=True)
        resumed = fnd.run_findings(cfg, again, resume=True)
    finally:
        fnd.GROUP_FUNCTIONS.update(original)
    assert called == ["synthetic"]
    assert (again.path / "groups" / "synthetic.json").is_file()
    assert [f["id"] for f in resumed.findings] == [f["id"] for f in result.findings]
    print(f"fast findings on the tiny encoder: {log_time:.0f} s", result.seconds)


def _numbers(findings):
    """Every number of every finding, in order (for comparing two runs)."""
    out = []

    def walk(x):
        if isinstance(x, bool) or x is None or isinstance(x, str):
            return
        if isinstance(x, (int, float)):
            out.append(float(x))
        elif isinstance(x, dict):
            for k in sorted(x):
                walk(x[k])
        elif isinstance(x, list):
            for v in x:
                walk(v)
    walk(findings)
    return np.array(out)


def test_parallel_groups_equal_the_in_process_run(tiny_encoder, tmp_path):
    # matched reads icl's saved findings, so with 2 workers it must wait for icl (it fails when icl's file is
    # missing); the numbers equal the in-process run's up to float reduction order (1 vs 2 torch threads).
    cfg = fast_settings(FindingsConfig(model=str(tiny_encoder), fast=True, groups=["icl", "matched"]))
    one = fnd.run_findings(cfg, RunFolder.create(tmp_path / "one", "findings"))
    par = dataclasses.replace(cfg, jobs=2)
    many = fnd.run_findings(par, RunFolder.create(tmp_path / "many", "findings"))
    assert [f["id"] for f in many.findings] == [f["id"] for f in one.findings]
    assert list(many.seconds) == ["icl", "matched"]
    a, b = _numbers(one.findings), _numbers(many.findings)
    assert a.shape == b.shape and a.size > 100
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_control_kinds_name_what_could_have_produced_the_effect():
    kind = {name: fnd.control_kind(name)[0] for name in (
        "random weights (same readout)", "trained input embeddings through re-initialised blocks (layer 6)",
        "zero-shot (in-prompt)", "static kernel", "query-only baseline", "null: concepts permuted",
        "chance (1/2 ways)", "no difference", "the step budget (censoring at 1600)", "default world")}
    model, blind, null = (k for k, _, _ in fnd.CONTROL_KINDS)
    assert kind["random weights (same readout)"] == model
    assert kind["trained input embeddings through re-initialised blocks (layer 6)"] == model
    assert {kind[n] for n in ("zero-shot (in-prompt)", "static kernel", "query-only baseline")} == {blind}
    assert {kind[n] for n in ("null: concepts permuted", "chance (1/2 ways)", "no difference")} == {null}
    assert kind["the step budget (censoring at 1600)"] == kind["default world"] == fnd.OTHER_KIND[0]
    # every kind has its own colour (the legend reads by colour)
    colours = [c for _, c, _ in fnd.CONTROL_KINDS] + [fnd.OTHER_KIND[1]]
    assert len(set(colours)) == len(colours)


def test_jobs_is_checked_and_not_a_setting_of_any_group():
    with pytest.raises(ConfigError, match="jobs"):
        FindingsConfig(jobs=0)
    with pytest.raises(ConfigError, match="jobs"):
        FindingsConfig(jobs=len(GROUPS) + 1)
    assert all("jobs" not in names for names in GROUP_SETTINGS.values())


def _cfg_reads(function_name: str) -> set[str]:
    """The ``cfg.<name>`` settings a group function reads, followed through the module's helper calls: the
    settings table of findings_config computed another way (from the source)."""
    source = inspect.getsource(fnd)
    tree = ast.parse(source)
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    seen: set[str] = set()

    def walk(name: str) -> set[str]:
        if name in seen or name not in functions:
            return set()
        seen.add(name)
        text = ast.get_source_segment(source, functions[name])
        out = set(re.findall(r"\bcfg\.([a-z_]+)", text))
        for called in re.findall(r"\b(_[a-z_0-9]+)\(", text):
            out |= walk(called)
        return out
    return walk(function_name)


def test_group_settings_table_covers_what_each_group_reads():
    for name, function in fnd.GROUP_FUNCTIONS.items():
        assert name in GROUP_SETTINGS, f"group {name} has no GROUP_SETTINGS entry"
        reads = _cfg_reads(function.__name__)
        assert reads, name
        missing = reads - set(GROUP_SETTINGS[name])
        assert not missing, f"group {name} reads {sorted(missing)} but --resume would not compare them"
    for name, needed in NEEDS.items():  # a group reading another's findings depends on that group's settings too
        assert set(GROUP_SETTINGS[needed]) <= set(GROUP_SETTINGS[name])


def test_resume_keeps_a_group_whose_settings_did_not_change():
    now = fnd.to_dict(FindingsConfig())
    saved = {**now, "map_max_steps": 99, "groups": ["geometry"]}
    assert fnd._same_settings("geometry", saved, now)  # geometry reads no map setting
    assert not fnd._same_settings("map", saved, now)
    older = {k: v for k, v in now.items() if k != "shuffles"}  # a file written before a setting existed
    assert not fnd._same_settings("geometry", older, now)
    assert fnd._same_settings("contexts", older, now)
    assert not fnd._same_settings("unlisted_group", {**now, "map_max_steps": 99}, now)


def test_matched_needs_icl_first():
    with pytest.raises(ValueError, match="icl listed before matched"):
        FindingsConfig(groups=["matched", "icl"])
    with pytest.raises(ValueError, match="icl_sets"):
        FindingsConfig(icl_episodes=3, icl_sets=5)
    FindingsConfig(groups=["icl", "matched"])


class _Icl:
    """A stand-in ICL result: rows of two conditions, episodes 0..9, one baseline column."""

    def __init__(self):
        rng = np.random.default_rng(3)
        self.rows = [{"condition": "in_distribution", "shots": 4, "episode": e, "query": f"w{q}",
                      "query_concept": f"c{q % 2}", "gold": "a", "predicted": "a", "majority_label": "a",
                      "correct": int(rng.random() < 0.7), "correct_static_kernel": int(rng.random() < 0.5)}
                     for e in range(10) for q in range(2)]
        self.summary = {"baselines": {"static_kernel": {}}, "ways": 2}


def test_episode_sets_are_disjoint_and_their_means_match_a_hand_count():
    result = _Icl()
    cfg = FindingsConfig(icl_episodes=10, icl_sets=3)
    sets = fnd._episode_sets(result, cfg)
    assert len(sets) == 3
    for k, s in enumerate(sets):
        mine = [r for r in result.rows if r["episode"] % 3 == k]
        assert s["accuracy"]["in_distribution"]["4"]["mean"] == pytest.approx(np.mean([r["correct"] for r in mine]))
        diff = np.mean([r["correct"] - r["correct_static_kernel"] for r in mine])
        assert s["versus"]["static_kernel"]["in_distribution"]["4"]["mean"] == pytest.approx(diff)
    # Together the sets hold every row once.
    assert sum(s["accuracy"]["in_distribution"]["4"]["n"] for s in sets) == len(result.rows)


def test_map_trend_is_spearman_and_its_null_permutes_cells():
    cells = [{"within_cosine": w, "cross_overlap": c, "per_seed": [100 * w + s + 10 * c for s in range(3)]}
             for c in (0.0, 0.2) for w in (0.1, 0.5, 0.9)]
    est, p = fnd._trend(cells, 1000, permutations=200, n_boot=50, seed=0)
    x = np.repeat([c["within_cosine"] for c in cells], 3)
    y = np.concatenate([c["per_seed"] for c in cells])
    assert est["value"] == pytest.approx(spearmanr(x, y).statistic)
    assert est["interval"][0] <= est["value"] <= est["interval"][1]
    assert p < 0.1  # a perfect within-stratum trend: only the identity ordering (1 of 6 per stratum) matches it
    censored = [{**c, "per_seed": [None, None, None]} for c in cells]  # every seed censored: no trend to rank
    assert fnd._trend(censored, 1000, permutations=20, n_boot=5, seed=0)[0]["value"] == 0.0
    km = {"median": 120.0, "low": 100.0, "high": None, "seeds": 3}
    assert fnd._cell_estimate({"km": km}, 400)["interval"] == [100.0, 400.0]  # a censored upper end: the budget
    assert fnd._cell_estimate({"km": {**km, "median": None}}, 400)["value"] is None
