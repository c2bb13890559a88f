"""``mcicl probe checkpoints`` on a tiny GPT-2 trained here for a few steps (TINY-TRAINED checkpoints; step_0 is
the random init): one row per checkpoint, the ICL error fitted over steps by the synthetic convergence functions
(checked against statsmodels' GLM and a hand interpolation), resumable, and clear errors for bad checkpoint lists.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from mcicl.analysis import checkpoint_sweep
from mcicl.analysis.checkpoint_sweep import (
    Checkpoint,
    CheckpointsConfig,
    probe_config,
    resolve_checkpoints,
    step_of,
)
from mcicl.app.cli import main
from mcicl.core.io import read_json
from mcicl.probing.extract import ExtractionConfig
from mcicl.probing.icl.icl_config import IclConfig

sm = pytest.importorskip("statsmodels.api", reason="statsmodels is in the test extra (pip install 'mcicl[test]')")
pytestmark = pytest.mark.usefixtures("one_torch_thread")
CELL = ("in_distribution", "2")


def _argv(folder, steps, concepts, out):
    order = [steps[k] for k in (2, 0, 5, 1, 4, 3)]  # given out of order: the rows come back in step order
    return ["probe", "checkpoints", "--checkpoints", ",".join(str(folder / f"step_{s}") for s in order),
            "--suite", str(concepts), "--query-template", "{word}", "--convention", "acc_calibrated",
            "--shots", "0,2", "--conditions", "in_distribution,zero_shot", "--episodes", "8",
            "--queries-per-episode", "3", "--bootstrap", "200", "--device", "cpu", "--out", str(out), "--quiet"]


@pytest.fixture(scope="module")
def sweep(tiny_checkpoints, tmp_path_factory):
    folder, steps, concepts = tiny_checkpoints
    out = tmp_path_factory.mktemp("sweep") / "run"
    assert main(_argv(folder, steps, concepts, out)) == 0
    return out


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_one_row_per_checkpoint_in_step_order_labelled_by_weights(sweep, tiny_checkpoints):
    _, steps, _ = tiny_checkpoints
    rows = _rows(sweep / "checkpoints.csv")
    assert [int(r["step"]) for r in rows] == list(steps)
    assert [r["weights"] for r in rows] == ["random init (tiny)"] + ["tiny-trained"] * (len(steps) - 1)
    key = "@".join(CELL)
    for r in rows:
        own = _rows(sweep / "checkpoints" / f"step_{r['step']}" / "results.csv")
        correct = [int(x["correct_acc_calibrated"]) for x in own if (x["condition"], x["shots"]) == CELL]
        assert float(r[key]) == pytest.approx(np.mean(correct))  # the row is the checkpoint's own probe
        assert float(r[f"{key}_ci_low"]) <= float(r[key]) <= float(r[f"{key}_ci_high"])
    summary = read_json(sweep / "summary.json")
    assert summary["convention"] == "acc_calibrated" and summary["n_checkpoints"] == len(steps)
    assert (sweep / "figures" / "accuracy_vs_step.png").is_file()


def test_error_over_steps_is_fitted_as_statsmodels_and_a_hand_interpolation_say(sweep, tiny_checkpoints):
    _, steps, _ = tiny_checkpoints
    errors, n = [], None
    for s in steps:
        own = [x for x in _rows(sweep / "checkpoints" / f"step_{s}" / "results.csv")
               if (x["condition"], x["shots"]) == CELL]
        n = len(own)
        errors.append(sum(1 - int(x["correct_acc_calibrated"]) for x in own))
    t, k = np.array(steps, float), np.array(errors, float)
    assert k[0] > k[-1] and k[1:].sum() > 0, f"the tiny model must learn, or the fit tests nothing: {errors}"
    # The window: checkpoints with step > 0, up to the first zero after the last error.
    pos = np.nonzero(t > 0)[0]
    nonzero = [i for i in pos if k[i] > 0]
    end = min(len(t), max(nonzero) + 2)
    window = [i for i in pos if i < end]
    X = np.column_stack([np.ones(len(window)), t[window]])
    endog = np.column_stack([k[window], n - k[window]])
    ref = sm.GLM(endog, X, family=sm.families.Binomial()).fit(tol=1e-13, maxiter=200)
    quasi = sm.GLM(k[window] / n, X, family=sm.families.Binomial(), var_weights=np.full(len(window), float(n))).fit(
        scale="X2", tol=1e-13, maxiter=200)
    fit = read_json(sweep / "summary.json")["convergence"][CELL[0]][CELL[1]]
    assert fit["window"][2] == len(window) and fit["n"] == n
    assert fit["rate"] == pytest.approx(-ref.params[1], rel=1e-6)
    assert fit["rate_se"] == pytest.approx(ref.bse[1], rel=1e-5)
    assert fit["rate_se_quasi"] == pytest.approx(quasi.bse[1], rel=1e-5)
    low, high = fit["rate_ci95_quasi"]
    assert (low + high) / 2 == pytest.approx(fit["rate"]) and high - low == pytest.approx(2 * 1.959964 * quasi.bse[1],
                                                                                          rel=1e-5)
    # Crossing steps: the first step at or below each level, interpolated in log error (floor 0.5/n).
    err = k / n
    for level, got in fit["crossing"].items():
        lv = float(level)
        hit = [i for i in range(len(err)) if err[i] <= lv]
        if not hit:
            assert got is None
            continue
        i = hit[0]
        if i == 0:
            assert got == steps[0]
            continue
        e0, e1 = max(err[i - 1], 0.5 / n), max(err[i], 0.5 / n)
        frac = min(1.0, max(0.0, (math.log(e0) - math.log(lv)) / (math.log(e0) - math.log(e1))))
        assert got == pytest.approx(steps[i - 1] + frac * (steps[i] - steps[i - 1]))
    table = {(r["condition"], r["shots"]): r for r in _rows(sweep / "convergence.csv")}
    assert float(table[CELL]["rate"]) == pytest.approx(fit["rate"])


def test_resume_keeps_finished_checkpoints(sweep, tiny_checkpoints, tmp_path, monkeypatch):
    folder, steps, concepts = tiny_checkpoints
    copy = tmp_path / "run"
    shutil.copytree(sweep, copy)
    (copy / "checkpoints" / "step_30" / "checkpoint.json").unlink()  # as if interrupted while probing step 30
    kept = {s: (copy / "checkpoints" / f"step_{s}" / "summary.json").stat().st_mtime_ns for s in steps if s != 30}
    probed = []
    real = checkpoint_sweep.icl_probe

    def counting(config, **kwargs):
        probed.append(config.extraction.model)
        return real(config, **kwargs)

    monkeypatch.setattr(checkpoint_sweep, "icl_probe", counting)
    assert main(_argv(folder, steps, concepts, copy) + ["--resume"]) == 0
    assert probed == [str(folder / "step_30")]
    assert {s: (copy / "checkpoints" / f"step_{s}" / "summary.json").stat().st_mtime_ns for s in kept} == kept
    assert _rows(copy / "checkpoints.csv") == _rows(sweep / "checkpoints.csv")  # the same numbers
    summary = read_json(copy / "summary.json")
    assert (summary["probed_now"], summary["kept_from_resume"]) == (1, len(steps) - 1)
    # A checkpoint probed with other settings is not kept.
    config = CheckpointsConfig(checkpoints=[str(folder / "step_0"), str(folder / "step_10")])
    first = resolve_checkpoints(config)[0]
    other = probe_config(CheckpointsConfig(checkpoints=config.checkpoints, icl=IclConfig(bootstrap=500)), first)
    assert checkpoint_sweep._finished(SimpleNamespace(path=copy), first, other) is None


def test_checkpoint_lists_hub_revisions_and_bad_inputs(tiny_checkpoints, tmp_path):
    folder, _, _ = tiny_checkpoints
    hub = IclConfig(extraction=ExtractionConfig(model="org/tiny-lm"))
    got = resolve_checkpoints(CheckpointsConfig(checkpoints=["step2000", "step1000"], icl=hub))
    assert got == [Checkpoint("step1000", 1000, "org/tiny-lm", "step1000"),
                   Checkpoint("step2000", 2000, "org/tiny-lm", "step2000")]
    listing = tmp_path / "checkpoints.txt"
    listing.write_text(f"# two folders\n{folder / 'step_10'}\n\n{folder / 'step_0'}  # the init\n")
    assert [c.step for c in resolve_checkpoints(CheckpointsConfig(checkpoints=[str(listing)]))] == [0, 10]
    assert [step_of(n) for n in ("step_1000", "step1000", "checkpoint-1000/", "main")] == [1000, 1000, 1000, None]
    with pytest.raises(ValueError, match="at least 2 checkpoints"):
        resolve_checkpoints(CheckpointsConfig(checkpoints=[str(folder / "step_0")]))
    with pytest.raises(ValueError, match="is not a local model folder, and --model 'default' is not a Hub id"):
        resolve_checkpoints(CheckpointsConfig(checkpoints=["step1", "step2"]))
    with pytest.raises(ValueError, match="no number in its name"):
        resolve_checkpoints(CheckpointsConfig(checkpoints=["main", "step2"], icl=hub))
    with pytest.raises(ValueError, match="checkpoints at the same step \\[5\\]"):
        resolve_checkpoints(CheckpointsConfig(checkpoints=["a", "b"], steps=[5, 5], icl=hub))
    with pytest.raises(ValueError, match="--steps lists 1 steps for 2 checkpoints"):
        resolve_checkpoints(CheckpointsConfig(checkpoints=["a", "b"], steps=[5], icl=hub))
    with pytest.raises(ValueError, match="icl.extraction.revision"):
        CheckpointsConfig(icl=IclConfig(extraction=ExtractionConfig(model="org/x", revision="main")))
    out = tmp_path / "out"
    assert main(["probe", "checkpoints", "--checkpoints", f"{folder / 'step_0'},{tmp_path / 'nope'}", "--out",
                 str(out), "--quiet"]) == 2
    assert not out.exists()
    probe = probe_config(CheckpointsConfig(checkpoints=["step1", "step2"], icl=hub),
                         Checkpoint("step1", 1, "org/tiny-lm", "step1"))
    assert (probe.extraction.model, probe.extraction.revision) == ("org/tiny-lm", "step1")
    assert json.dumps(probe.extraction.revision) == '"step1"'
