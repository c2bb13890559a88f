"""``--overwrite`` survives signals: SIGTERM while the new run is being written puts the old run back before the
process exits; after SIGKILL (no handler can run) the next command that reads the folder restores it.

Each test runs a real ``mcicl synthetic train`` in a subprocess and signals it once its old run has been moved
aside (the hidden ``.NAME.mcicl-previous-*`` sibling exists), that is, mid-overwrite.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mcicl.app.cli import Terminated, main, signals_as_interrupts
from tests.test_runs import sets, snapshot

pytestmark = pytest.mark.slow


def _train(out: Path, steps: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mcicl", "synthetic", "train", "--out", str(out), "--steps", str(steps),
            "--seeds", "1", "--quiet", *sets({"eval_every": 50, "ood_every": 1000, "checkpoint_every": 1000}), *extra]


def _signal_mid_overwrite(out: Path, signum: int) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(_train(out, 200_000, "--overwrite"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while not list(out.parent.glob(f".{out.name}.mcicl-previous-*")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the overwrite never moved the old run aside"
        time.sleep(0.05)
    time.sleep(1.0)  # well inside the new run: its folder is being written
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.fixture
def good_run(tmp_path: Path) -> tuple[Path, dict]:
    out = tmp_path / "good"
    done = subprocess.run(_train(out, 5), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return out, snapshot(out)


def test_sigterm_during_overwrite_restores_the_old_run(good_run):
    out, before = good_run
    result = _signal_mid_overwrite(out, signal.SIGTERM)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert "terminated by signal" in result.stderr and "Traceback" not in result.stderr
    assert snapshot(out) == before
    assert not list(out.parent.glob(f".{out.name}.mcicl-*"))  # no aside copy, no lock left


def test_after_sigkill_the_next_reader_restores_the_old_run(good_run, tmp_path: Path, capsys):
    out, before = good_run
    result = _signal_mid_overwrite(out, signal.SIGKILL)
    assert result.returncode == -signal.SIGKILL
    assert list(out.parent.glob(f".{out.name}.mcicl-previous-*"))  # what the killed process left
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    assert "restored" in capsys.readouterr().err
    restored = snapshot(out)
    assert restored == before
    assert not list(out.parent.glob(f".{out.name}.mcicl-previous-*"))


def test_sigterm_inside_a_finalizer_is_raised_after_it():
    # A signal that lands while the garbage collector runs a __del__ would raise there, where Python prints and
    # swallows it, and the process would go on; the handler sends it again and it is raised once __del__ is done.
    class Finalized:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.02)  # the handler runs here, inside __del__

    with pytest.raises(Terminated), signals_as_interrupts():
        Finalized()  # dropped at once: its __del__ runs now
        time.sleep(2.0)
