"""Every registered job keeps the job protocol: a torch-free config whose option fields all document themselves,
an entry point that exists, and a result with ``.summary``, ``.figures()`` and ``.save(run)``; a saved result
is shown by the report."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from mcicl.app import registry
from mcicl.core.jobs import load

JOBS = registry.jobs()


@pytest.mark.parametrize("job", JOBS, ids=lambda j: j.command)
def test_entry_point_and_result_exist(job):
    execute = load(job.execute)
    assert list(inspect.signature(execute).parameters)[:2] == ["config", "ctx"] or \
        len(inspect.signature(execute).parameters) == 2
    assert job.result is not None, f"{job.command}: Job.result names no result class"
    cls = load(job.result)
    assert callable(getattr(cls, "figures", None)) and callable(getattr(cls, "save", None)), cls
    has_summary = hasattr(cls, "summary") or (dataclasses.is_dataclass(cls) and "summary" in
                                              {f.name for f in dataclasses.fields(cls)})
    assert has_summary, f"{cls.__name__} has no summary"
    assert list(inspect.signature(cls.save).parameters) == ["self", "run"], cls


@pytest.mark.parametrize("job", [j for j in JOBS if j.demo is not None], ids=lambda j: j.command)
def test_demo_stage_exists(job):
    stage = load(job.demo.run)
    assert list(inspect.signature(stage).parameters) == ["ctx"]


@pytest.mark.parametrize("job", [j for j in JOBS if j.config is not None], ids=lambda j: j.command)
def test_every_option_field_has_help(job):
    from mcicl.core.options import HELP, field_info

    for group in job.fields.values():
        for path in group:
            f, _, _ = field_info(job.config, path)
            assert f.metadata.get(HELP), f"{job.command}: {path} has no doc()"


def test_commands_are_unique_and_reported_commands_have_one_job():
    commands = [j.command for j in JOBS]
    assert len(commands) == len(set(commands))
    reported = [c for j in JOBS for c in j.reported_commands if j.report is not None]
    assert len(reported) == len(set(reported))


def test_a_saved_result_round_trips_through_the_report(tmp_path):
    """measure -> result.save(run) -> report: the report shows the job's own section, from run.json's command."""
    import numpy as np

    from mcicl.app.api import report
    from mcicl.core.runs import RunFolder
    from mcicl.core.vectors import LabelledVectors
    from mcicl.probing.geometry import GeometryConfig, measure_geometry

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 16))
    labels = np.repeat(["a", "b", "c"], 6)
    vectors = centres[np.repeat([0, 1, 2], 6)] + 0.5 * rng.standard_normal((18, 16))
    path = LabelledVectors(vectors, np.array([f"w{i}" for i in range(18)]), labels, meta={}).save(tmp_path / "v.npz")
    result = measure_geometry(GeometryConfig(vectors=str(path), permutations=20, bootstrap=10, shuffles=1,
                                             probes=False))
    assert set(result.figures()) == {"geometry_layers", "direction_heatmap"}
    run = RunFolder.create(tmp_path / "geo", "probe geometry")
    result.save(run)
    html = report([run.path], out=tmp_path / "report")
    md = (html.parent / "report.md").read_text()
    assert registry.job("probe geometry").report.title in md
    assert "Statistics per layer" in md  # one of the section's CSV tables
