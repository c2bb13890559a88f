"""docs/contributing.md's walk is true: a toy job registered with one line appears in `mcicl --help`, runs with
options generated from its config, is shown by `mcicl report`, and is listed among the demo's stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcicl.app import demo, registry
from mcicl.app.cli import build_parser, main
from tests.toy_job import TOY_JOB, ToyConfig, toy

DOC = Path(__file__).resolve().parents[1] / "docs" / "contributing.md"


@pytest.fixture
def toy_registered():
    registry.register(TOY_JOB)
    try:
        yield TOY_JOB
    finally:
        registry.unregister(TOY_JOB.command)


def test_toy_job_in_help_with_generated_options(toy_registered, capsys):
    assert "toy" in build_parser().format_help()
    with pytest.raises(SystemExit):
        main(["toy", "--help"])
    text = capsys.readouterr().out
    assert "--n N" in text and "random unit vectors drawn (default: 20)" in text
    assert "--dim DIM" in text and "--seed" in text and "--config" in text


def test_toy_job_runs_reports_and_is_a_demo_stage(toy_registered, tmp_path, capsys):
    run = tmp_path / "toy"
    assert main(["toy", "--n", "6", "--dim", "3", "--seed", "2", "--out", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    # checked against the same computation called directly (another path to the number)
    assert summary == toy(ToyConfig(n=6, dim=3, seed=2)).summary
    assert summary["n_pairs"] == 15
    assert (run / "figures" / "toy_cosines.png").is_file()
    assert json.loads((run / "run.json").read_text())["command"] == "toy"
    report = tmp_path / "report"
    assert main(["report", str(run), "--out", str(report)]) == 0
    md = (report / "report.md").read_text()
    assert "Toy job: random cosines" in md and "Cosines" in md
    assert "toy stage" in [s.title for s in demo.stages()]


def test_registering_a_command_twice_is_refused(toy_registered):
    with pytest.raises(ValueError, match="registered already"):
        registry.register(TOY_JOB)


def test_the_guide_names_every_step_the_toy_job_takes():
    text = DOC.read_text()
    for step in ("ToyConfig", "doc(", "ToyResult", "figures()", "save(run)", "execute", "demo_stage", "DemoStage",
                 "ReportSection", "TOY_JOB", "registry", "tests/toy_job.py", "tests/test_contributing.py"):
        assert step in text, step
