"""The console entry point, run folders and config validation."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

import pytest
import torch
import yaml

from mcicl import __version__
from mcicl.core.configuration import ConfigError, from_dict, load_config, require
from mcicl.core.runs import RunExistsError, RunFolder
from mcicl.core.seeding import seed_everything
from tests.conftest import mcicl_cli


def test_version_and_help_through_console_script():
    res = mcicl_cli("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"mcicl {__version__}"
    res = mcicl_cli("--help")
    assert res.returncode == 0 and "demo" in res.stdout
    res = mcicl_cli("demo", "--help")
    for option in ("--model", "--out", "--overwrite", "--seed", "--quiet"):
        assert option in res.stdout


def test_unknown_command_fails_with_usage():
    res = mcicl_cli("no-such-command")
    assert res.returncode == 2 and "invalid choice" in res.stderr


@dataclass
class _Cfg:
    d: int = 32
    sigma: float = 0.05
    readout_init: Literal["aligned", "random"] = "aligned"
    shots: tuple[int, ...] = (0, 1, 2)
    tags: list[str] = field(default_factory=list)

    def __post_init__(self):
        require(self.d >= 1, "d", self.d, "an integer >= 1")
        require(self.sigma >= 0, "sigma", self.sigma, "a number >= 0")


def test_config_from_dict_coerces_and_validates(tmp_path):
    cfg = from_dict(_Cfg, {"d": "64", "sigma": 1, "shots": "1,2,4", "readout_init": "random"})
    assert (cfg.d, cfg.sigma, cfg.shots, cfg.readout_init) == (64, 1.0, (1, 2, 4), "random")
    with pytest.raises(ConfigError, match=r"sigma=-1\.0.*>= 0"):
        from_dict(_Cfg, {"sigma": -1.0})
    with pytest.raises(ConfigError, match=r"readout_init='zero'.*'aligned', 'random'"):
        from_dict(_Cfg, {"readout_init": "zero"})
    with pytest.raises(ConfigError, match=r"dd=.*one of the fields d, sigma"):
        from_dict(_Cfg, {"dd": 3})
    with pytest.raises(ConfigError, match=r"d='many'.*an integer"):
        from_dict(_Cfg, {"d": "many"})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"d": 8, "tags": ["x"]}))
    cfg = load_config(_Cfg, path, {"sigma": 0.5, "d": None})
    assert (cfg.d, cfg.sigma, cfg.tags) == (8, 0.5, ["x"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(_Cfg, bad)


def test_run_folder_refuses_silent_overwrite(tmp_path):
    run = RunFolder.create(tmp_path / "r", "test")
    run.save_config(_Cfg())
    run.write_summary({"x": 1})
    assert yaml.safe_load((run.path / "config.yaml").read_text())["d"] == 32
    with pytest.raises(RunExistsError, match=r"overwrite \(--overwrite\)"):
        RunFolder.create(tmp_path / "r", "test")
    assert json.loads((run.path / "summary.json").read_text()) == {"x": 1}
    again = RunFolder.create(tmp_path / "r", "test", overwrite=True)
    assert not (again.path / "summary.json").exists()
    # A folder mcicl did not write is never deleted, even with --overwrite.
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(RunExistsError, match="not an mcicl run folder"):
        RunFolder.create(foreign, "test", overwrite=True)
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_seed_everything_is_reproducible():

    a = (seed_everything(7).normal(size=3), torch.randn(3))
    b = (seed_everything(7).normal(size=3), torch.randn(3))
    assert (a[0] == b[0]).all() and torch.equal(a[1], b[1])
    assert not (seed_everything(8).normal(size=3) == a[0]).all()


def test_demo_refuses_existing_out(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    res = mcicl_cli("demo", "--small", "--out", str(out))
    assert res.returncode == 2 and "already exists" in res.stderr
    assert (out / "notes.txt").read_text() == "keep me"


def test_failed_command_leaves_no_empty_run_folder(tmp_path):
    out = tmp_path / "icl"
    res = mcicl_cli("probe", "icl", "--model", "./no/such/model", "--out", str(out))
    assert res.returncode == 2 and "does not exist" in res.stderr
    assert not out.exists()
