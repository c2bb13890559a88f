"""The default synthetic config, 3 seeds vectorized: accuracy, attention, exponential decay, OOD scenarios."""

from __future__ import annotations

import math

import pytest
from mcicl.synthetic.config import SyntheticConfig
from mcicl.synthetic.train import train

from mcicl.core.runs import RunFolder, read_json

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """One training run of the default config with 3 seeds (shared by the tests below)."""

    config = SyntheticConfig(seeds=3)
    run = RunFolder.create(tmp_path_factory.mktemp("syn") / "default", "synthetic train")
    return config, train(config, run), run.path


def test_default_config_learns_in_context(default_run) -> None:
    config, summary, _ = default_run
    assert summary["final"]["test_zero_one"] <= config.label_noise + 0.02
    assert all(e <= 0.02 for e in summary["final_per_seed"]["test_zero_one"])
    assert summary["final"]["correct_attention"] > 0.9
    assert all(a > 0.9 for a in summary["final_per_seed"]["correct_attention"])


def test_error_decays_exponentially_not_polynomially(default_run) -> None:
    # Polynomial decay err ~ t^-p takes 10x longer for each successive decade; exponential decay takes
    # equal times. On >= 10,000 test prompts the two decades must take within a factor of 2 of each other.
    config, summary, _ = default_run
    assert config.n_test >= 10_000
    conv = summary["convergence"]
    assert conv["steps_10_to_1pct"] is not None and conv["steps_1_to_01pct"] is not None
    assert conv["decade_ratio"] <= 2.0, conv
    # The fit is reported (rate > 0 on a window of at least 3 evaluations).
    assert conv["rate"] > 0 and math.isfinite(conv["r2"])
    assert all(w[2] >= 3 for w in conv["per_seed"]["window"])


@pytest.mark.parametrize("scenario", ["length_short", "length_long", "skewed_concepts", "switched_features",
                                      "flipped_labels"])
def test_ood_scenarios_the_model_generalizes_to(default_run, scenario: str) -> None:
    _, summary, _ = default_run
    assert summary["ood"][scenario]["test_zero_one"] <= 0.05


def test_unseen_concept_fails_as_expected(default_run) -> None:
    # Fresh word and label directions: the learned W_K^T W_Q and readout never saw them (near chance).
    _, summary, _ = default_run
    assert summary["ood"]["unseen_concept"]["test_zero_one"] >= 0.3


def test_train_run_folder_contents(default_run) -> None:
    config, summary, path = default_run
    saved = read_json(path / "summary.json")
    for key in ("train_zero_one", "test_zero_one", "correct_attention"):
        assert key in saved["final"]
    assert {"rate", "r2", "rate_ci95"} <= set(saved["convergence"])
    assert set(saved["ood"]) == set(config.scenarios)
    for name in ("dynamics", "ood", "convergence", "decomposition"):
        assert (path / "figures" / f"{name}.png").is_file()
    assert (path / "checkpoints" / f"step_{config.steps:07d}.safetensors").is_file()
    assert summary["seconds"] < 120  # target: well under 60 s on 2 idle cores


def test_label_noise_reaches_the_bayes_error(tmp_path) -> None:

    p = 0.1
    config = SyntheticConfig(label_noise=p, seeds=1, n_test=4000, scenarios=[], eval_every=25, ood_every=25)
    summary = train(config, RunFolder.create(tmp_path / "noisy", "t"), figures=False)
    assert p - 0.02 <= summary["final"]["test_zero_one"] <= p + 0.02
