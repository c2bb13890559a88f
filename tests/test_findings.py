"""``mcicl findings``: every finding's record is complete (fields, interval around the value, controls computed,
replication present) at --fast settings on a tiny random-weight encoder, --resume recomputes only missing groups,
and the verdict and p-value text follow their rules. The numbers are not checked here (see test_findings_readme)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from mcicl.analysis import findings as fnd
from mcicl.analysis.findings_config import GROUPS, FindingsConfig, fast_settings
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
