"""probe circuits: QK products (analytic, nulls, the synthetic model's numbers unchanged), head roles (constructed
patterns and a hand-set tiny GPT-2), clean hooks (gone after every job and after an error; identity
interventions), causal effects and the job end to end on tiny random-weight models (labelled as such)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from mcicl.analysis.engine.head_roles import repeated_sequences, role_scores, role_targets
from mcicl.analysis.engine.nulls import maxt_p
from mcicl.analysis.engine.qk_products import (
    concept_products,
    product_test,
    qk_gram,
    rank_correlation,
    weight_score,
)
from mcicl.core.runs import RunFolder
from mcicl.probing.extract_config import ExtractionConfig
from mcicl.probing.hooks import capture_heads, hooks_left, knockout, mean_ablation, patch_heads
from mcicl.probing.icl.episodes import EpisodeConfig
from mcicl.probing.icl.tasks import IclSampler
from mcicl.probing.mechanism.circuits import causal_effects, head_roles, measure_circuits, qk_weights
from mcicl.probing.mechanism.circuits_config import CircuitsConfig
from mcicl.probing.models import load_model
from mcicl.probing.tiny import build_tiny_model
from mcicl.synthetic.config import SyntheticConfig
from mcicl.synthetic.data import build_dictionary
from mcicl.synthetic.metrics import product_matrix, weight_metrics
from mcicl.synthetic.model import OneLayerTransformer
from tests.icl_fixtures import SMALL_CONCEPTS, small_concept_set
from tests.test_synthetic_model import _prompts

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WORDS = [w for ws in SMALL_CONCEPTS.values() for w in ws]


# -- products: the one definition --------------------------------------------------------------------------

def test_qk_gram_is_the_bilinear_form_by_hand():
    rng = np.random.default_rng(0)
    WQ, WK = rng.standard_normal((3, 4, 6)), rng.standard_normal((3, 4, 6))
    U, V = rng.standard_normal((2, 6)), rng.standard_normal((5, 6))
    got = qk_gram(WQ, WK, U, V)
    for h in range(3):
        for i in range(2):
            for j in range(5):
                assert got[h, i, j] == pytest.approx(float(U[i] @ WQ[h].T @ WK[h] @ V[j]))


def test_projection_head_gives_the_analytic_products():
    """W_Q = W_K = the projection onto concept 0 and 1's dimensions: <P mu_k, P mu_j> by hand."""
    d = 8
    P = np.eye(d)[:2]  # d_head = 2: rows e_0, e_1
    mus = np.array([[2.0, 0, 0, 0, 0, 0, 0, 0], [0.5, 1.0, 0, 0, 0, 0, 0, 0], [0, 0, 3.0, 0, 0, 0, 0, 0]])
    same, comp = concept_products(P, P, mus)
    np.testing.assert_allclose(same, [4.0, 1.25, 0.0])
    # complement: mean over the other concepts of <P mu_k, P mu_j>: <mu0, mu1> = 1, the rest 0
    np.testing.assert_allclose(comp, [0.5, 0.5, 0.0])
    assert weight_score(P, P, mus) == pytest.approx(np.mean([3.5, 0.75, 0.0]))
    # with explicit complements (the synthetic mu_k^-s)
    same2, comp2 = concept_products(P, P, mus, -mus)
    np.testing.assert_allclose(same2, same)
    np.testing.assert_allclose(comp2, -same)


def _concept_vectors(rng: np.random.Generator, k: int = 4, per: int = 30, d: int = 24, sep: float = 2.0):
    base = np.eye(d)[:k] * sep
    X = np.concatenate([base[c] + rng.standard_normal((per, d)) for c in range(k)])
    return X, np.repeat([f"c{c}" for c in range(k)], per)


def test_planted_concept_head_passes_and_random_heads_do_not():
    rng = np.random.default_rng(1)
    X, labels = _concept_vectors(rng)
    d, d_head = X.shape[1], 4
    planted = np.eye(d)[:4] * 3.0  # projects onto the four concept dimensions
    random_heads = rng.standard_normal((19, d_head, d)) / math.sqrt(d)
    WQ = np.concatenate([planted[None], random_heads])
    test = product_test(WQ, WQ.copy(), X, labels, permutations=300, seed=0)
    assert test.p_corrected[0] <= 2 / 301  # the planted head passes against both nulls, after max-T
    assert (test.p_corrected[1:] < 0.05).sum() <= 1  # (almost) no random head does
    # random heads sit at their null: median permutation p well inside (0, 1)
    assert 0.2 < float(np.median(test.p_random[1:])) < 0.8
    # the null draws are the score of the right thing: random directions of the directions' norms (unit)
    assert test.random_null.shape == (300, 20) and test.permuted_null.shape == (300, 20)


def test_maxt_and_rank_correlation_against_direct_computations():
    rng = np.random.default_rng(2)
    draws = rng.standard_normal((500, 6))
    obs = np.array([0.0, 3.5, 0.5, -1, 2, 0])
    raw, cor = maxt_p(obs, draws)
    np.testing.assert_allclose(raw, [(1 + (draws[:, h] >= obs[h]).sum()) / 501 for h in range(6)])
    z = (draws - draws.mean(0)) / draws.std(0)
    tmax = z.max(1)
    assert cor[1] == pytest.approx(max(raw[1], (1 + (tmax >= (3.5 - draws[:, 1].mean()) / draws[:, 1].std()).sum())
                                       / 501))
    x = rng.standard_normal(40)
    y = x + 0.5 * rng.standard_normal(40)
    rho, p = rank_correlation(x, y, permutations=300)
    from scipy.stats import spearmanr  # noqa: PLC0415  (deferred: the check only)
    assert rho == pytest.approx(spearmanr(x, y).statistic) and p < 0.01
    rho0, p0 = rank_correlation(x, rng.standard_normal(40), permutations=300)
    assert p0 > 0.01 or abs(rho0) < 0.4


def test_synthetic_products_unchanged_by_the_shared_definition():
    """weight_metrics' concept and complement products equal the former einsum through M = W_K^T W_Q."""
    cfg = SyntheticConfig(K=3, K_irr=1, d=20, L=4, m=2, seeds=3, dtype="float64", scenarios=[])
    dic = build_dictionary(cfg)
    model = OneLayerTransformer(cfg, dic, torch.Generator().manual_seed(3))
    train = _prompts(np.zeros((3, 2, 4, 20)), np.zeros((3, 2, 4, 20)), np.zeros((3, 2, 20)), np.ones((3, 2)),
                     np.ones((3, 2, 4)))
    got = weight_metrics(model, dic, train)
    M = product_matrix(model).to(dic.a.device).double()
    mus = torch.stack([torch.stack([dic.mu(k, s) for k in range(dic.K)]) for s in (1, -1)]).double()
    same = torch.einsum("tkd,sde,tke->stk", mus, M, mus).flatten(1).amax(1)
    comp = torch.einsum("tkd,sde,tke->stk", mus.flip(0), M, mus).flatten(1).amax(1)
    np.testing.assert_allclose(got["concept_product"], same.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["complement_product"], comp.numpy(), rtol=1e-5, atol=1e-6)


# -- head roles ---------------------------------------------------------------------------------------------

def test_role_scores_on_constructed_patterns():
    T, start = 5, 1
    n = start + 2 * T + 1
    patterns = np.zeros((4, n, n))
    p = [start + i for i in range(2 * T)]  # the random tokens' positions
    for i in range(1, 2 * T):
        patterns[0, p[i], p[i - 1]] = 1.0  # previous token
    for i in range(T, 2 * T):
        patterns[1, p[i], p[i - T]] = 1.0  # the same token, earlier
        patterns[2, p[i], p[i - T + 1]] = 1.0  # the token after the earlier occurrence
    q, t = role_targets(T, start)["induction"]
    assert list(t - q) == [1 - T] * T
    patterns[3] = 1.0 / n  # uniform
    s = role_scores(patterns, T, start)
    np.testing.assert_allclose([s["previous_token"][0], s["duplicate_token"][1], s["induction"][2]], 1.0)
    assert s["induction"][0] < 0.2 and s["previous_token"][2] < 0.2 and s["duplicate_token"][0] == 0
    np.testing.assert_allclose([s[r][3] for r in s], 1.0 / n)
    seq = repeated_sequences(np.arange(100), 3, T, seed=0)
    assert (seq[:, :T] == seq[:, T:]).all() and all(len(set(r[:T])) == T for r in seq)


def _previous_token_gpt2(tmp_path):
    """A one-layer, two-head tiny GPT-2 (random tokenizer, weights set by hand): head 0 attends to the previous
    position (positions on a circle, the query rotated back one step), head 1 has zero Q/K (uniform attention)."""
    folder = build_tiny_model("gpt2", tmp_path / "prev", layers=1, heads=2, hidden=16, corpus=WORDS)
    loaded = load_model(folder)
    m = loaded.model
    theta, a = math.pi / 64, 160.0
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.transformer.ln_f.weight.fill_(1.0)
        m.transformer.h[0].ln_1.weight.fill_(1.0)
        m.transformer.h[0].ln_2.weight.fill_(1.0)
        j = torch.arange(m.transformer.wpe.weight.shape[0], dtype=torch.float32)
        c, s = torch.cos(theta * j), torch.sin(theta * j)
        m.transformer.wpe.weight[:, 0], m.transformer.wpe.weight[:, 1] = c, s
        m.transformer.wpe.weight[:, 2], m.transformer.wpe.weight[:, 3] = -c, -s  # mean 0: ln_1 only rescales
        W = m.transformer.h[0].attn.c_attn.weight  # Conv1D (in, 3 * out): q = x @ W[:, :16]
        g = a / math.sqrt(8)  # ln_1 output is sqrt(8) * (cos, sin, ...)
        W[0, 0], W[1, 0], W[0, 1], W[1, 1] = g * math.cos(theta), g * math.sin(theta), -g * math.sin(theta), \
            g * math.cos(theta)
        W[0, 16], W[1, 17] = g, g
    return loaded


def test_planted_previous_token_head_end_to_end(tmp_path, one_torch_thread):
    loaded = _previous_token_gpt2(tmp_path)
    roles = head_roles(loaded, sequences=4, period=12, seed=0)
    assert roles["previous_token"][0, 0] > 0.95
    assert roles["previous_token"][0, 1] < 0.3  # uniform causal attention
    assert roles["induction"][0, 0] < 0.05 and roles["duplicate_token"][0, 0] < 0.05
    assert hooks_left(loaded.model) == []


# -- hooks --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("circuits")
    return {arch: load_model(build_tiny_model(arch, root / arch, layers=2, heads=4, hidden=32, corpus=WORDS))
            for arch in ("gpt2", "bert")}


def _logits(model, ids):
    out = model(input_ids=ids)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@pytest.mark.parametrize("arch", ["gpt2", "bert"])
def test_interventions_leave_no_hook_also_after_an_error(tiny_models, arch):
    model = tiny_models[arch].model
    ids = tiny_models[arch].tokenizer("dog -> animal\ncat ->", return_tensors="pt")["input_ids"]
    d = 32 // 4
    contexts = [lambda: knockout(model, [(0, 1)]), lambda: mean_ablation(model, {(1, 2): torch.zeros(d)}),
                lambda: capture_heads(model),
                lambda: patch_heads(model, {(0, 0): (torch.tensor([0]), torch.tensor([1]), torch.zeros(1, d))})]
    with torch.no_grad():
        bare = _logits(model, ids)
        library = hooks_left(model, every=True)  # hooks transformers keeps on its modules, if any
        for make in contexts:
            with make():
                _logits(model, ids)
            assert hooks_left(model) == []
            with pytest.raises(RuntimeError, match="inside"):
                with make():
                    _logits(model, ids)
                    raise RuntimeError("an error inside the intervention")
            assert hooks_left(model) == [] and hooks_left(model, every=True) == library
        assert torch.equal(_logits(model, ids), bare)


@pytest.mark.parametrize("arch", ["gpt2", "bert"])
def test_identity_interventions(tiny_models, arch):
    """alpha = 0 and no heads reproduce the bare run bit for bit; patching a head with its own output (an
    identical prompt) changes nothing; mean-ablation to 0 is zero-ablation."""
    model = tiny_models[arch].model
    ids = tiny_models[arch].tokenizer(["dog -> animal\ncat ->", "car -> vehicle\nbus ->"], return_tensors="pt",
                                      padding=True)["input_ids"]
    d, n = 32 // 4, ids.shape[1]
    with torch.no_grad():
        bare = _logits(model, ids)
        with capture_heads(model) as store:
            _logits(model, ids)
        own = store[1][0][:, :, 2 * d:3 * d]  # layer 1, head 2: (rows, tokens, d)
        rows = torch.arange(2).repeat_interleave(n)
        pos = torch.arange(n).repeat(2)
        patch = {(1, 2): (rows, pos, own.reshape(-1, d))}
        with patch_heads(model, patch):
            patched = _logits(model, ids)
        with patch_heads(model, {(1, 2): (rows, pos, torch.randn(2 * n, d))}, alpha=0.0):
            alpha0 = _logits(model, ids)
        with knockout(model, []):
            none = _logits(model, ids)
        with mean_ablation(model, {(0, 3): torch.zeros(d)}):
            mean0 = _logits(model, ids)
        with knockout(model, [(0, 3)]):
            zero = _logits(model, ids)
        with patch_heads(model, {(1, 2): (rows, pos, torch.randn(2 * n, d) * 5)}):
            moved = _logits(model, ids)
    torch.testing.assert_close(patched, bare, atol=1e-6, rtol=1e-6)
    assert torch.equal(alpha0, bare) and torch.equal(none, bare)
    assert torch.equal(mean0, zero)
    assert (moved - bare).abs().max() > 1e-4  # a patch does something


# -- causal effects and the job -------------------------------------------------------------------------------

def _prompts_of(seed: int, episodes: int = 3):
    return IclSampler(small_concept_set(), ways=2, queries_per_episode=2).sample("in_distribution", 4, episodes,
                                                                                 seed)


@pytest.mark.parametrize("arch", ["gpt2", "bert"])
def test_patching_from_identical_prompts_changes_nothing(tiny_models, arch):
    """Random-weight tiny models: patching every head from the prompts themselves reproduces the clean margins;
    the label-rotated source and the ablations are finite."""
    loaded = tiny_models[arch]
    prompts, reference = _prompts_of(0), _prompts_of(1, 2)
    template = EpisodeConfig().template
    same = causal_effects(loaded, prompts, reference, template, source=prompts, batch_size=4)
    np.testing.assert_allclose(same["patch"], np.broadcast_to(same["clean"], same["patch"].shape), atol=1e-5)
    assert np.isfinite(same["zero"]).all() and np.isfinite(same["mean"]).all()
    rotated = causal_effects(loaded, prompts, reference, template, batch_size=4, heads=[(1, 0)])
    assert rotated["patch"].shape == (1, len(prompts)) and np.isfinite(rotated["patch"]).all()
    assert hooks_left(loaded.model) == []


def _config(model: str) -> CircuitsConfig:
    return CircuitsConfig(extraction=ExtractionConfig(model=model, device="cpu"),
                          prompts=EpisodeConfig(shots=[4], episodes=3, conditions=["in_distribution"],
                                                queries_per_episode=2),
                          role_sequences=2, role_period=8, permutations=100, bootstrap=100, batch_size=8)


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_job_end_to_end_on_random_weights(tiny_models, tmp_path, arch):
    loaded = tiny_models[arch]
    result = measure_circuits(_config(str(loaded.ref.location)), loaded, small_concept_set(), show_progress=False)
    assert hooks_left(loaded.model) == []
    run = RunFolder.create(tmp_path / "run", "probe circuits")
    result.save(run)
    run.commit()
    rows = list(csv.DictReader(open(run.path / "heads.csv")))
    assert len(rows) == 2 * 4 and {"concept_product", "complement_product", "product_p_corrected",
                                   "attention_excess", "induction", "patch_effect", "patch_low"} <= set(rows[0])
    s = result.summary
    assert s["random_weights"] and s["causal"] == (arch == "gpt2")
    assert ("folded" in s["layer_norm"]) and ("nothing folded" in s["layer_norm"]) == (arch == "bert")
    for name in ("weight_vs_attention.png", "head_roles.png", "causal_ranking.png"):
        assert (run.path / "figures" / name).is_file()


def test_no_hook_left_after_an_error_inside_the_job(tiny_models, monkeypatch):
    loaded = tiny_models["bert"]
    layer = loaded.model.encoder.layer[1]
    original = layer.forward
    count, held = {"n": 0}, []

    def exploding(*args, **kwargs):  # raises inside a forward pass while an intervention's hooks are set
        count["n"] += 1
        if count["n"] == 12:  # past the bare passes: inside the causal effects' per-head interventions
            held.extend(hooks_left(loaded.model))
            raise RuntimeError("failure inside the job's forward pass")
        return original(*args, **kwargs)
    monkeypatch.setattr(layer, "forward", exploding)
    with pytest.raises(RuntimeError, match="failure inside the job"):
        measure_circuits(_config(str(loaded.ref.location)), loaded, small_concept_set(), show_progress=False)
    assert held, "the error was raised with no intervention open"
    assert hooks_left(loaded.model) == []


def test_qk_weights_shapes_and_folding(tiny_models):
    q, k, note = qk_weights(tiny_models["gpt2"].model, 1)
    assert q.shape == k.shape == (4, 8, 32) and "ln_1" in note
    ln = tiny_models["gpt2"].model.transformer.h[1].ln_1.weight.detach().double().numpy()
    w = tiny_models["gpt2"].model.transformer.h[1].attn.c_attn.weight.detach().double().numpy()
    np.testing.assert_allclose(q[2], (w[:, 16:24] * ln[:, None]).T)
    q, k, note = qk_weights(tiny_models["bert"].model, 0)
    wq = tiny_models["bert"].model.encoder.layer[0].attention.self.query.weight.detach().double().numpy()
    np.testing.assert_allclose(q[1], wq[8:16])


def test_maxt_over_layers_and_heads_corrects_over_every_cell():
    """The (L, H) shape the attention probe uses: the corrected p of a cell counts draws whose largest
    standardised statistic over all L*H cells reaches the cell's own (computed here by hand)."""
    rng = np.random.default_rng(5)
    draws = rng.normal(size=(199, 3, 4))
    obs = rng.normal(size=(3, 4))
    obs[1, 2] = 4.0
    raw, cor = maxt_p(obs, draws)
    z = (draws - draws.mean(0)) / draws.std(0)
    t = (obs - draws.mean(0)) / draws.std(0)
    tmax = z.reshape(199, -1).max(1)
    for a in range(3):
        for h in range(4):
            assert raw[a, h] == pytest.approx((1 + (draws[:, a, h] >= obs[a, h]).sum()) / 200)
            assert cor[a, h] == pytest.approx(max((1 + (tmax >= t[a, h]).sum()) / 200, raw[a, h]))
    assert cor[1, 2] < 0.05 and (cor >= raw).all()
