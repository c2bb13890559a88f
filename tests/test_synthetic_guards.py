"""Guards of `synthetic train`: a loss that explodes without overflowing is a divergence (the pure ``diverged``
the sweeps share), and a truncated checkpoint on --resume is one clear line; nothing earlier is lost."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from mcicl.app.cli import main
from mcicl.core.io import read_json
from mcicl.synthetic.train import diverged

TINY = ["--seeds", "1", "--set", "n_test=100", "--set", "n_train=64", "--set", "scenarios=noise_x2",
        "--set", "K=2", "--set", "K_irr=1", "--set", "d=20", "--set", "n_features=10", "--quiet"]

CASES = [  # (losses, words of the reason or None)
    ([0.69, 0.5, 0.2, 0.01], None),  # training
    ([0.69, 3.0, 0.4], None),  # a spike of a few times the start is not a divergence
    ([0.69, 2.1e8, 0.5], ["2.1e+08", "step 1", "100x"]),  # lr=1e12: huge but finite, and back down later
    ([0.69, 0.5, math.nan], ["nan", "step 2"]),
    ([0.69, math.inf], ["inf", "step 1"]),
    ([1e-4, 0.05, 0.3], None),  # resumed near 0: rises are measured against log 2, not the tiny start
    ([1e-4, 80.0], ["80", "step 1"]),
    ([[0.69, 0.69], [0.5, 3.1e7]], ["instance 1", "3.1e+07"]),  # (T, S): one instance of a batch
    ([], None),
]


@pytest.mark.parametrize(("losses", "words"), CASES)
def test_diverged_is_a_pure_rule_on_the_loss_history(losses, words) -> None:
    why = diverged(np.asarray(losses))
    if words is None:
        assert why is None, why
    else:
        assert why is not None
        for w in words:
            assert w in why, (w, why)
    assert diverged(losses) == why  # a list works as well as an array


def test_diverged_names_the_step_from_its_offset() -> None:
    assert "step 101" in diverged([0.5, 1e9], first_step=100)


def test_exploding_loss_stops_train_with_one_line(tmp_path: Path, capsys) -> None:
    out = tmp_path / "div"
    assert main(["synthetic", "train", "--steps", "10", "--set", "lr=1e12", "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "training diverged" in err and "more than 100x" in err and "lower lr (now 1e+12" in err
    assert not (out / "summary.json").exists()
    # An earlier run in the folder survives a diverging --overwrite byte for byte.
    good = tmp_path / "good"
    assert main(["synthetic", "train", "--steps", "4", "--out", str(good), *TINY]) == 0
    before = {p: p.read_bytes() for p in good.rglob("*") if p.is_file()}
    assert main(["synthetic", "train", "--steps", "10", "--set", "lr=1e12", "--out", str(good), "--overwrite",
                 *TINY]) == 2
    assert {p: p.read_bytes() for p in good.rglob("*") if p.is_file()} == before


def test_truncated_checkpoint_on_resume_is_one_line(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["synthetic", "train", "--steps", "4", "--set", "checkpoint_every=2", "--out", str(out), *TINY]) == 0
    ckpt = out / "checkpoints" / "step_0000004.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    capsys.readouterr()
    assert main(["synthetic", "train", "--resume", "--steps", "6", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "step_0000004.safetensors" in err and "truncated or corrupt" in err
    assert read_json(out / "run.json")["status"] == "failed"
    assert (out / "checkpoints" / "step_0000002.safetensors").is_file()  # the earlier checkpoint is kept
