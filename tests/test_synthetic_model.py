"""Pin the synthetic model: a golden forward pass computed in numpy from the docs' equations, every dynamics
quantity on constructed weights whose true value is worked out here, the data sampler's options, the baselines
and the convergence statistics on data whose answer is known. All fast (no training)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import stats

from mcicl.core.configuration import ConfigError, from_dict
from mcicl.synthetic.baselines import QueryOnly, averaging, label_signs, nearest_demonstration, oracle
from mcicl.synthetic.config import SyntheticConfig
from mcicl.synthetic.convergence import finite_or_none, fit_binomial, fit_tail, tail_window
from mcicl.synthetic.data import Prompts, build_dictionary, sample_prompts, scenario_spec, train_spec
from mcicl.synthetic.metrics import prompt_metrics, weight_metrics
from mcicl.synthetic.model import Attention, OneLayerTransformer, logistic_loss, zero_one_loss


def _set(model: OneLayerTransformer, **weights: np.ndarray) -> None:
    """Overwrite model parameters with float64 arrays (a leading seed axis included)."""
    for name, value in weights.items():
        setattr(model, name, torch.nn.Parameter(torch.as_tensor(value, dtype=torch.float64)))


def _model(cfg: SyntheticConfig) -> OneLayerTransformer:
    return OneLayerTransformer(cfg, build_dictionary(cfg), torch.Generator().manual_seed(0))


def _numpy_forward(WQ, WK, wp, wm, x, y, xq, WV=None):
    """The docs' equations, one prompt at a time, in plain numpy loops."""
    L = x.shape[0]
    scores = np.array([x[l] @ WK.T @ WQ @ xq for l in range(L)])
    alpha = np.exp(scores - scores.max())
    alpha /= alpha.sum()
    v = [y[l] if WV is None else WV @ np.concatenate([x[l], y[l]]) for l in range(L)]
    h = sum(alpha[l] * v[l] for l in range(L))
    f = np.mean([max(0.0, wp[r] @ h) - max(0.0, wm[r] @ h) for r in range(wp.shape[0])])
    return f, alpha, h


@pytest.mark.parametrize("value", ["label", "projected"])
def test_golden_forward_pass(value: str) -> None:
    cfg = SyntheticConfig(K=1, K_irr=0, d=8, L=3, m=3, seeds=2, dtype="float64", value=value, scenarios=[])
    model = _model(cfg)
    rng = np.random.default_rng(42)
    S, d, L, m, n = 2, 8, 3, 3, 4
    W = {"W_Q": rng.normal(size=(S, d, d)), "W_K": rng.normal(size=(S, d, d)),
         "w_plus": rng.normal(size=(S, m, d)), "w_minus": rng.normal(size=(S, m, d))}
    if value == "projected":
        W["W_V"] = rng.normal(size=(S, d, 2 * d))
    _set(model, **W)
    x, y, xq = rng.normal(size=(S, n, L, d)), rng.normal(size=(S, n, L, d)), rng.normal(size=(S, n, d))
    with torch.no_grad():
        out = model(*(torch.as_tensor(a) for a in (x, y, xq)))
    relu_off = 0
    for s in range(S):
        for i in range(n):
            f, alpha, h = _numpy_forward(W["W_Q"][s], W["W_K"][s], W["w_plus"][s], W["w_minus"][s], x[s, i], y[s, i],
                                         xq[s, i], W.get("W_V", [None] * S)[s])
            assert math.isclose(float(out.f[s, i]), f, rel_tol=1e-10, abs_tol=1e-12)
            np.testing.assert_allclose(out.alpha[s, i].numpy(), alpha, rtol=1e-10)
            np.testing.assert_allclose(out.h[s, i].numpy(), h, rtol=1e-10, atol=1e-12)
            relu_off += int((W["w_plus"][s] @ h < 0).sum() + (W["w_minus"][s] @ h < 0).sum())
            assert alpha.max() - alpha.min() > 0.05  # attention is not uniform on this input
    assert relu_off > 0  # some ReLUs are off, so a model without them would differ


@pytest.mark.parametrize("value,readout", [("projected", "aligned"), ("label", "random")])
def test_initialisation_is_pinned(value: str, readout: str) -> None:
    # The init redrawn here from the docs: Gaussian sigma0 draws in the order W_Q, W_K, (W_V = [0 I] + noise),
    # w_+, w_-, and the aligned readout adds / subtracts readout_align * sum_k d_k / |d_k|.
    cfg = SyntheticConfig(K=2, K_irr=0, d=16, m=3, seeds=2, dtype="float64", value=value, readout_init=readout,
                          sigma0=0.05, readout_align=0.2, scenarios=[])
    dic = build_dictionary(cfg)
    model = OneLayerTransformer(cfg, dic, torch.Generator().manual_seed(7))
    torch.manual_seed(123)  # the global RNG plays no part
    again = OneLayerTransformer(cfg, dic, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)

    def gauss(*shape: int) -> torch.Tensor:
        return 0.05 * torch.randn(*shape, generator=g, dtype=torch.float64)

    expect = {"W_Q": gauss(2, 16, 16), "W_K": gauss(2, 16, 16)}
    if value == "projected":
        expect["W_V"] = torch.cat([torch.zeros(16, 16), torch.eye(16)], 1).double() + gauss(2, 16, 32)
    lean = sum(dic.dl[k].double() / dic.dl[k].double().norm() for k in range(2)) * (readout == "aligned") * 0.2
    expect["w_plus"], expect["w_minus"] = gauss(2, 3, 16) + lean, gauss(2, 3, 16) - lean
    got = dict(model.named_parameters())
    assert set(got) == set(expect)
    for name, tensor in expect.items():
        assert got[name].dtype == torch.float64 and got[name].shape == tensor.shape, name
        assert torch.allclose(got[name].detach(), tensor, rtol=1e-6, atol=1e-6), name
        assert torch.equal(got[name], dict(again.named_parameters())[name]), name
    p = sample_prompts(dic, train_spec(cfg), 2, 3, torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model.run(p).f, model(p.x, p.y, p.xq).f)


@pytest.mark.parametrize("value", ["label", "projected"])
def test_attention_backward_matches_finite_differences(value: str) -> None:
    # The hand-written backward of the attention block, then the whole model's gradient, against float64
    # finite differences. With value: label only the pulled query needs a gradient; projected adds v.
    torch.manual_seed(0)
    S, n, L, d = 2, 3, 4, 5
    x = torch.randn(S, n, L, d, dtype=torch.float64, requires_grad=True)
    v = torch.randn(S, n, L, d, dtype=torch.float64, requires_grad=value == "projected")
    p = torch.randn(S, n, d, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: Attention.apply(*a)[0], (x, v, p))
    assert torch.autograd.gradcheck(lambda p: Attention.apply(x.detach(), v.detach(), p)[0], (p,))

    cfg = SyntheticConfig(K=1, K_irr=0, d=8, L=3, m=3, seeds=2, dtype="float64", value=value, scenarios=[])
    model = _model(cfg)
    names = [name for name, _ in model.named_parameters()]
    data = [torch.randn(2, 4, 3, 8, dtype=torch.float64), torch.randn(2, 4, 3, 8, dtype=torch.float64),
            torch.randn(2, 4, 8, dtype=torch.float64)]

    def f(*params: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, dict(zip(names, params, strict=True)), tuple(data)).f

    params = tuple(p.detach().clone().mul_(10).requires_grad_() for p in model.parameters())  # scores of O(1)
    assert torch.autograd.gradcheck(f, params, fast_mode=True)


def test_losses_on_known_outputs() -> None:
    f = torch.tensor([2.0, -1.0, 0.0, float("nan"), float("inf"), -float("inf")])
    t = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, -1.0])
    assert zero_one_loss(f, t).tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # 0, NaN and inf count as errors
    np.testing.assert_allclose(logistic_loss(f[:3], t[:3]).numpy(), np.log1p(np.exp([-2.0, 1.0, 0.0])), rtol=1e-6)


def _prompts(x, y, xq, target, same, concept=None, xi=None) -> Prompts:
    t = [torch.as_tensor(np.asarray(a), dtype=torch.float64) for a in (x, y, xq, target)]
    same = torch.as_tensor(np.asarray(same), dtype=torch.bool)
    concept = torch.zeros(same.shape[:2], dtype=torch.long) if concept is None else torch.as_tensor(concept)
    xi = torch.zeros_like(t[0]) if xi is None else torch.as_tensor(np.asarray(xi), dtype=torch.float64)
    return Prompts(*t, same, concept, xi)


def test_prompt_metrics_on_constructed_weights() -> None:
    # d = 8 (K=1, K_irr=0): W_Q = c e1 e1^T, W_K = I, so the score of demonstration l is c x_l[0] x_q[0].
    cfg = SyntheticConfig(K=1, K_irr=0, d=8, L=3, m=2, seeds=1, dtype="float64", scenarios=[])
    model = _model(cfg)
    d, c = 8, 1.5
    e = np.eye(d)
    WQ = np.zeros((1, d, d))
    WQ[0, 0, 0] = c
    wp = np.stack([2 * e[1], -e[1]])[None]  # ReLU(2 y_1) - on the +e1 side ...
    wm = np.stack([3 * e[2], e[1]])[None]  # ... and ReLU(3 y_2), ReLU(y_1) on the other
    _set(model, W_Q=WQ, W_K=np.eye(d)[None], w_plus=wp, w_minus=wm)
    # Two prompts. Same-sign demonstrations have x_l = e0 (score c), the others x_l = -e0/2 (score -c/2); x_q = e0.
    same = np.array([[[True, False, False], [True, True, False]]])
    x = np.where(same[..., None], e[0], -0.5 * e[0])
    y = np.where(same[..., None], e[1], e[2])  # answer's label e1, other label e2
    xq = np.tile(e[0], (1, 2, 1))
    target = np.array([[1.0, 1.0]])  # one sign: a mean over prompts of +-r would be 0 and hide r's own errors
    got = prompt_metrics(model, _prompts(x, y, xq, target, same), K=1)
    ns = same.sum(-1)[0]  # (1, 2) same-sign counts
    # softmax mass on same-sign demonstrations
    mass = ns * math.exp(c) / (ns * math.exp(c) + (3 - ns) * math.exp(-c / 2))
    assert got["correct_attention"][0] == pytest.approx(mass.mean(), rel=1e-12)
    assert got["polarisation"][0] == pytest.approx(abs(2 * mass.mean() - 1), rel=1e-12)
    assert got["score_gap"][0] == pytest.approx(1.5 * c, rel=1e-12)  # c - (-c/2): both means count
    # readout r(y) = (1/2)[ReLU(2y1) + ReLU(-y1) - ReLU(3y2) - ReLU(y1)]: r(e1) = (2 - 1)/2, r(e2) = -3/2.
    r1, r2 = 0.5, -1.5
    assert got["readout_answer_label"][0] == pytest.approx(np.mean(target[0] * r1), abs=1e-12)
    assert got["readout_other_label"][0] == pytest.approx(np.mean(target[0] * r2), abs=1e-12)
    h = mass[:, None] * e[1] + (1 - mass[:, None]) * e[2]
    f = 0.5 * (np.maximum(2 * h[:, 1], 0) + np.maximum(-h[:, 1], 0) - np.maximum(3 * h[:, 2], 0) - h[:, 1])
    assert got["logistic_loss"][0] == pytest.approx(np.mean(np.log1p(np.exp(-target[0] * f))), rel=1e-12)
    assert got["zero_one"][0] == pytest.approx(np.mean(target[0] * f <= 0), abs=1e-12)


@pytest.mark.parametrize("value", ["label", "projected"])
def test_prompt_metrics_do_not_depend_on_blocking(value: str) -> None:
    # The batched sweep evaluates 100+ instances in blocks, a cell alone in one piece, and an instance's prompts
    # are cut into blocks by its own size only: both give the cell's numbers (float64). Only the logistic loss
    # may move in its last bit: softplus has a vectorised and a scalar code path, and which elements get the
    # scalar tail depends on the tensor's length (as it did before blocking, between a batch and a cell alone).
    cfg = SyntheticConfig(K=2, K_irr=1, d=16, L=4, seeds=5, dtype="float64", value=value, scenarios=[])
    dic = build_dictionary(cfg)
    model = OneLayerTransformer(cfg, dic, torch.Generator().manual_seed(3))
    prompts = sample_prompts(dic, train_spec(cfg), 5, 30, torch.Generator().manual_seed(4))

    def assert_same(got: dict, want: dict) -> None:
        assert got.keys() == want.keys()
        for key in want:
            if key in ("logistic_loss", "score_gap"):  # sums over blocks: equal up to the last bit, not beyond
                assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-18), key
            else:
                assert got[key] == want[key], key

    assert_same(prompt_metrics(model, prompts, K=2, max_demos=2 * 30 * 4), prompt_metrics(model, prompts, K=2))
    cut = prompt_metrics(model, prompts, K=2, max_demos=7 * 4)  # one instance at a time, 7 prompts a block
    alone = prompt_metrics(model.instances(slice(3, 4)), replace(prompts, **{
        f: getattr(prompts, f)[3:4] for f in ("x", "y", "xq", "target", "same", "concept", "xi")}), K=2,
        max_demos=7 * 4)
    assert_same(alone, {key: value[3:4] for key, value in cut.items()})


def test_weight_metrics_on_constructed_weights() -> None:
    cfg = SyntheticConfig(K=2, K_irr=0, d=16, L=2, m=2, seeds=1, dtype="float64", scenarios=[], within_cosine=0.5)
    dic = build_dictionary(cfg)
    model = OneLayerTransformer(cfg, dic, torch.Generator().manual_seed(0))
    a_hat = (dic.a / dic.a.norm(dim=1, keepdim=True)).numpy()
    b_hat = (dic.b / dic.b.norm(dim=1, keepdim=True)).numpy()
    P_perp = dic.noise_projector().numpy()
    u = P_perp @ np.ones(16)
    u /= np.linalg.norm(u)  # a unit direction off the dictionary span
    alpha, beta, gamma = 2.0, 5.0, 0.7
    # W_Q = I and W_K = M^T, so W_K^T W_Q = M.
    M = alpha * sum(np.outer(a, a) for a in a_hat) + beta * sum(np.outer(b, b) for b in b_hat) \
        + gamma * np.outer(u, a_hat[0])
    dl_hat = (dic.dl / dic.dl.norm(dim=1, keepdim=True)).numpy()
    _set(model, W_Q=np.eye(16)[None], W_K=M.T[None], w_plus=np.stack([3 * dl_hat[0], 5 * dl_hat[1]])[None],
         w_minus=np.stack([-dl_hat[0], np.zeros(16)])[None])
    # Training prompts: x_q = a_0 direction; xi_l = 0.1 b_hat_1 (inside the span) + 0.2 u (outside).
    xi = np.tile(0.1 * b_hat[1] + 0.2 * u, (1, 3, 2, 1))
    xq = np.tile(a_hat[0], (1, 3, 1))
    train = _prompts(np.zeros((1, 3, 2, 16)), np.zeros((1, 3, 2, 16)), xq, np.ones((1, 3)), np.ones((1, 3, 2)),
                     xi=xi)
    got = weight_metrics(model, dic, train)
    a2, b2 = 0.75, 0.25  # |a|^2 = (1 + 0.5)/2, |b|^2 = (1 - 0.5)/2
    assert got["concept_product"][0] == pytest.approx(alpha * a2 + beta * b2, rel=1e-9)
    assert got["complement_product"][0] == pytest.approx(alpha * a2 - beta * b2, rel=1e-9)
    assert got["coef_a"][0] == pytest.approx(alpha, rel=1e-9)
    assert got["coef_b"][0] == pytest.approx(beta, rel=1e-9)
    assert got["coef_noise"][0] == pytest.approx(0.0, abs=1e-9)  # gamma u a_0^T maps span -> off span only
    # noise product |xi^T M x_q|: in span 0.1 b_1^T M a_0 = 0; off span 0.2 u^T M a_0 = 0.2 gamma.
    assert got["noise_product_in_span"][0] == pytest.approx(0.0, abs=1e-9)
    assert got["noise_product_off_span"][0] == pytest.approx(0.2 * gamma, rel=1e-9)
    assert got["noise_product"][0] == pytest.approx(0.2 * gamma, rel=1e-9)
    d_norm = math.sqrt(0.5)  # |d_k| with label_cosine 0
    assert got["mlp_plus_correct"][0] == pytest.approx((3 + 5) / 2 * d_norm, rel=1e-9)
    assert got["mlp_plus_wrong"][0] == pytest.approx(0.0, abs=1e-9)  # max_r of (-3|d|, 0) and (0, -5|d|)
    assert got["mlp_minus_correct"][0] == pytest.approx((d_norm + 0.0) / 2, rel=1e-9)  # <-d0, q_0^-> = |d|
    assert got["mlp_minus_wrong"][0] == pytest.approx(0.0, abs=1e-9)


def test_noise_options_and_switched_features() -> None:
    cfg = SyntheticConfig(noise="orthogonal", seeds=1, sigma=0.1)
    dic = build_dictionary(cfg)
    p = sample_prompts(dic, train_spec(cfg), 1, 300, torch.Generator().manual_seed(0))
    span = dic.span_projector()
    assert float((p.xi @ span).abs().max()) < 1e-6  # orthogonal noise has no part in the feature span
    assert float(p.xi.std()) > 0.04  # ... and is not zero (sigma sqrt(20/48) per coordinate)
    iso = sample_prompts(dic, train_spec(SyntheticConfig(seeds=1, sigma=0.1)), 1, 300, torch.Generator().manual_seed(0))
    assert float((iso.xi @ span).norm(dim=-1).mean()) > 0.2  # isotropic noise has ~sigma sqrt(n_dirs) there
    sw = sample_prompts(dic, scenario_spec(cfg, "switched_features"), 1, 400, torch.Generator().manual_seed(1))
    k = sw.concept[0]
    old = (sw.xq[0] * dic.b[k]).sum(-1) / dic.b[k].norm(dim=-1) ** 2
    new = (sw.xq[0] * dic.b_switched[k]).sum(-1) / dic.b_switched[k].norm(dim=-1) ** 2
    assert float(old.abs().max()) < 1e-5  # the learned semantic direction is gone ...
    assert torch.equal(torch.sign(new), sw.target[0])  # ... and the answer is the sign on the fresh one
    assert float((dic.b_switched @ dic.basis.T).abs().max()) < 1e-6  # fresh: orthogonal to every direction
    with pytest.raises(ConfigError, match="uniform_concepts only with train_skew > 0"):
        from_dict(SyntheticConfig, {"scenarios": ["uniform_concepts"]})
    from_dict(SyntheticConfig, {"scenarios": ["uniform_concepts"], "train_skew": 0.8})
    with pytest.raises(ConfigError, match="seeds=1000000000.*GiB"):
        from_dict(SyntheticConfig, {"seeds": 1_000_000_000})


def test_baselines_on_known_prompts() -> None:
    cfg = SyntheticConfig(seeds=1, scenarios=["flipped_labels", "switched_features", "noise_x5"])
    dic = build_dictionary(cfg)
    q = dic.q(0, 1).double().numpy()
    qm = dic.q(0, -1).double().numpy()
    assert label_signs(dic, torch.as_tensor(np.stack([q, qm]))).tolist() == [1.0, -1.0]
    # One hand-made prompt: demonstrations e0 (+ label), 0.5 e0 + e1 (- label), query e0 + 0.1 e1.
    e = np.eye(cfg.d)
    x = np.stack([e[0], 0.5 * e[0] + e[1]])[None, None]
    y = np.stack([q, qm])[None, None]
    xq = (e[0] + 0.1 * e[1])[None, None]
    p = _prompts(x, y, xq, np.ones((1, 1)), np.array([[[True, False]]]))
    p = Prompts(*(t.float() if t.is_floating_point() else t for t in (p.x, p.y, p.xq, p.target)), p.same, p.concept,
                p.xi.float())
    assert nearest_demonstration(dic, p).item() == 1.0  # <x_1, x_q> = 1 > 0.6
    assert averaging(dic, p).item() == pytest.approx((1.0 - 0.6) / 2)
    # Query-only fits the training distribution (the answer is in the query) and fails when labels flip.
    train = sample_prompts(dic, train_spec(cfg), 1, 1024, torch.Generator().manual_seed(2))
    blind = QueryOnly.fit(train)
    test = sample_prompts(dic, train_spec(cfg), 1, 2000, torch.Generator().manual_seed(3))
    assert float(zero_one_loss(blind(test), test.target).mean()) < 0.01
    flipped = sample_prompts(dic, scenario_spec(cfg, "flipped_labels"), 1, 2000, torch.Generator().manual_seed(4))
    assert float(zero_one_loss(blind(flipped), flipped.target).mean()) > 0.99
    switched = sample_prompts(dic, scenario_spec(cfg, "switched_features"), 1, 2000, torch.Generator().manual_seed(5))
    assert 0.4 < float(zero_one_loss(blind(switched), switched.target).mean()) < 0.6  # chance
    assert float(zero_one_loss(nearest_demonstration(dic, switched), switched.target).mean()) < 0.01
    # The oracle's error is Phi(-|b| / sigma) analytically: sigma = 0.5, |b| = 0.5 gives Phi(-1) = 0.159.
    noisy = SyntheticConfig(seeds=1, sigma=0.5, scenarios=[])
    spec = train_spec(noisy)
    big = sample_prompts(build_dictionary(noisy), spec, 1, 20000, torch.Generator().manual_seed(6))
    err = float(zero_one_loss(oracle(build_dictionary(noisy), spec, big), big.target).mean())
    assert err == pytest.approx(stats.norm.cdf(-1.0), abs=0.01)


def _counts(p: np.ndarray, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).binomial(n, p) / n


def test_binomial_fit_recovers_known_coefficients() -> None:
    t = np.arange(0, 200, 5.0)
    p = 1 / (1 + np.exp(-(-1.0 - 0.03 * t)))
    n = 10**7
    fit = fit_binomial(np.column_stack([np.ones_like(t), t]), np.rint(_counts(p, n, 0) * n), np.full(len(t), n))
    assert fit.coef == pytest.approx([-1.0, -0.03], rel=2e-3)
    assert math.sqrt(fit.cov[1, 1]) < 1e-4


@pytest.mark.parametrize("truth", ["exponential", "power", "faster"])
def test_tail_fit_tells_exponential_from_power_law(truth: str) -> None:
    # Error counts on 10,000 prompts from a known curve. The control: a power law must lose to nothing less.
    t = np.arange(100, 400, 5.0)
    n = 10_000
    p = {"exponential": 1 / (1 + np.exp(1.5 + 0.04 * (t - 100))), "power": 0.2 * (t / 100) ** -4.0,
         "faster": 0.2 * np.exp(-0.0004 * (t - 100) ** 2)}[truth]
    rates, wins, curv = [], [], []
    for seed in range(5):
        fit = fit_tail(t, _counts(p, n, seed), n)
        rates.append(fit.rate)
        wins.append(fit.exponential_wins)
        curv.append(fit.curvature)
    if truth == "power":
        assert not any(wins)  # the exponential loses in every seed on power-law data
        assert np.mean(curv) > 0  # log error is convex: slower than exponential
    else:
        assert all(wins)
    if truth == "exponential":
        assert np.mean(rates) == pytest.approx(0.04, rel=0.05)
        assert abs(np.mean(curv)) < 3 * np.std(curv) + 1e-5  # no curvature
    if truth == "faster":
        assert max(curv) < 0  # negative curvature: faster than a single exponential


def test_tail_window_rule() -> None:
    steps = np.arange(0, 50, 5)
    err = np.array([0.5, 0.3, 0.09, 0.05, 0.0, 0.01, 0.0, 0.0, 0.0, 0.0])
    w = tail_window(steps, err)
    assert (w.start, w.stop) == (2, 7)  # from the first <= 10% to the first 0 after the last error
    assert tail_window(steps, np.full(10, 0.5)) == slice(0, 0)


def test_summary_values_are_strict_json() -> None:
    text = json.dumps(finite_or_none({"a": float("nan"), "b": [1.0, float("inf")], "c": np.float64("nan")}),
                      allow_nan=False)
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": None}
