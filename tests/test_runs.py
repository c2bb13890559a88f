"""Run folders keep every folder intact on failure, lock against a second writer, and never replace an input.

Issue 15's "must hold" list: after any failed command every folder that existed before is byte-identical
(with --overwrite, and when --out names an input); two commands writing one --out: exactly one succeeds.
Commands run in-process through ``mcicl.app.cli.main`` except where a second process is the point.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

from mcicl.app.cli import main, resolve
from mcicl.core.io import read_json
from mcicl.core.runs import RunBusyError, RunExistsError, RunFolder, RunStateError, require_run, run_state
from mcicl.probing.tiny import build_tiny_model
from mcicl.synthetic.config import TRAIN_JOB, SyntheticConfig

TINY_SETS = dict(K=2, K_irr=1, d=16, L=4, n_train=64, n_test=200, n_test_ood=50, eval_every=5, ood_every=10,
                 checkpoint_every=5, scenarios="noise_x2", n_features=5)


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file (bytes) and folder (None) under ``folder``, by relative path, hidden entries included."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def listing(folder: Path) -> list[str]:
    """What run.json's "files" should say: every path but run.json, folders with a trailing '/'."""
    return sorted(str(p.relative_to(folder)) + ("/" if p.is_dir() else "") for p in folder.rglob("*")
                  if p.name != "run.json")


def finished_run(path: Path, command: str = "probe extract") -> Path:
    """A small finished mcicl run (written through the atomic path, so run.json lists its files)."""
    with RunFolder.create(path, command, atomic=True) as run:
        run.write_summary({"value": 1.5})
        run.write_csv("rows.csv", [{"a": 1}])
        (run.figures / "f.png").write_bytes(b"png")
    return path


def sets(extra: dict | None = None) -> list[str]:
    return [a for k, v in {**TINY_SETS, **(extra or {})}.items() for a in ("--set", f"{k}={v}")]


def test_failed_command_puts_the_replaced_run_back_byte_identical(tmp_path, monkeypatch, capsys):
    good = finished_run(tmp_path / "good")
    before, parent_before = snapshot(good), sorted(os.listdir(tmp_path))

    def crash(config, run, **kw):  # fails half-way, after writing into the new run
        (run.path / "metrics.jsonl").write_text("{}\n")
        raise ValueError("boom at step 3")

    monkeypatch.setattr("mcicl.synthetic.train.train", crash)
    assert main(["synthetic", "train", "--out", str(good), "--overwrite", "--quiet", *sets()]) == 2
    assert "boom at step 3" in capsys.readouterr().err
    assert snapshot(good) == before and sorted(os.listdir(tmp_path)) == parent_before  # no lock or aside left

    def interrupt(config, run, **kw):
        (run.path / "metrics.jsonl").write_text("{}\n")
        raise KeyboardInterrupt

    monkeypatch.setattr("mcicl.synthetic.train.train", interrupt)
    assert main(["synthetic", "train", "--out", str(good), "--overwrite", "--quiet", *sets()]) == 130
    assert snapshot(good) == before

    def bug(config, run, **kw):  # an unexpected exception (a bug) still propagates, after the folder is restored
        (run.path / "x").write_text("half")
        raise ZeroDivisionError

    monkeypatch.setattr("mcicl.synthetic.train.train", bug)
    with pytest.raises(ZeroDivisionError):
        main(["synthetic", "train", "--out", str(good), "--overwrite", "--quiet", *sets()])
    assert snapshot(good) == before and sorted(os.listdir(tmp_path)) == parent_before
    # A new folder (and the parents it needed) of a failed non-resumable command vanishes.
    monkeypatch.setattr("mcicl.synthetic.train.train", crash)
    assert main(["synthetic", "train", "--out", str(tmp_path / "new" / "deep"), "--quiet", *sets()]) == 2
    assert not (tmp_path / "new").exists()


def test_issue_example_extract_with_a_bad_layer_keeps_the_old_run(tmp_path, capsys):
    model = build_tiny_model("bert", tmp_path / "model", corpus=["cat dog horse"])
    words = tmp_path / "w.txt"
    words.write_text("cat\ndog\n")
    good = tmp_path / "good"
    assert main(["probe", "extract", "--words", str(words), "--model", str(model), "--out", str(good),
                 "--quiet"]) == 0
    before = snapshot(good)
    assert read_json(good / "run.json")["status"] == "complete"
    assert main(["probe", "extract", "--words", str(words), "--model", str(model), "--layers", "99", "--out",
                 str(good), "--overwrite", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--layers '99'" in err and "accepted" in err and "Traceback" not in err
    assert snapshot(good) == before
    # Control: a valid --overwrite does replace it.
    assert main(["probe", "extract", "--words", str(words), "--model", str(model), "--layers", "last", "--out",
                 str(good), "--overwrite", "--quiet"]) == 0
    assert snapshot(good) != before and read_json(good / "summary.json")["layers"] == ["2"]


def test_out_that_is_an_input_is_refused_and_left_alone(tmp_path, capsys):
    good = finished_run(tmp_path / "good", "synthetic train")
    before = snapshot(good)
    assert main(["report", str(good), "--out", str(good), "--overwrite", "--quiet"]) == 2
    assert "is the input" in capsys.readouterr().err
    assert snapshot(good) == before
    inner = good / "inside"
    for out in (good, inner, tmp_path):  # the input itself, a folder inside it, a folder holding it
        with pytest.raises(RunExistsError, match="(is|lies inside|holds) the input run="):
            RunFolder.create(out, "report", overwrite=True, inputs={"run": good}, atomic=True)
    assert snapshot(good) == before
    RunFolder.create(tmp_path / "elsewhere", "report", inputs={"run": good}).path.is_dir()  # control


def test_overwrite_refuses_files_the_user_added(tmp_path, capsys):
    good = finished_run(tmp_path / "good")
    (good / "notes.txt").write_text("my notes")
    (good / "extra").mkdir()
    before = snapshot(good)
    source = finished_run(tmp_path / "src", "synthetic train")
    assert main(["report", str(source), "--out", str(good), "--overwrite", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "extra/" in err and "notes.txt" in err and "did not write" in err
    assert snapshot(good) == before
    # Control: once the user's files are moved out, --overwrite replaces the run.
    (good / "notes.txt").unlink()
    (good / "extra").rmdir()
    assert main(["report", str(source), "--out", str(good), "--overwrite", "--quiet"]) == 0
    assert read_json(good / "run.json")["command"] == "report"


def in_child(target, *args) -> mp.Process:
    """Run ``target(*args)`` in a forked process (a second writer without a second interpreter's imports)."""
    proc = mp.get_context("fork").Process(target=target, args=args)
    proc.start()
    return proc


def hold(out: str, ready, go) -> None:
    with RunFolder.create(out, "probe extract", atomic=True) as run:
        run.write_summary({"writer": "holder"})
        ready.set()
        go.wait(120)
    os._exit(0)


def test_second_writer_is_refused_while_the_first_holds_the_folder(tmp_path, capsys):
    out, source = tmp_path / "out", finished_run(tmp_path / "src", "synthetic train")
    ctx = mp.get_context("fork")
    ready, go = ctx.Event(), ctx.Event()
    holder = in_child(hold, str(out), ready, go)
    try:
        assert ready.wait(60)
        assert run_state(out) == "running"
        for extra in ([], ["--overwrite"]):
            assert main(["report", str(source), "--out", str(out), "--quiet", *extra]) == 2
            err = capsys.readouterr().err
            assert f"being written by another mcicl process (pid {holder.pid})" in err
        with pytest.raises(RunStateError, match="unfinished run \\(status: running\\)"):
            require_run(out, "run")
    finally:
        go.set()
        holder.join(60)
    assert holder.exitcode == 0
    marker = read_json(out / "run.json")
    assert marker["status"] == "complete" and read_json(out / "summary.json") == {"writer": "holder"}
    assert marker["files"] == listing(out)
    assert not (tmp_path / ".out.mcicl-lock").exists()


def race(argv: list[str], start) -> None:
    start.wait(60)
    os._exit(main(argv))


def test_two_commands_racing_for_one_out_one_wins(tmp_path, capfd):
    source = finished_run(tmp_path / "src", "synthetic train")
    out = tmp_path / "out"
    ctx = mp.get_context("fork")
    start = ctx.Event()
    procs = [in_child(race, ["report", str(source), "--out", str(out), "--quiet"], start) for _ in range(2)]
    start.set()
    for p in procs:
        p.join(120)
    assert sorted(p.exitcode for p in procs) == [0, 2]
    err = capfd.readouterr().err
    assert "being written by another mcicl process" in err or "already exists" in err
    marker = read_json(out / "run.json")
    assert marker["status"] == "complete" and marker["command"] == "report"
    summary = read_json(out / "summary.json")
    assert Path(summary["html"]).is_file() and marker["files"] == listing(out)


def killed_overwrite(out: str) -> None:
    run = RunFolder.create(out, "probe extract", overwrite=True, atomic=True)
    (run.path / "half.txt").write_text("half")
    os._exit(9)  # killed mid-run: no commit, no abort


def test_a_killed_overwrite_is_never_read_as_finished_and_the_old_run_comes_back(tmp_path):
    good = finished_run(tmp_path / "good")
    before = snapshot(good)
    in_child(killed_overwrite, str(good)).join(60)
    assert (good / "half.txt").is_file() and run_state(good) == "unfinished"
    assert require_run(good, "run") == good  # the reader restores the old run first (issue 27), then reads it
    assert snapshot(good) == before and [p.name for p in tmp_path.iterdir()] == ["good"]
    with pytest.raises(RunExistsError, match="already exists"):
        RunFolder.create(good, "probe extract", atomic=True)
    assert snapshot(good) == before


def test_an_interrupted_training_run_is_kept_for_resume_but_not_read_as_finished(tmp_path, monkeypatch, capsys):
    out = tmp_path / "train"

    def interrupt(config, run, **kw):
        (run.path / "checkpoints").mkdir()
        (run.path / "checkpoints" / "step_5.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr("mcicl.synthetic.train.train", interrupt)
    assert main(["synthetic", "train", "--out", str(out), "--quiet", *sets()]) == 130
    assert read_json(out / "run.json")["status"] == "interrupted"
    capsys.readouterr()
    assert main(["report", str(out), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "unfinished run (status: interrupted)" in capsys.readouterr().err
    assert main(["synthetic", "train", "--out", str(out), "--quiet", *sets()]) == 2
    err = capsys.readouterr().err
    assert "holds an unfinished run" in err and "resume (--resume)" in err
    assert not (tmp_path / "r").exists()


def test_resume_accepts_the_original_command_and_refuses_a_changed_one(tmp_path, capsys):
    out = tmp_path / "t"
    base = ["synthetic", "train", "--out", str(out), "--quiet", *sets()]
    assert main([*base, "--seeds", "1", "--steps", "5"]) == 0
    assert main([*base, "--seeds", "1", "--steps", "10", "--resume"]) == 0  # the same options, repeated: fine
    assert read_json(out / "summary.json")["final"]["step"] == 10
    capsys.readouterr()
    assert main([*base, "--steps", "10", "--resume", "--seeds", "2"]) == 2
    assert "seeds=2 (run: 1)" in capsys.readouterr().err
    assert main(["synthetic", "train", "--resume", "--out", str(tmp_path / "missing"), "--quiet"]) == 2
    assert "run folder not found: --out=" in capsys.readouterr().err
    geometry = finished_run(tmp_path / "g", "probe geometry")
    assert main(["synthetic", "train", "--resume", "--out", str(geometry), "--quiet"]) == 2
    assert "is a `mcicl probe geometry` run; accepted: a finished run folder of `mcicl synthetic train`" \
        in capsys.readouterr().err


def test_wrong_kind_of_input_run_is_refused(tmp_path, capsys):
    extract = finished_run(tmp_path / "x", "probe extract")
    with pytest.raises(RunStateError, match="is a `mcicl probe extract` run; accepted: .*`mcicl probe geometry`"):
        require_run(extract, "--real", ["probe geometry"])
    assert require_run(finished_run(tmp_path / "g", "probe geometry"), "--real", ["probe geometry"]) is not None
    assert main(["compare", "--synthetic", str(extract), "--real", str(extract), "--out", str(tmp_path / "c")]) == 2
    assert "--synthetic=" in capsys.readouterr().err and not (tmp_path / "c").exists()


def test_summary_json_is_strict_json(tmp_path):
    run = RunFolder.create(tmp_path / "r", "t")
    run.write_summary({"nan": float("nan"), "inf": [math.inf, 1.0], "np": np.float32("nan"), "ok": np.float64(2)})

    def refuse(name):
        raise AssertionError(f"bare {name} in summary.json")

    data = json.loads((tmp_path / "r" / "summary.json").read_text(), parse_constant=refuse)
    assert data == {"nan": None, "inf": [None, 1.0], "np": None, "ok": 2.0}


def words_file(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("cat\ndog\n")
    return path


def test_config_errors_name_the_option(tmp_path, capsys):
    assert main(["synthetic", "train", "--seeds", "0", "--out", str(tmp_path / "a"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--seeds 0: accepted:" in err and not (tmp_path / "a").exists()
    assert main(["synthetic", "train", "--set", "lr=-1", "--out", str(tmp_path / "b"), "--quiet"]) == 2
    # A job's --set value names its source exactly (no longer "from --set or --config").
    err = capsys.readouterr().err
    assert "--set: lr=-1.0; accepted:" in err and not (tmp_path / "b").exists()
    assert main(["probe", "icl", "--ways", "100", "--out", str(tmp_path / "c"), "--quiet"]) == 2
    assert "--ways 100: accepted: an integer from 2 to" in capsys.readouterr().err
    # An option of another sub-command is not named: probe icl sets extraction.layers with --layer (no --layers).
    assert main(["probe", "icl", "--layer", "99", "--out", str(tmp_path / "d"), "--quiet"]) == 2
    assert "--layer '99': accepted: indices from 0 to 6" in capsys.readouterr().err
    assert main(["probe", "extract", "--layers", "99", "--out", str(tmp_path / "e"), "--quiet", "--words",
                 str(words_file(tmp_path))]) == 2
    assert "--layers '99': accepted: indices from 0 to 6" in capsys.readouterr().err


def test_busy_error_in_one_process(tmp_path):
    with RunFolder.create(tmp_path / "r", "t", atomic=True), pytest.raises(RunBusyError, match="still open"):
        RunFolder.create(tmp_path / "r", "t", overwrite=True, atomic=True)


def test_resolve_config_file_then_set_then_options(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("steps: 7\nseeds: 3\nlr: 0.25\n")
    args = Namespace(config=str(file), set=["seeds=5", "d=40"], steps=9)  # an option not typed is absent
    config = resolve(TRAIN_JOB, args)[0]
    # File < --set < a named option; an option not given (None) keeps the file's value.
    assert (config.steps, config.seeds, config.d, config.lr) == (9, 5, 40, 0.25)
    args.seeds = 2
    assert resolve(TRAIN_JOB, args)[0].seeds == 2
    default = resolve(TRAIN_JOB, Namespace(config=None, set=None))[0]
    assert default.steps == SyntheticConfig().steps
