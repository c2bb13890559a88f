"""Claims without oracle help: the default initialisation knows no label direction (checked against a chance
bound from random directions), the summary says so; quasi-binomial standard errors and the Pearson dispersion
equal a hand (numpy) computation; the rate is reported from several window starts; the context-blind control
hides the demonstrations' labels; independent test prompts per evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mcicl.synthetic.config import SyntheticConfig
from mcicl.synthetic.convergence import fit_binomial, fit_tail, init_description
from mcicl.synthetic.data import build_dictionary, generator
from mcicl.synthetic.model import OneLayerTransformer
from mcicl.synthetic.train import train


def _readout_alignment(model: OneLayerTransformer, direction: torch.Tensor) -> float:
    """mean_r cos(w_{+,r}, u) - mean_r cos(w_{-,r}, u) over every seed: how far the readout leans along u."""
    u = direction / direction.norm()
    model = model.instances(slice(None))  # detached views
    cos_p = (model.w_plus @ u) / model.w_plus.norm(dim=-1)
    cos_m = (model.w_minus @ u) / model.w_minus.norm(dim=-1)
    return float(cos_p.mean() - cos_m.mean())


@pytest.mark.parametrize(("init", "oracle"), [("random", False), ("aligned", True)])
def test_default_readout_knows_no_label_direction(init: str, oracle: bool) -> None:
    # The statistic along the TRUE label code sum_k d_k/|d_k|, beside its chance distribution: the same
    # statistic of the default model along 2000 random directions (for an isotropic init every direction is
    # alike). The default init must lie inside the chance bound (the 99.9% quantile of |statistic|); the oracle
    # warm start must lie far outside it (the test can see an oracle).
    kw = {} if init == "random" else {"readout_init": "aligned"}
    config = SyntheticConfig(seeds=5, scenarios=[], **kw)
    assert config.oracle_init is oracle and init_description(config)["oracle_init"] is oracle
    dic = build_dictionary(config)
    model = OneLayerTransformer(config, dic, generator(config, 1))
    true = (dic.dl / dic.dl.norm(dim=1, keepdim=True)).sum(0)
    observed = abs(_readout_alignment(model, true))
    default = OneLayerTransformer(SyntheticConfig(seeds=5, scenarios=[]), dic, generator(config, 1))
    rng = torch.Generator().manual_seed(123)
    null = np.array([abs(_readout_alignment(default, torch.randn(config.d, generator=rng))) for _ in range(2000)])
    bound = float(np.quantile(null, 0.999))
    if oracle:
        assert observed > 3 * bound, (observed, bound)
    else:
        assert observed < bound, (observed, bound)


def test_default_summary_records_no_oracle_init() -> None:
    config = SyntheticConfig(K=2, K_irr=1, d=20, L=4, n_train=32, n_test=50, steps=2, eval_every=1, ood_every=1,
                             scenarios=[], n_features=5)
    summary = train(config).summary
    assert summary["oracle_init"] is False and summary["init"]["readout_init"] == "random"
    assert "no data or ground truth" in summary["init"]["rule"]
    assert SyntheticConfig().readout_init == "random" and not SyntheticConfig().oracle_init


def _hand_quasi_binomial(X: np.ndarray, k: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Plain IRLS on the raw columns (no standardising, no damping): coefficients, quasi covariance, dispersion."""
    beta = np.zeros(X.shape[1])
    for _ in range(200):
        p = 1 / (1 + np.exp(-X @ beta))
        W = n * p * (1 - p)
        z = X @ beta + (k - n * p) / W
        beta_new = np.linalg.solve(X.T @ (W[:, None] * X), X.T @ (W * z))
        if np.max(np.abs(beta_new - beta)) < 1e-13:
            beta = beta_new
            break
        beta = beta_new
    p = 1 / (1 + np.exp(-X @ beta))
    W = n * p * (1 - p)
    phi = float(np.sum((k - n * p) ** 2 / W) / (len(k) - X.shape[1]))
    return beta, phi * np.linalg.inv(X.T @ (W[:, None] * X)), phi


def test_quasi_binomial_standard_errors_equal_a_hand_computation() -> None:
    # A fixed overdispersed example: error counts whose logit falls linearly, with extra between-step noise.
    t = np.arange(50.0, 300.0, 10.0)
    n = np.full(len(t), 2000.0)
    rng = np.random.default_rng(7)
    p = 1 / (1 + np.exp(-(0.5 - 0.02 * t + rng.normal(0, 0.3, len(t)))))
    k = rng.binomial(2000, p).astype(float)
    X = np.column_stack([np.ones(len(t)), t])
    fit = fit_binomial(X, k, n)
    beta, cov, phi = _hand_quasi_binomial(X, k, n)
    np.testing.assert_allclose(fit.coef, beta, rtol=1e-7)
    assert fit.dispersion == pytest.approx(phi, rel=1e-7)
    assert phi > 2  # the example is overdispersed, so the quasi errors are wider than the binomial ones
    np.testing.assert_allclose(np.sqrt(np.diag(fit.quasi_cov)), np.sqrt(np.diag(cov)), rtol=1e-6)
    np.testing.assert_allclose(fit.quasi_cov, fit.cov * phi, rtol=1e-12)
    # fit_tail reports the same numbers for the exponential's rate.
    tail = fit_tail(t, k / 2000, 2000, start_level=1.0)
    assert tail.rate == pytest.approx(-beta[1], rel=1e-6)
    assert tail.rate_se_quasi == pytest.approx(math.sqrt(cov[1, 1]), rel=1e-6)
    assert tail.dispersion == pytest.approx(phi, rel=1e-7)


def test_rate_depends_on_the_window_start_of_a_steepening_curve() -> None:
    # logit error = 1 - 0.0001 t^2 (curvature -2e-4): the slope grows with t, so later windows fit faster rates.
    t = np.arange(0.0, 400.0, 5.0)
    err = 1 / (1 + np.exp(-(1 - 1e-4 * t ** 2)))
    rates = [fit_tail(t, err, 100000, level).rate for level in (0.1, 0.05, 0.01)]
    assert rates[0] < rates[1] < rates[2], rates
    assert fit_tail(t, err, 100000).curvature == pytest.approx(-2e-4, rel=0.05)


def test_hidden_labels_never_reach_the_model() -> None:
    config = SyntheticConfig(K=2, K_irr=1, d=20, L=4, scenarios=[], demo_labels="hidden", value="projected",
                             skip=True, seeds=2)
    dic = build_dictionary(config)
    model = OneLayerTransformer(config, dic, generator(config, 1))
    x, xq = torch.randn(2, 3, 4, 20), torch.randn(2, 3, 20)
    a, b = model(x, torch.randn(2, 3, 4, 20), xq).f, model(x, torch.randn(2, 3, 4, 20), xq).f
    torch.testing.assert_close(a, b)  # any labels give the same output
    shown = OneLayerTransformer(SyntheticConfig(K=2, K_irr=1, d=20, L=4, scenarios=[], value="projected",
                                                skip=True, seeds=2), dic, generator(config, 1))
    assert not torch.allclose(shown(x, torch.randn(2, 3, 4, 20), xq).f, shown(x, torch.randn(2, 3, 4, 20), xq).f)


def test_context_blind_control_fails_flipped_labels_where_the_projected_model_does_not() -> None:
    # value: projected lets the words reach the output past the labels, so following the flipped demonstrations
    # is learned, not forced. The same model trained the same way with the demonstrations' labels hidden solves
    # the training task from the words and is wrong on every flipped prompt.
    kw = {"K": 2, "K_irr": 2, "d": 24, "seeds": 3, "steps": 400, "n_train": 256, "n_test": 500, "n_test_ood": 500,
          "eval_every": 50, "ood_every": 50, "scenarios": ["flipped_labels"], "value": "projected", "n_features": 5}
    full = train(SyntheticConfig(**kw)).summary
    blind = train(SyntheticConfig(**kw, demo_labels="hidden")).summary
    assert max(full["final_per_seed"]["test_zero_one"]) <= 0.02
    assert max(blind["final_per_seed"]["test_zero_one"]) <= 0.02  # in distribution it needs no labels
    assert max(full["ood"]["flipped_labels"]["per_seed_zero_one"]) <= 0.1
    assert min(blind["ood"]["flipped_labels"]["per_seed_zero_one"]) >= 0.95


def test_fresh_test_prompts_differ_per_evaluation_and_repeat_per_seed() -> None:
    from mcicl.synthetic.train import build_world, fresh_test

    config = SyntheticConfig(K=2, K_irr=1, d=20, L=4, n_train=16, n_test=30, scenarios=[], seeds=2,
                             test_prompts="fresh")
    world = build_world(config)
    a, b, again = fresh_test(config, world, 5), fresh_test(config, world, 10), fresh_test(config, world, 5)
    assert torch.equal(a.x, again.x) and not torch.equal(a.x, b.x) and not torch.equal(a.x, world.test.x)
    rows = train(SyntheticConfig(**{**config.__dict__, "steps": 4, "eval_every": 2, "ood_every": 2})).metrics
    assert len(rows) == 3


def test_align_sensitivity_table_and_figure() -> None:
    from matplotlib.figure import Figure

    from mcicl.synthetic.plots import plot_align_sensitivity
    from mcicl.synthetic.train import align_sensitivity

    base = SyntheticConfig(K=2, K_irr=1, d=20, L=4, n_train=64, n_test=100, steps=10, eval_every=5, ood_every=5,
                           scenarios=[], seeds=2, n_features=5)
    table = align_sensitivity(base, (0.0, 0.2))
    assert table["readout_align"] == [0.0, 0.2] and len(table["final_zero_one"]) == 2
    assert all(len(v) == 2 for v in table["step_1pct"])
    assert isinstance(plot_align_sensitivity(table), Figure)
