"""The default synthetic config, 5 seeds vectorized: accuracy, attention, at-least-exponential decay, OOD
scenarios beside the baselines, strict summary JSON, divergence and the library API."""

from __future__ import annotations

import json
import time

import matplotlib
import pytest
from matplotlib.figure import Figure

from mcicl.core.io import read_json
from mcicl.core.plotting import subplots
from mcicl.core.runs import RunFolder
from mcicl.synthetic.config import SyntheticConfig
from mcicl.synthetic.plots import plot_convergence, plot_dynamics, plot_ood_grid, plot_ood_overview
from mcicl.synthetic.train import TrainingDiverged, train
from tests.conftest import mcicl_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """One training run of the default config with 5 seeds (shared by the tests below)."""

    config = SyntheticConfig(seeds=5)
    run = RunFolder.create(tmp_path_factory.mktemp("syn") / "default", "synthetic train")
    start = time.process_time()
    summary = train(config, run).summary
    summary["cpu_seconds"] = time.process_time() - start  # CPU time: not inflated by other jobs on the machine
    return config, summary, run.path


def test_default_config_learns_in_context(default_run) -> None:
    config, summary, _ = default_run
    assert summary["final"]["test_zero_one"] <= config.label_noise + 0.02
    assert all(e <= 0.02 for e in summary["final_per_seed"]["test_zero_one"])
    assert summary["final"]["correct_attention"] > 0.9
    assert all(a > 0.9 for a in summary["final_per_seed"]["correct_attention"])


def test_error_decays_at_least_exponentially(default_run) -> None:
    # Binomial tail fits per seed: the rate's 95% interval across the seeds excludes 0, and the exponential beats
    # the power law (lower AIC) in every seed. Counted over seeds, so it holds for any seed count >= 2.
    config, summary, _ = default_run
    conv = summary["convergence"]
    assert conv["seeds_fitted"] == config.seeds
    assert conv["rate_ci95"][0] > 0, conv
    assert conv["exponential_beats_power_law"] == config.seeds, conv["per_seed"]
    assert all(w[2] >= 4 for w in conv["per_seed"]["window"])
    # Faster than a single exponential, as measured: the curvature's interval lies below 0.
    assert conv["curvature_ci95"][1] < 0, conv


@pytest.mark.parametrize("scenario", ["length_short", "length_long", "skewed_concepts", "switched_cooccurrence"])
def test_ood_scenarios_that_a_context_blind_model_also_solves(default_run, scenario: str) -> None:
    # The transformer generalizes, but so does the query-only baseline: these shifts are no test of ICL.
    _, summary, _ = default_run
    assert summary["ood"][scenario]["test_zero_one"] <= 0.05
    assert max(summary["baselines"]["ood"][scenario]["query_only"]) <= 0.15


def test_flipped_labels_is_in_context_learning(default_run) -> None:
    # The claim beside its control: the transformer follows the flipped demonstrations, the context-blind
    # baseline trained in-distribution is wrong on every prompt.
    _, summary, _ = default_run
    assert all(e <= 0.05 for e in summary["ood"]["flipped_labels"]["per_seed_zero_one"])
    assert min(summary["baselines"]["ood"]["flipped_labels"]["query_only"]) >= 0.95
    assert max(summary["baselines"]["test"]["query_only"]) <= 0.01  # in-distribution it is perfect


def test_switched_features_separates_the_rules(default_run) -> None:
    # Fresh semantic directions: the context-blind model is at chance, comparing query and demonstrations
    # (nearest demonstration) still works, and the trained transformer, whose W_K^T W_Q only knows the trained
    # b_k, is near chance as well (measured: 0.50).
    _, summary, _ = default_run
    base = summary["baselines"]["ood"]["switched_features"]
    assert all(0.4 <= e <= 0.6 for e in base["query_only"])
    assert max(base["nearest_demonstration"]) <= 0.01 and max(base["oracle"]) <= 0.01
    assert summary["ood"]["switched_features"]["test_zero_one"] >= 0.4


def test_unseen_concept_fails_as_expected(default_run) -> None:
    # Fresh word and label directions: the learned W_K^T W_Q and readout never saw them (near chance).
    _, summary, _ = default_run
    assert summary["ood"]["unseen_concept"]["test_zero_one"] >= 0.3


def test_train_run_folder_contents(default_run) -> None:
    config, summary, path = default_run
    saved = read_json(path / "summary.json")
    for key in ("train_zero_one", "test_zero_one", "correct_attention"):
        assert key in saved["final"]
    assert {"rate", "rate_ci95", "curvature_ci95", "exponential_beats_power_law"} <= set(saved["convergence"])
    assert saved["readout_init"] == "aligned"
    json.loads((path / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert set(saved["ood"]) == set(config.scenarios)
    for name in ("dynamics", "ood", "ood_overview", "convergence", "decomposition"):
        assert (path / "figures" / f"{name}.png").is_file()
    assert (path / "checkpoints" / f"step_{config.steps:07d}.safetensors").is_file()
    assert summary["cpu_seconds"] < 120  # target: well under 60 s on 2 idle cores


def test_label_noise_reaches_the_bayes_error(tmp_path) -> None:

    p = 0.1
    config = SyntheticConfig(label_noise=p, seeds=1, n_test=4000, scenarios=[], eval_every=25, ood_every=25)
    summary = train(config, RunFolder.create(tmp_path / "noisy", "t"), figures=False).summary
    assert p - 0.02 <= summary["final"]["test_zero_one"] <= p + 0.02


def test_a_diverging_run_reports_no_error_rate(tmp_path) -> None:
    res = mcicl_cli("synthetic", "train", "--steps", "10", "--seeds", "1", "--set", "lr=1e30", "--set", "n_test=200",
                    "--set", "scenarios=noise_x2", "--out", str(tmp_path / "div"), "--quiet")
    assert res.returncode == 2
    assert "training diverged" in res.stderr and "lower lr (now 1e+30" in res.stderr
    assert not (tmp_path / "div" / "summary.json").exists()  # no finite error rate it did not measure
    with pytest.raises(TrainingDiverged, match="step"):
        train(SyntheticConfig(lr=1e30, steps=5, n_test=100, scenarios=[]))
    res = mcicl_cli("synthetic", "train", "--steps", "1", "--seeds", "1000000000", "--out", str(tmp_path / "big"),
                    "--quiet")
    assert res.returncode == 2 and "--seeds 1000000000" in res.stderr and "GiB" in res.stderr


def test_library_api_without_a_run_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    backend, params = matplotlib.get_backend(), dict(matplotlib.rcParams)
    config = SyntheticConfig(K=2, K_irr=1, d=20, L=4, n_train=64, n_test=200, n_test_ood=50, steps=20, eval_every=5,
                             ood_every=10, scenarios=["flipped_labels", "switched_features"], seeds=2)
    result = train(config)
    assert list(tmp_path.iterdir()) == []  # nothing written
    run = RunFolder.create(tmp_path / "r", "t")
    saved = train(config, run, figures=False)
    assert result.metrics == saved.metrics and result.summary["final"] == saved.summary["final"]
    assert result.model.W_Q.shape == (2, 20, 20) and result.world.test.xq.shape == (2, 200, 20)
    fig, axes = subplots(2, 2)
    assert plot_dynamics(result.metrics, config, axes=axes) is fig
    assert isinstance(plot_convergence(result.metrics, config.n_test), Figure)
    assert isinstance(plot_ood_grid(result.metrics, config.scenarios, result.summary["baselines"]), Figure)
    assert isinstance(plot_ood_overview(result.summary, config.scenarios), Figure)
    assert matplotlib.get_backend() == backend and dict(matplotlib.rcParams) == params
    # A result trained without a folder saves a whole train run folder; saving again changes nothing.
    folder = RunFolder.create(tmp_path / "saved", "synthetic train")
    result.save(folder)
    files = {p.relative_to(folder.path): p.read_bytes() for p in folder.path.rglob("*")
             if p.is_file() and p.parent.name != "figures" and p.name != "run.json"}
    assert {"summary.json", "metrics.jsonl", "config.yaml", "features.npz"} <= {str(p) for p in files}
    assert (folder.path / "checkpoints" / f"step_{config.steps:07d}.safetensors").is_file()
    assert (folder.path / "figures" / "dynamics.png").is_file()
    assert read_json(folder.path / "summary.json")["final"] == result.summary["final"]
    result.save(folder)
    assert files == {p.relative_to(folder.path): p.read_bytes() for p in folder.path.rglob("*")
                     if p.is_file() and p.parent.name != "figures" and p.name != "run.json"}
