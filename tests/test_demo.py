"""`mcicl demo --small` end to end through the console script: every stage runs and the report is complete."""

from __future__ import annotations

import csv
import json

from mcicl.app.demo import stages
from tests.conftest import mcicl_cli
from tests.test_report import check_report


def test_demo_small_runs_end_to_end_and_prints_the_report(tmp_path):
    out = tmp_path / "demo"
    result = mcicl_cli("demo", "--small", "--out", str(out), "--quiet", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    html_path = out / "report" / "report.html"
    assert f"report: {html_path}" in result.stdout

    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["stages"]) == [s.title for s in stages()]
    for sub in ("synthetic", "geometry", "icl", "attention", "sweep", "compare", "report"):
        assert (out / sub / "run.json").is_file(), sub

    # The comparison covers both worlds; the matched world sits beside the real ICL results.
    with open(out / "compare" / "comparison.csv", newline="") as fh:
        spaces = {row["space"] for row in csv.DictReader(fh)}
    assert "synthetic dictionary" in spaces and any("layer" in s for s in spaces)
    with open(out / "compare" / "matched.csv", newline="") as fh:
        matched = list(csv.DictReader(fh))
    assert {r["synthetic_condition"] for r in matched} >= {"in_distribution", "flipped_labels", "polysemous_query"}
    assert all(r["real_shots"] != "" for r in matched)  # every matching condition found its real counterpart
    compare = json.loads((out / "compare" / "summary.json").read_text())
    # the synthetic correct attention beside the real model's heads, for each attention condition
    with open(out / "compare" / "attention_compare.csv", newline="") as fh:
        attention = {r["condition"]: r for r in csv.DictReader(fh)}
    assert set(attention) == set(json.loads((out / "attention" / "summary.json").read_text())["cells"])
    assert 0 <= float(attention["in_distribution"]["synthetic_correct_attention"]) <= 1
    assert any(info["umap"] for info in compare["embedding_figures"].values())  # UMAP on the real layer

    parser = check_report(html_path)
    report_summary = json.loads((out / "report" / "summary.json").read_text())
    assert len(parser.images) == report_summary["figures"] >= 10
    text = html_path.read_text()
    for needle in ("Geometry-to-OOD map", "Synthetic vs real geometry", "Concept words: UMAP and PCA",
                   "Learning dynamics", "ICL accuracy vs number of demonstrations",
                   "Correct attention per layer and head", "Correct attention: synthetic vs real"):
        assert needle in text, needle
