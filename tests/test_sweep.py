"""Sweeps: cells as one batched model (same numbers as training each alone), grouping, resume, devices."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from mcicl.analysis.ood_map import MapPoint, map_panels, ood_grid, ood_map_figure
from mcicl.core.configuration import from_dict
from mcicl.core.io import read_jsonl
from mcicl.core.plotting import save_figure
from mcicl.core.runs import RunFolder
from mcicl.synthetic.cells import CellBatch, group_cells, train_cells
from mcicl.synthetic.config import SyntheticConfig
from mcicl.synthetic.sweep import run_sweep
from mcicl.synthetic.train import train, training_device
from tests.conftest import mcicl_cli

TINY = dict(K=2, K_irr=1, d=16, L=4, n_train=48, batch_size=16, n_test=120, n_test_ood=40, steps=20, eval_every=5,
            ood_every=10, checkpoint_every=1000, scenarios=["noise_x2", "flipped_labels"], n_features=5, seeds=2)
GRID = {"within_cosine": [0.2, 0.8], "sigma": [0.02, 0.2]}


def tiny(**kw) -> SyntheticConfig:
    return from_dict(SyntheticConfig, {**TINY, **kw})


def canonical(rows: list[dict]) -> str:
    """Rows as JSON text (what metrics.jsonl holds), so equality is exact to the last digit written."""
    return json.dumps(json.loads(json.dumps(rows)), sort_keys=True)


def leaves(rows: list[dict], path: str = "") -> dict[str, float]:
    """Every number of the rows by its path, e.g. 'r3/ood/noise_x2/logistic_loss[0]'."""
    out: dict[str, float] = {}
    if isinstance(rows, dict):
        for key, value in rows.items():
            out.update(leaves(value, f"{path}/{key}"))
    elif isinstance(rows, list):
        for i, value in enumerate(rows):
            out.update(leaves(value, f"{path}[{i}]"))
    else:
        out[path] = rows
    return out


def assert_rows_equal(batched: list[dict], single: list[dict], dtype: str) -> None:
    """float64: identical to the last digit written. float32: the stacked evaluation sums in another order, so
    a loss may differ in its last bit (seen: 6e-8 relative); 1e-6 relative still fails any wrong lr, slice or
    minibatch, which move these numbers by 1e-3 or more."""
    if dtype == "float64":
        assert canonical(batched) == canonical(single)
        return
    a, b = leaves(batched), leaves(single)
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], float) and isinstance(b[key], float):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), key
        else:
            assert a[key] == b[key], key


def alone(config: SyntheticConfig, tmp_path, name: str) -> list[dict]:
    """The metrics rows of ``config`` trained on its own by synthetic.train."""
    run = RunFolder.create(tmp_path / name, "synthetic train")
    train(config, run, figures=False)
    return read_jsonl(run.path / "metrics.jsonl")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batched_cells_equal_each_cell_trained_alone(tmp_path, dtype) -> None:
    """Per-instance geometry, noise, polysemy, label noise, init, lr, seed and seed count are all honoured."""
    cells = [tiny(dtype=dtype, within_cosine=0.2, lr=1.0, seed=3),
             tiny(dtype=dtype, within_cosine=0.8, sigma=0.1, lr=3.0, seeds=1, seed=5, polysemy_rate=0.4,
                  label_noise=0.1, sigma0=0.1, cross_overlap=0.2)]
    results = train_cells(cells)
    for i, (config, result) in enumerate(zip(cells, results, strict=True)):
        assert len(result.rows) == TINY["steps"] // TINY["eval_every"] + 1
        assert_rows_equal(result.rows, alone(config, tmp_path, f"alone{i}"), dtype)
    # Control: the second cell with the first cell's learning rate trains to other numbers, so the equality
    # above needed that cell's own lr (a shared scalar lr would fail it).
    wrong_lr = alone(replace(cells[1], lr=cells[0].lr), tmp_path, "wrong_lr")
    assert canonical(wrong_lr) != canonical(results[1].rows)
    assert wrong_lr[-1]["test"]["logistic_loss"] != results[1].rows[-1]["test"]["logistic_loss"]


def test_cells_are_grouped_by_shape() -> None:
    configs = [tiny(within_cosine=w) for w in (0.1, 0.5, 0.9)] + [tiny(n_test=60), tiny(L=6)]
    assert group_cells(configs) == [[0, 1, 2], [3], [4]]
    assert group_cells(configs, max_cells=2) == [[0, 1], [2], [3], [4]]
    with pytest.raises(ValueError, match="change tensor shapes"):
        CellBatch([configs[0], configs[3]])
    with pytest.raises(ValueError, match="max_cells 0"):
        group_cells(configs, max_cells=0)


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


class Interrupt(RuntimeError):
    pass


def interrupted_then_resumed(tmp_path, name: str, first: dict, second: dict) -> tuple[list[int], list[int], float]:
    """Run a 4-cell sweep that raises after its first finished cell, then resume it; (cells trained by each
    attempt, mtime of the first finished cell's summary before the resume)."""
    base = tiny()
    run = RunFolder.create(tmp_path / name, "synthetic sweep")
    trained_first: list[int] = []

    def stop(i: int, row: dict) -> None:
        trained_first.append(i)
        raise Interrupt(f"interrupted after cell {i}")

    with pytest.raises(Interrupt):
        run_sweep(base, GRID, run, on_cell=stop, cells_per_block=2, **first)
    assert not (run.path / "sweep.csv").exists()
    # Only the cell reported before the interruption is on disk (its block partner was never written).
    done = [i for i in range(4) if (run.path / f"points/{i:03d}/summary.json").is_file()]
    assert done == trained_first
    mtime = (run.path / f"points/{done[0]:03d}/summary.json").stat().st_mtime_ns
    trained_second: list[int] = []
    run_sweep(base, GRID, RunFolder.create(run.path, "synthetic sweep", resume=True), resume=True,
              on_cell=lambda i, row: trained_second.append(i), cells_per_block=2, **second)
    assert (run.path / f"points/{done[0]:03d}/summary.json").stat().st_mtime_ns == mtime
    return trained_first, trained_second, mtime


def test_interrupted_sweep_resumes_without_retraining(tmp_path) -> None:
    reference = run_sweep(tiny(), GRID, RunFolder.create(tmp_path / "whole", "synthetic sweep"), cells_per_block=4)
    wanted = {"status", "steps_to_1pct", "steps_to_1pct_low", "steps_to_1pct_high", "censored_seeds",
              "correct_attention", "same_concept_attention"}
    assert len(reference) == 4 and wanted <= set(reference[0])
    first, second, _ = interrupted_then_resumed(tmp_path, "cut", {}, {})
    assert sorted(first + second) == [0, 1, 2, 3] and not set(first) & set(second)
    # Same numbers as the uninterrupted sweep (which also batched 4 cells at once instead of 2).
    assert read_csv(tmp_path / "cut" / "sweep.csv") == read_csv(tmp_path / "whole" / "sweep.csv")
    # Control: the four cells are not all alike, so equal tables are not trivially equal.
    assert len({r["test_zero_one"] + r["correct_attention"] for r in reference}) == 4


def test_resume_retrains_a_cell_whose_config_changed(tmp_path) -> None:
    run = RunFolder.create(tmp_path / "s", "synthetic sweep")
    run_sweep(tiny(), {"within_cosine": [0.2, 0.8]}, run, cells_per_block=1)
    trained: list[int] = []
    run_sweep(tiny(), {"within_cosine": [0.2, 0.7]}, RunFolder.create(run.path, "s", resume=True), resume=True,
              cells_per_block=1, on_cell=lambda i, row: trained.append(i))
    assert trained == [1]


def test_cuda_device_is_refused_clearly_without_a_gpu(tmp_path) -> None:
    with pytest.raises(ValueError, match="accepted: 'cpu', 'cuda' or 'cuda:N'"):
        training_device("gpu0")
    assert training_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        assert training_device("cuda").type == "cuda"
        return
    with pytest.raises(ValueError, match="no CUDA GPU is available"):
        training_device("cuda")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        run_sweep(tiny(), GRID, RunFolder.create(tmp_path / "gpu", "synthetic sweep"), device="cuda")
    for command in (["sweep", "--grid", "within_cosine=0.2,0.8"], ["train"]):
        out = tmp_path / f"gpu_cli_{command[0]}"
        cli = mcicl_cli("synthetic", *command, "--device", "cuda", "--steps", "5", "--out", str(out), "--quiet")
        assert cli.returncode != 0 and "no CUDA GPU is available" in cli.stderr
        assert "Traceback" not in cli.stderr and not out.exists()
    with pytest.raises(ValueError, match="device='tpu'.*accepted: 'cpu', 'cuda' or 'cuda:N'"):
        train(tiny(), device="tpu")


def test_train_on_an_explicit_cpu_device_gives_the_default_numbers() -> None:
    default, explicit = train(tiny()), train(tiny(), device="cpu")
    assert explicit.summary["device"] == "cpu" and explicit.model.W_Q.device.type == "cpu"
    assert canonical(default.metrics) == canonical(explicit.metrics)
    if torch.cuda.is_available():  # on a GPU machine: the same run on CUDA agrees to float rounding
        cuda = train(tiny(dtype="float64"), device="cuda")
        assert cuda.model.W_Q.device.type == "cuda"
        assert_rows_equal(cuda.metrics, train(tiny(dtype="float64")).metrics, "float32")


def test_ray_launcher_gives_the_local_numbers_and_resumes(tmp_path) -> None:
    """A local Ray instance (2 CPUs, no dashboard): interrupted under Ray, resumed under Ray, same table."""
    ray = pytest.importorskip("ray")
    run_sweep(tiny(), GRID, RunFolder.create(tmp_path / "local", "synthetic sweep"))
    ray_opts = {"launcher": "ray", "num_cpus": 2}
    first, second, _ = interrupted_then_resumed(tmp_path, "ray", ray_opts, ray_opts)
    assert sorted(first + second) == [0, 1, 2, 3]
    assert read_csv(tmp_path / "ray" / "sweep.csv") == read_csv(tmp_path / "local" / "sweep.csv")
    assert not ray.is_initialized()  # the launcher shut down the instance it started


def test_map_shows_learning_speed_and_leaves_never_reached_cells_blank(tmp_path) -> None:
    rows = [{"within_cosine": str(w), "cross_overlap": str(c), "test_zero_one": str(w * c),
             "ood.noise_x5.test_zero_one": str(w), "correct_attention": str(1 - w / 2),
             "convergence_rate": "" if w > 0.5 else str(0.1 - w / 10),
             "steps_to_1pct": "" if w > 0.5 else str(100 + 100 * w + c)}
            for w in (0.1, 0.5, 0.9) for c in (0.0, 0.2, 0.4)]
    assert [p.column for p in map_panels(rows)] == ["test_zero_one", "ood.noise_x5.test_zero_one", "steps_to_1pct",
                                                    "convergence_rate", "correct_attention"]
    speed = ood_grid(rows, "steps_to_1pct")
    # A cell that never reached 1% error is missing (grey), not painted as 0 steps (the fastest colour).
    assert np.isnan(speed.values[:, 2]).all() and speed.values[1, 0] == pytest.approx(100 + 10 + 0.2)
    png = save_figure(ood_map_figure(rows, [MapPoint("space", 0.4, 0.1, (0.05, 0.1), (0.02, 0.02))]), tmp_path,
                      "ood_map")
    assert png.is_file()


def test_sweep_job_declares_the_launchers_and_block_size_of_the_code() -> None:
    from mcicl.synthetic import config, launchers, sweep

    assert config.LAUNCHERS == launchers.LAUNCHERS and config.CELLS_PER_BLOCK == sweep.CELLS_PER_BLOCK
    options = {o.dest: o for o in config.SWEEP_JOB.options}
    assert options["launcher"].kwargs["choices"] == list(launchers.LAUNCHERS)
    assert options["cells_per_block"].kwargs["default"] == sweep.CELLS_PER_BLOCK


def test_grid_parsing_refuses_a_field_given_twice() -> None:
    from mcicl.synthetic.sweep import parse_grid

    assert parse_grid("a=1,2; b=x") == {"a": ["1", "2"], "b": ["x"]}
    with pytest.raises(ValueError, match="'a' is given twice"):
        parse_grid("a=1,2;b=3;a=4")
    for bad in ("a", "a=", ";"):
        with pytest.raises(ValueError, match="accepted"):
            parse_grid(bad)


def test_sweep_cli_refusals_before_any_folder(tmp_path, capsys) -> None:
    from mcicl.app.cli import main

    out = tmp_path / "s"
    assert main(["synthetic", "sweep", "--out", str(out), "--quiet"]) == 2
    assert "--grid is required (unless --resume)" in capsys.readouterr().err and not out.exists()
    assert main(["synthetic", "sweep", "--resume", "--quiet"]) == 2
    assert "--resume needs --out" in capsys.readouterr().err
    assert main(["synthetic", "sweep", "--resume", "--out", str(out), "--grid", "d=8", "--steps", "3",
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--grid, --steps cannot change it" in err and not out.exists()
    train_run = tmp_path / "t"  # a folder whose config.yaml is not a sweep's
    train_run.mkdir()
    (train_run / "config.yaml").write_text("steps: 5\n")
    assert main(["synthetic", "sweep", "--resume", "--out", str(train_run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"--out {train_run} is not a sweep folder" in err and "accepted: the --out folder of an earlier" in err
    assert main(["synthetic", "sweep", "--resume", "--out", str(tmp_path / "none"), "--quiet"]) == 2
    assert "holds no config.yaml" in capsys.readouterr().err
