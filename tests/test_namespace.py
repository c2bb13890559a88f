"""One import name: mcicl works next to a user's own analysis.py / probing.py / synthetic.py, leaves the user's
matplotlib alone, and its wheel installs nothing but ``mcicl``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO, mcicl_cli

SHADOWS = ("analysis", "probing", "synthetic")


def _scratch(tmp_path: Path) -> Path:
    """A research folder whose own modules carry mcicl's old top-level names."""
    folder = tmp_path / "research"
    folder.mkdir()
    for name in SHADOWS:
        (folder / f"{name}.py").write_text(f"WHO = 'the user own {name}.py'\n")
    return folder


def _run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env.update({"PYTHONPATH": str(cwd), "HF_HUB_OFFLINE": "1"})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=300)


def test_cli_and_import_work_beside_the_users_own_modules(tmp_path):
    folder = _scratch(tmp_path)
    env_cli = mcicl_cli("--help", cwd=folder, env={"PYTHONPATH": str(folder)})
    assert env_cli.returncode == 0, env_cli.stderr
    assert "synthetic" in env_cli.stdout and "probe" in env_cli.stdout
    proc = _run_python("""
        import analysis, probing, synthetic
        import mcicl
        from mcicl.synthetic.config import SyntheticConfig
        from mcicl.probing.models import resolve_model
        assert analysis.WHO.startswith("the user own"), analysis.WHO
        assert synthetic.WHO.startswith("the user own") and probing.WHO.startswith("the user own")
        assert SyntheticConfig().K >= 2
        assert callable(mcicl.geometry) and callable(mcicl.train_synthetic)
        print(mcicl.__version__)
    """, folder)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == _version()


def _version() -> str:
    text = (REPO / "mcicl" / "__init__.py").read_text()
    return text.split('__version__ = "', 1)[1].split('"', 1)[0]


def test_python_dash_m_and_console_script_report_the_one_version(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mcicl", "--version"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"mcicl {_version()}"
    assert mcicl_cli("--version", cwd=tmp_path).stdout.strip() == f"mcicl {_version()}"


def test_matplotlib_backend_and_rcparams_untouched_by_import_and_training(tmp_path):
    """Importing mcicl and running a small synthetic training with figures leaves the user's matplotlib as it was."""
    out = tmp_path / "run"
    proc = _run_python(f"""
        import matplotlib
        matplotlib.use("svg")   # the user's choice, not mcicl's default
        matplotlib.rcParams["axes.grid"] = False
        matplotlib.rcParams["font.size"] = 13.0
        before_backend = matplotlib.get_backend()
        before = dict(matplotlib.rcParams)
        import mcicl
        from mcicl.app.cli import main
        rc = main(["synthetic", "train", "--seeds", "1", "--steps", "30", "--quiet", "--out", {str(out)!r},
                   "--set", "n_test=200", "--set", "n_test_ood=100", "--set", "eval_every=10",
                   "--set", "ood_every=30"])
        assert rc == 0, rc
        after = dict(matplotlib.rcParams)
        changed = {{k: (before[k], after[k]) for k in before if str(before[k]) != str(after[k])}}
        assert matplotlib.get_backend() == before_backend, (before_backend, matplotlib.get_backend())
        assert not changed, changed
        import matplotlib.pyplot as plt
        assert plt.get_fignums() == [], plt.get_fignums()  # no figure left open in pyplot's registry
        print("ok")
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")
    assert (out / "figures" / "dynamics.png").is_file()


@pytest.mark.slow
def test_wheel_holds_only_the_mcicl_package(tmp_path):
    # Built from a copy of the sources: an in-tree build would leave build/ and *.egg-info in the checkout.
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv*", "runs", "build", "*.egg-info",
                                                                "__pycache__", ".pytest_cache", ".ruff_cache"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path),
                           str(source)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheel = next(tmp_path.glob("mcicl-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"mcicl"}, top
    for expected in ("mcicl/synthetic/model.py", "mcicl/probing/extract.py", "mcicl/app/cli.py",
                     "mcicl/core/runs.py", "mcicl/probing/datasets/data/concepts.json", "mcicl/__main__.py"):
        assert expected in names, expected
