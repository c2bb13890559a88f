"""Pin the synthetic data model (synthetic/data.py) without training: the dictionary, the OOD scenario specs, the
word and prompt samplers.

The expected values are worked out here from the equations in data.py's docstring. With sigma = 0 and
polysemy_rate 0 or 1 a word is an exact sum of dictionary vectors, so its concepts and signs are read back by
projection onto the (mutually orthogonal) direction families: coefficient on a_j = <x, a_j> / |a_j|^2.
"""

from __future__ import annotations

import math
from dataclasses import fields, replace

import numpy as np
import pytest
import torch

from mcicl.synthetic import data as data_module
from mcicl.synthetic.config import SCENARIOS, SyntheticConfig
from mcicl.synthetic.data import (
    Dictionary,
    Prompts,
    PromptSpec,
    _allowed,
    build_dictionary,
    generator,
    labels,
    sample_prompts,
    sample_words,
    scenario_spec,
    seed_configs,
    skewed_prior,
    train_spec,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WITHIN, LABEL_COS = 0.4, 0.3
A2, B2 = (1 + WITHIN) / 2, (1 - WITHIN) / 2  # |a|^2, |b|^2
C2, D2 = (1 + LABEL_COS) / 2, (1 - LABEL_COS) / 2  # |c|^2, |d|^2


def world(**kw) -> SyntheticConfig:
    """K=3 task concepts, 1 irrelevant (C=4), float64; 18 dictionary directions (+3 switched) in d=24."""
    base = dict(K=3, K_irr=1, d=24, L=5, within_cosine=WITHIN, label_cosine=LABEL_COS, dtype="float64",
                scenarios=["unseen_concept", "switched_features"])
    return SyntheticConfig(**{**base, **kw})


def coef(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Coefficients of x on mutually orthogonal rows: <x, r_j> / |r_j|^2, shape (*x.shape[:-1], n_rows)."""
    return x @ rows.T / (rows * rows).sum(-1)


def onehot(k: torch.Tensor, C: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(k, C).double()


def partners(rule: str, K: int, C: int) -> torch.Tensor:
    """(K+1, C) 0/1: the co-occurrence rule written out (row K: the unseen concept, any partner)."""
    table = torch.zeros(K + 1, C, dtype=torch.float64)
    for k in range(K + 1):
        for j in range(C):
            if k == K:
                table[k, j] = 1
            elif j != k:
                table[k, j] = {"patterned": (j + k) % 2 == 0, "switched": (j + k) % 2 == 1, "random": True}[rule]
    return table


def within(fraction: float, p: float, n: int) -> bool:
    """fraction of n Bernoulli(p) draws within 4.5 binomial standard deviations of p."""
    return abs(fraction - p) <= 4.5 * math.sqrt(p * (1 - p) / n)


# --- the dictionary ---------------------------------------------------------------------------------------------


def test_dictionary_norms_orthogonality_and_basis() -> None:
    cfg = world()
    dic = build_dictionary(cfg)
    K, C, d, n = 3, 4, cfg.d, cfg.directions_needed()
    assert (dic.K, dic.C, n) == (K, C, 18)
    assert [t.shape for t in (dic.a, dic.b, dic.c, dic.dl, dic.b_switched, dic.basis)] == [
        (C, d), (C, d), (K, d), (K, d), (K, d), (n, d)]
    assert all(t.dtype == torch.float64 for t in (dic.a, dic.b, dic.c, dic.dl, dic.a_unseen, dic.b_switched,
                                                   dic.basis))
    # Every direction, unseen ones included, is orthogonal to every other, with the configured norms.
    rows = torch.cat([dic.a, dic.b, dic.c, dic.dl, torch.stack([dic.a_unseen, dic.b_unseen, dic.c_unseen,
                                                                 dic.d_unseen])])
    norms2 = torch.tensor([A2] * C + [B2] * C + [C2] * K + [D2] * K + [A2, B2, C2, D2], dtype=torch.float64)
    assert torch.allclose(rows @ rows.T, torch.diag(norms2), atol=1e-12)
    # The basis: orthonormal, n rows, spanning every direction above (and nothing more: n = their count).
    assert rows.shape[0] == n
    assert torch.allclose(dic.basis @ dic.basis.T, torch.eye(n, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(rows @ dic.basis.T @ dic.basis, rows, atol=1e-12)
    # b_switched: K fresh semantic directions, off the basis, with |b|'s norm.
    sw = dic.b_switched
    assert torch.allclose(sw @ sw.T, B2 * torch.eye(K, dtype=torch.float64), atol=1e-12)
    assert float((sw @ dic.basis.T).abs().max()) < 1e-12
    # mu and q are the docstring's sums.
    for k in range(K):
        for s in (1, -1):
            assert torch.allclose(dic.mu(k, s), dic.a[k] + s * dic.b[k], atol=0)
            assert torch.allclose(coef(dic.q(k, s), dic.c), onehot(torch.tensor(k), K), atol=1e-12)
            assert torch.allclose(coef(dic.q(k, s), dic.dl), s * onehot(torch.tensor(k), K), atol=1e-12)
            assert float(dic.q(k, s).norm()) == pytest.approx(1.0, abs=1e-12)
    for k in range(C):  # irrelevant concepts have words too
        assert torch.allclose(coef(dic.mu(k, -1), dic.b), -onehot(torch.tensor(k), C), atol=1e-12)


def test_dictionary_is_the_documented_draw_and_depends_on_seed_only() -> None:
    # QR of a (d, n) Gaussian from default_rng([seed, 7]); the columns, in order: a, b, c, d, then the 4 unseen.
    cfg = world(seed=3)
    dic = build_dictionary(cfg)
    n = cfg.directions_needed()
    q, _ = np.linalg.qr(np.random.default_rng([3, 7]).standard_normal((cfg.d, n)))
    e = torch.as_tensor(q.T)
    assert torch.allclose(dic.basis, e, atol=1e-12)
    assert torch.allclose(dic.a, math.sqrt(A2) * e[0:4], atol=1e-12)
    assert torch.allclose(dic.b, math.sqrt(B2) * e[4:8], atol=1e-12)
    assert torch.allclose(dic.c, math.sqrt(C2) * e[8:11], atol=1e-12)
    assert torch.allclose(dic.dl, math.sqrt(D2) * e[11:14], atol=1e-12)
    assert torch.allclose(torch.stack([dic.a_unseen, dic.b_unseen, dic.c_unseen, dic.d_unseen]),
                          torch.tensor([A2, B2, C2, D2]).sqrt()[:, None].double() * e[14:18], atol=1e-12)
    again = build_dictionary(world(seed=3))
    tensors = [f.name for f in fields(Dictionary) if f.name not in ("K", "shared_labels")]
    assert all(torch.equal(getattr(dic, name), getattr(again, name)) for name in tensors)
    other = build_dictionary(world(seed=4))
    assert not torch.allclose(dic.a, other.a)
    # The scenario list does not move the dictionary; without the scenarios there are no extra directions.
    bare = build_dictionary(world(seed=3, scenarios=[]))
    assert torch.equal(bare.a, dic.a) and torch.equal(bare.basis, dic.basis)
    assert bare.a_unseen is None and bare.b_unseen is None and bare.c_unseen is None and bare.d_unseen is None
    assert bare.b_switched is None
    # float32 configs give float32 tensors.
    single = build_dictionary(world(seed=3, dtype="float32"))
    assert single.a.dtype == single.basis.dtype == single.b_switched.dtype == single.c_unseen.dtype == torch.float32


def test_cross_overlap_gives_the_configured_cosine_between_concepts() -> None:
    cfg = world(within_cosine=0.5, cross_overlap=0.2)
    dic = build_dictionary(cfg)
    assert dic.basis.shape[0] == cfg.directions_needed() == 19  # one shared direction more
    for k in range(4):
        for j in range(4):
            for s in (1, -1):
                for t in (1, -1):
                    dot = float(dic.mu(k, s) @ dic.mu(j, t))
                    want = 1.0 if (k, s) == (j, t) else 0.5 if k == j and s == t * -1 else 0.2
                    assert dot == pytest.approx(want, abs=1e-12), (k, s, j, t)
    assert torch.allclose((dic.a * dic.a).sum(-1), torch.full((4,), 0.75, dtype=torch.float64), atol=1e-12)
    assert float((dic.a @ dic.b.T).abs().max()) < 1e-12 and float((dic.a @ dic.c.T).abs().max()) < 1e-12
    assert float((dic.a @ dic.a_unseen).abs().max()) < 1e-12  # the unseen concept shares no component
    rows = torch.cat([dic.a, dic.b, dic.c, dic.dl, dic.a_unseen[None], dic.d_unseen[None]])
    assert torch.allclose(rows @ dic.basis.T @ dic.basis, rows, atol=1e-12)
    # The documented draw: a_k = |a| (sqrt(1-rho) e_k + sqrt(rho) g), g the column after the label directions.
    q, _ = np.linalg.qr(np.random.default_rng([0, 7]).standard_normal((24, 19)))
    e, rho = torch.as_tensor(q.T), 0.2 / 0.75
    assert torch.allclose(dic.a, math.sqrt(0.75) * (math.sqrt(1 - rho) * e[0:4] + math.sqrt(rho) * e[14]), atol=1e-12)
    assert torch.allclose(dic.a_unseen, math.sqrt(0.75) * e[15], atol=1e-12)


def test_shared_labels_are_one_row() -> None:
    dic = build_dictionary(world(shared_labels=True))
    assert dic.c.shape == dic.dl.shape == (1, 24) and dic.basis.shape[0] == 2 * 4 + 2 + 4
    for k in range(3):
        for s in (1, -1):
            assert torch.equal(dic.q(k, s), dic.c[0] + s * dic.dl[0])
    assert float(dic.c_unseen @ dic.c[0]) == pytest.approx(0.0, abs=1e-12)


def test_projectors_split_the_space_into_dictionary_and_noise() -> None:
    dic = build_dictionary(world())
    P, S = dic.noise_projector(), dic.span_projector()
    eye = torch.eye(24, dtype=torch.float64)
    assert P.dtype == S.dtype == torch.float64
    assert torch.allclose(P @ P, P, atol=1e-12) and torch.allclose(S @ S, S, atol=1e-12)
    assert torch.allclose(P + S, eye, atol=1e-12) and torch.allclose(P @ S, 0 * eye, atol=1e-12)
    assert float(torch.trace(P)) == pytest.approx(24 - 18, abs=1e-9)
    rows = torch.cat([dic.a, dic.b, dic.c, dic.dl, dic.a_unseen[None], dic.b_unseen[None]])
    assert float((rows @ P).abs().max()) < 1e-12 and torch.allclose(rows @ S, rows, atol=1e-12)
    assert torch.allclose(dic.b_switched @ P, dic.b_switched, atol=1e-12)  # off the span: noise keeps it


# --- seeds --------------------------------------------------------------------------------------------------------


def test_generators_are_one_stream_per_seed_and_purpose() -> None:
    cfg = world(seed=5)
    draws = {p: torch.rand(4, generator=generator(cfg, p)) for p in (1, 2, 3, 10)}
    assert torch.equal(draws[2], torch.rand(4, generator=generator(cfg, 2)))  # deterministic
    assert len({tuple(v.tolist()) for v in draws.values()}) == 4  # distinct purposes, distinct streams
    assert not torch.equal(draws[2], torch.rand(4, generator=generator(world(seed=6), 2)))
    # The documented derivation (it fixes every published run's numbers): seed * 1_000_003 + purpose.
    assert [generator(cfg, p).initial_seed() for p in (1, 2, 13)] == [5_000_016, 5_000_017, 5_000_028]


def test_seed_configs_derive_each_seed_from_a_seed_sequence() -> None:
    cfg = world(seeds=3, seed=11, dictionary="per_seed", lr=0.7)
    subs = seed_configs(cfg)
    assert [c.seed for c in subs] == [int(np.random.SeedSequence(11, spawn_key=(i,)).generate_state(1)[0])
                                      for i in range(3)]
    assert all(c.seeds == 1 and c.dictionary == "shared" and c.lr == 0.7 and c.K == 3 for c in subs)


# --- specs --------------------------------------------------------------------------------------------------------


def test_skewed_prior_values() -> None:
    assert skewed_prior(4, 0.0) == (0.25, 0.25, 0.25, 0.25)
    assert skewed_prior(4, 0.7) == pytest.approx((0.7, 0.1, 0.1, 0.1), abs=1e-15)
    assert skewed_prior(2, 0.6) == pytest.approx((0.6, 0.4), abs=1e-15)
    assert skewed_prior(1, 0.5) == (1.0,) and skewed_prior(1, 0.0) == (1.0,)


def test_train_spec_carries_every_field() -> None:
    cfg = world(L=6, train_skew=0.5, sigma=0.07, polysemy_rate=0.3, cooccurrence="random", noise="orthogonal",
                both_signs=False, label_noise=0.1, demo_label_noise=0.2)
    assert train_spec(cfg) == PromptSpec(L=6, prior=(0.5, 0.25, 0.25), sigma=0.07, polysemy_rate=0.3,
                                         cooccurrence="random", noise="orthogonal", both_signs=False,
                                         label_noise=0.1, demo_label_noise=0.2)
    assert train_spec(world()) == PromptSpec(L=5, prior=(1 / 3,) * 3, sigma=0.03, polysemy_rate=0.1,
                                             cooccurrence="patterned")


def _changes(spec: PromptSpec, base: PromptSpec) -> dict:
    return {f.name: getattr(spec, f.name) for f in fields(PromptSpec) if getattr(spec, f.name) != getattr(base, f.name)}


def test_every_scenario_changes_exactly_its_fields() -> None:
    cfg = world(L=7, sigma=0.1, polysemy_rate=0.05, train_skew=0.5, context_strength=1.5)
    base = train_spec(cfg)
    context = dict(polysemous_query=True, context_strength=1.5)
    expected = {
        "length_short": {"L": 3}, "length_long": {"L": 14}, "length_long_4x": {"L": 28},
        "skewed_concepts": {"prior": (0.8, 0.1, 0.1)}, "uniform_concepts": {"prior": (1 / 3,) * 3},
        "switched_features": {"switched_semantics": True, "polysemy_rate": 0.0},
        "switched_cooccurrence": {"cooccurrence": "switched", "polysemy_rate": 0.1},
        "flipped_labels": {"flip_labels": True}, "polysemous_query": {"polysemous_query": True},
        "noise_x2": {"sigma": 0.2}, "noise_x5": {"sigma": 0.5}, "unseen_concept": {"unseen": True},
        "polysemous_in_context": {**context, "query_context": 1},
        "polysemous_in_context_adversarial": {**context, "query_context": -1},
    }
    assert set(expected) == set(SCENARIOS)  # a new scenario must be pinned here
    for name, want in expected.items():
        got = _changes(scenario_spec(cfg, name), base)
        assert got.keys() == want.keys(), name
        for field, value in want.items():
            if isinstance(value, float | tuple):
                assert got[field] == pytest.approx(value, abs=1e-12), (name, field)
            else:
                assert got[field] == value, (name, field)
    # Where the training spec already has the shift's value, the field does not change.
    assert _changes(scenario_spec(world(polysemy_rate=0.3), "switched_cooccurrence"), train_spec(world(
        polysemy_rate=0.3))) == {"cooccurrence": "switched"}
    assert _changes(scenario_spec(world(), "uniform_concepts"), train_spec(world())) == {}


@pytest.mark.parametrize("L,both_signs,short", [(7, True, 3), (3, True, 2), (3, False, 1), (9, False, 4)])
def test_length_short_keeps_enough_demonstrations(L: int, both_signs: bool, short: int) -> None:
    assert scenario_spec(world(L=L, both_signs=both_signs), "length_short").L == short


def test_unknown_scenario_names_every_accepted_one() -> None:
    with pytest.raises(ValueError) as err:
        scenario_spec(world(), "nope")
    assert str(err.value) == f"unknown OOD scenario 'nope'; accepted: {', '.join(SCENARIOS)}"


# --- words --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", ["patterned", "switched", "random"])
def test_allowed_partners_follow_the_rule(rule: str) -> None:
    for K, C in ((3, 4), (2, 5), (4, 4)):
        got = _allowed(C, K, rule)
        assert got.dtype == torch.bool and torch.equal(got, partners(rule, K, C).bool()), (K, C)


def _words(dic: Dictionary, spec: PromptSpec, k: torch.Tensor, seed: int = 0, s: torch.Tensor | None = None,
           exclude: torch.Tensor | None = None):
    if s is None:  # signs independent of the concepts
        s = torch.where(torch.rand(k.shape, generator=torch.Generator().manual_seed(99)) < 0.5, 1, -1)
    x, xi = sample_words(dic, spec, k, s, torch.Generator().manual_seed(seed), exclude)
    return x, xi, s


@pytest.mark.parametrize("rule", ["patterned", "switched", "random"])
def test_words_with_every_partner_on_are_exact_sums(rule: str) -> None:
    dic = build_dictionary(world())
    spec = PromptSpec(L=5, prior=(1 / 3,) * 3, sigma=0.0, polysemy_rate=1.0, cooccurrence=rule)
    k = torch.arange(600).reshape(2, 300) % 3  # any shape
    x, xi, s = _words(dic, spec, k)
    assert x.shape == (2, 300, 24) and torch.equal(xi, torch.zeros_like(x))
    A, B = coef(x, dic.a), coef(x, dic.b)
    on = partners(rule, 3, 4)[k]  # the concept's partners, all present at rate 1
    assert torch.allclose(A, onehot(k, 4) + on, atol=1e-12)  # a_j with coefficient exactly 1
    own = s[..., None] * onehot(k, 4)
    if rule == "random":  # partners' signs are +-1 at random: both occur for every partner concept
        assert torch.allclose(B.abs(), onehot(k, 4) + on, atol=1e-12) and torch.allclose(B * onehot(k, 4), own)
        plus = ((B > 0.5) & (on > 0)).sum((0, 1)).double() / on.sum((0, 1))
        assert all(within(float(f), 0.5, int(m)) for f, m in zip(plus, on.sum((0, 1)), strict=True))
    else:  # patterned: the partners share the word's sign; switched: they take the opposite one
        t = 1 if rule == "patterned" else -1
        assert torch.allclose(B, own + t * s[..., None] * on, atol=1e-12)
    # Nothing else: the word is in the span of its a's and b's.
    assert torch.allclose(x, A @ dic.a + B @ dic.b, atol=1e-12)


def test_words_without_partners_and_at_an_intermediate_rate() -> None:
    dic = build_dictionary(world())
    base = PromptSpec(L=5, prior=(1 / 3,) * 3, sigma=0.0, polysemy_rate=0.0, cooccurrence="random")
    k = torch.arange(3000) % 3
    x, _, s = _words(dic, base, k)
    assert torch.allclose(x, dic.a[k] + s[:, None] * dic.b[k], atol=1e-12)  # mu_k^s alone
    for rule in ("random", "patterned"):
        x, _, _ = _words(dic, replace(base, polysemy_rate=0.3, cooccurrence=rule), k)
        on = partners(rule, 3, 4)[k]
        present = (coef(x, dic.a) - onehot(k, 4)).round()
        assert torch.equal(present * (1 - on), torch.zeros_like(present))  # only allowed partners
        per_concept = (present * on).sum(0) / on.sum(0)  # each partner concept at the rate, word by word
        assert all(within(float(f), 0.3, int(m)) for f, m in zip(per_concept, on.sum(0), strict=True) if m > 0)


def test_exclude_switches_one_partner_off() -> None:
    dic = build_dictionary(world())
    spec = PromptSpec(L=5, prior=(1 / 3,) * 3, sigma=0.0, polysemy_rate=1.0, cooccurrence="random")
    k = torch.arange(30) % 3
    excl = (k + 1) % 4  # a partner of each word
    excl[::5] = -1  # -1: none
    x, _, _ = _words(dic, spec, k, exclude=excl)
    want = onehot(k, 4) + partners("random", 3, 4)[k]
    gone = excl >= 0
    want[gone, excl[gone]] = 0
    assert torch.allclose(coef(x, dic.a), want, atol=1e-12)


def test_unseen_and_switched_semantic_words() -> None:
    dic = build_dictionary(world())
    spec = PromptSpec(L=5, prior=(1 / 3,) * 3, sigma=0.0, polysemy_rate=0.0, cooccurrence="patterned")
    k = torch.arange(12) % 3
    x, _, s = _words(dic, replace(spec, switched_semantics=True), k)
    assert torch.allclose(x, dic.a[k] + s[:, None] * dic.b_switched[k], atol=1e-12)
    ku = torch.full((12,), 3)
    x, _, s = _words(dic, replace(spec, unseen=True), ku)
    assert torch.allclose(x, dic.a_unseen + s[:, None] * dic.b_unseen, atol=1e-12)
    # The unseen concept's words take any trained concept as partner (patterned: with the word's sign).
    x, _, s = _words(dic, replace(spec, unseen=True, polysemy_rate=1.0), ku)
    assert torch.allclose(x, dic.a_unseen + s[:, None] * dic.b_unseen + dic.a.sum(0) + s[:, None] * dic.b.sum(0),
                          atol=1e-12)


@pytest.mark.parametrize("noise", ["isotropic", "orthogonal"])
def test_word_noise(noise: str) -> None:
    dic = build_dictionary(world(d=48))  # 30 of 48 dimensions are off the dictionary
    spec = PromptSpec(L=5, prior=(1 / 3,) * 3, sigma=0.2, polysemy_rate=0.0, cooccurrence="patterned", noise=noise)
    k = torch.arange(2000) % 3
    x, xi, s = _words(dic, spec, k)
    assert xi.dtype == torch.float64 and xi.shape == x.shape
    assert torch.allclose(x - xi, dic.a[k] + s[:, None] * dic.b[k], atol=1e-12)  # x = mu + xi
    in_span = xi @ dic.basis.T
    if noise == "isotropic":  # N(0, sigma^2 I): every coordinate, the dictionary's included
        assert float(xi.std()) == pytest.approx(0.2, rel=0.02)
        assert float(in_span.std()) == pytest.approx(0.2, rel=0.03)
    else:  # P_perp g: nothing along the dictionary, sigma^2 (48 - 18) / 48 per coordinate on average
        assert float(in_span.abs().max()) < 1e-12
        assert float(xi.pow(2).mean()) == pytest.approx(0.04 * 30 / 48, rel=0.03)
        assert torch.allclose(xi @ dic.noise_projector(), xi, atol=1e-12)


def test_words_are_deterministic_in_the_generator() -> None:
    dic = build_dictionary(world())
    spec = PromptSpec(L=5, prior=(1 / 3,) * 3, sigma=0.1, polysemy_rate=0.4, cooccurrence="random")
    k = torch.arange(60) % 4  # irrelevant concept 3 included
    one, two, other = _words(dic, spec, k, 1), _words(dic, spec, k, 1), _words(dic, spec, k, 2)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])
    assert not torch.allclose(one[0], other[0])


# --- labels -------------------------------------------------------------------------------------------------------


def test_labels_read_the_label_table() -> None:
    dic = build_dictionary(world(K=2, K_irr=2, scenarios=["unseen_concept"]))
    k = torch.tensor([[0, 1, 1], [1, 0, 0]])
    s = torch.tensor([[1, -1, 1], [-1, -1, 1]])
    want = torch.stack([torch.stack([dic.c[i] + j * dic.dl[i] for i, j in zip(r, t, strict=True)])
                        for r, t in zip(k.tolist(), s.tolist(), strict=True)])
    assert torch.allclose(labels(dic, k, s), want, atol=0)
    unseen = labels(dic, torch.full((2, 3), 2), s, unseen=True)
    assert torch.allclose(unseen, dic.c_unseen + s[..., None] * dic.d_unseen, atol=0)
    # Shared labels: one pair for every concept, the unseen one included.
    shared = build_dictionary(world(K=2, K_irr=2, shared_labels=True, scenarios=["unseen_concept"]))
    want = shared.c[0] + s[..., None] * shared.dl[0]
    assert torch.equal(labels(shared, k, s), want)
    assert torch.equal(labels(shared, torch.full((2, 3), 2), s, unseen=True), want)
    # K = 1 with per-concept labels: the table has one row, as with shared labels, but the unseen concept still
    # gets its own fresh pair (a row count cannot tell the two apart).
    single = build_dictionary(world(K=1, K_irr=2, scenarios=["unseen_concept"]))
    assert single.c.shape[0] == 1 and not single.shared_labels
    fresh = labels(single, torch.full((2, 3), 1), s, unseen=True)
    assert torch.equal(fresh, single.c_unseen + s[..., None] * single.d_unseen)
    assert not torch.allclose(fresh, labels(single, torch.zeros_like(k), s))


# --- prompts ------------------------------------------------------------------------------------------------------


def clean_spec(**kw) -> PromptSpec:
    """Noise-free words without partners: every demonstration is mu_k^s exactly."""
    return PromptSpec(**{**dict(L=5, prior=(1 / 3,) * 3, sigma=0.0, polysemy_rate=0.0, cooccurrence="patterned"),
                         **kw})


def decode(dic: Dictionary, words: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(concept, sign) of noise-free words mu_k^s: the one a_k with coefficient 1, and the coefficient on b_k."""
    A = coef(words, dic.a)
    k = A.argmax(-1)
    assert torch.allclose(A, onehot(k, dic.C), atol=1e-12)
    s = coef(words, dic.b).gather(-1, k[..., None])[..., 0]
    assert torch.allclose(s.abs(), torch.ones_like(s), atol=1e-12)
    return k, s.round().long()


def label_signs(dic: Dictionary, y: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Sign of each label q_k^s on its concept's d_k (checking that y is exactly q_k^s)."""
    s = coef(y, dic.dl).gather(-1, k[..., None])[..., 0].round()
    assert torch.allclose(y, dic.c[k] + s[..., None] * dic.dl[k], atol=1e-12)
    return s.long()


def decode_sign(B: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The coefficient on b_k of each query (+-1), as the target's float."""
    return B.gather(-1, k[..., None])[..., 0].round()


def test_prompts_decode_to_their_concept_signs_labels_and_target() -> None:
    dic = build_dictionary(world())
    p = sample_prompts(dic, clean_spec(), 2, 300, torch.Generator().manual_seed(0))
    S, n, L, d = 2, 300, 5, 24
    assert (p.x.shape, p.y.shape, p.xq.shape, p.target.shape, p.same.shape, p.concept.shape, p.xi.shape) == (
        (S, n, L, d), (S, n, L, d), (S, n, d), (S, n), (S, n, L), (S, n), (S, n, L, d))
    assert p.target.dtype == torch.float64 and p.same.dtype == torch.bool and p.concept.dtype == torch.long
    kd, sd = decode(dic, p.x)
    kq, sq = decode(dic, p.xq)
    assert torch.equal(kd, p.concept[..., None].expand(S, n, L)) and torch.equal(kq, p.concept)
    assert torch.equal(label_signs(dic, p.y, kd), sd)  # y_l = q_k^{s_l}
    assert torch.equal(p.target, sq.double())  # the answer is the query's sign
    assert torch.equal(p.same, sd == sq[..., None])
    assert torch.equal(p.xi, torch.zeros_like(p.x))
    assert ((sd == 1).any(-1) & (sd == -1).any(-1)).all()  # both_signs: every prompt shows both senses
    assert set(p.concept.unique().tolist()) == {0, 1, 2} and not torch.equal(p.concept[0], p.concept[1])
    assert within(float((sd == 1).double().mean()), 0.5, S * n * L) and within(float((sq == 1).double().mean()),
                                                                              0.5, S * n)


@pytest.mark.parametrize("L", [2, 4])
def test_both_signs_flips_one_demonstration_of_one_sided_prompts(L: int) -> None:
    dic = build_dictionary(world())
    shown = {}
    for both in (True, False):
        p = sample_prompts(dic, clean_spec(L=L, both_signs=both), 1, 1000, torch.Generator().manual_seed(1))
        _, s = decode(dic, p.x)
        one_sided = (s == s[..., :1]).all(-1)
        shown[both] = float(one_sided.double().mean())
    assert shown[True] == 0.0
    assert within(shown[False], 2 / 2**L, 1000)  # control: without both_signs, 2 / 2^L of prompts are one-sided


def test_flipped_labels_and_label_noise() -> None:
    dic = build_dictionary(world())
    n = 2000
    flipped = sample_prompts(dic, clean_spec(flip_labels=True), 2, n, torch.Generator().manual_seed(2))
    kd, sd = decode(dic, flipped.x)
    _, sq = decode(dic, flipped.xq)
    assert torch.equal(label_signs(dic, flipped.y, kd), -sd) and torch.equal(flipped.target, -sq.double())
    noisy = sample_prompts(dic, clean_spec(label_noise=0.2, demo_label_noise=0.3), 2, n,
                           torch.Generator().manual_seed(3))
    kd, sd = decode(dic, noisy.x)
    _, sq = decode(dic, noisy.xq)
    demo_flip = label_signs(dic, noisy.y, kd) != sd
    target_flip = noisy.target != sq.double()
    assert within(float(demo_flip.double().mean()), 0.3, demo_flip.numel())
    assert within(float(target_flip.double().mean()), 0.2, target_flip.numel())
    assert not torch.equal(demo_flip[0], demo_flip[1]) and not torch.equal(target_flip[0], target_flip[1])
    assert torch.equal(noisy.same, sd == sq[..., None])  # same: the words' signs, not the noisy labels
    # label_noise flips the target only; demo_label_noise the demonstrations' labels only.
    only_target = sample_prompts(dic, clean_spec(label_noise=0.2), 1, 500, torch.Generator().manual_seed(4))
    kd, sd = decode(dic, only_target.x)
    assert torch.equal(label_signs(dic, only_target.y, kd), sd)
    only_demo = sample_prompts(dic, clean_spec(demo_label_noise=0.3), 1, 500, torch.Generator().manual_seed(4))
    _, sq = decode(dic, only_demo.xq)
    assert torch.equal(only_demo.target, sq.double())


def test_prior_sets_the_concept_frequencies() -> None:
    dic = build_dictionary(world())
    n = 3000
    p = sample_prompts(dic, clean_spec(prior=skewed_prior(3, 0.7)), 2, n, torch.Generator().manual_seed(5))
    freq = torch.bincount(p.concept.flatten(), minlength=3).double() / (2 * n)
    assert within(float(freq[0]), 0.7, 2 * n) and all(within(float(f), 0.15, 2 * n) for f in freq[1:])
    assert torch.equal(decode(dic, p.xq)[0], p.concept)


def test_polysemous_query_adds_one_other_concept_once() -> None:
    dic = build_dictionary(world(K=4, K_irr=0, scenarios=[]))
    # Every allowed partner on (patterned rule): the second concept k' may be a partner too, yet weighs 1.
    spec = PromptSpec(L=5, prior=(0.25,) * 4, sigma=0.0, polysemy_rate=1.0, cooccurrence="patterned",
                      polysemous_query=True)
    p = sample_prompts(dic, spec, 2, 800, torch.Generator().manual_seed(6))
    k = p.concept
    on = partners("patterned", 4, 4)[k]
    A, B = coef(p.xq, dic.a), coef(p.xq, dic.b)
    extra = (A - onehot(k, 4) - on).round()  # k' where it is not a partner anyway
    assert torch.allclose(A, onehot(k, 4) + on + extra, atol=1e-12)
    assert set(extra.sum(-1).unique().tolist()) == {0.0, 1.0}  # k' is a partner in some prompts, not in others
    assert float(A.max()) == pytest.approx(1.0, abs=1e-12)  # ... and every concept weighs 1 at most: k' once
    assert torch.equal(decode_sign(B, k), p.target)
    # Demonstrations are unaffected: mu_k^s plus every partner with the word's sign.
    Ad = coef(p.x, dic.a)
    assert torch.allclose(Ad, (onehot(k, 4) + on)[:, :, None].expand_as(Ad), atol=1e-12)
    # With partners off, k' is readable everywhere: never k, every other concept, its sign +-1 at random.
    p0 = sample_prompts(dic, replace(spec, polysemy_rate=0.0), 2, 800, torch.Generator().manual_seed(7))
    A0, B0 = coef(p0.xq, dic.a), coef(p0.xq, dic.b)
    k2 = (A0 - onehot(p0.concept, 4)).argmax(-1)
    assert torch.allclose(A0, onehot(p0.concept, 4) + onehot(k2, 4), atol=1e-12)
    assert (k2 != p0.concept).all()
    pairs = set(zip(p0.concept.flatten().tolist(), k2.flatten().tolist(), strict=True))
    assert pairs == {(i, j) for i in range(4) for j in range(4) if i != j}
    t2 = B0.gather(-1, k2[..., None])[..., 0]
    assert torch.allclose(t2.abs(), torch.ones_like(t2)) and within(float((t2 > 0).double().mean()), 0.5, 1600)
    assert torch.equal(decode_sign(B0, p0.concept), p0.target)
    assert not torch.equal(t2[0], t2[1]) and not torch.equal(k2[0], k2[1])


def test_unseen_prompts_use_the_fresh_directions() -> None:
    for shared in (False, True):
        dic = build_dictionary(world(shared_labels=shared))
        p = sample_prompts(dic, clean_spec(unseen=True), 2, 50, torch.Generator().manual_seed(8))
        assert torch.equal(p.concept, torch.full((2, 50), 3))
        s = coef(p.x, dic.b_unseen[None])[..., 0].round()
        assert torch.allclose(p.x, dic.a_unseen + s[..., None] * dic.b_unseen, atol=1e-12)
        sq = coef(p.xq, dic.b_unseen[None])[..., 0].round()
        assert torch.allclose(p.xq, dic.a_unseen + sq[..., None] * dic.b_unseen, atol=1e-12)
        assert torch.equal(p.target, sq)
        c, d = (dic.c[0], dic.dl[0]) if shared else (dic.c_unseen, dic.d_unseen)
        assert torch.allclose(p.y, c + s[..., None] * d, atol=1e-12)


def test_prompts_are_deterministic_in_the_generator() -> None:
    dic = build_dictionary(world())
    spec = PromptSpec(L=3, prior=(0.5, 0.25, 0.25), sigma=0.1, polysemy_rate=0.3, cooccurrence="random",
                      label_noise=0.2, demo_label_noise=0.2, polysemous_query=True, query_context=1,
                      context_strength=0.5)
    one, two, other = (sample_prompts(dic, spec, 2, 40, torch.Generator().manual_seed(seed)) for seed in (9, 9, 10))
    for f in fields(Prompts):
        assert torch.equal(getattr(one, f.name), getattr(two, f.name)), f.name
    assert not torch.equal(one.x, other.x) and not torch.equal(one.target, other.target)


def test_prompts_index_seeds_and_cat() -> None:
    dic = build_dictionary(world())
    p = sample_prompts(dic, clean_spec(sigma=0.1), 2, 7, torch.Generator().manual_seed(11))
    idx = torch.tensor([[6, 0, 3], [1, 1, 5]])
    sub = p.index(idx)
    for f in fields(Prompts):
        full = getattr(p, f.name)
        want = torch.stack([full[s][idx[s]] for s in range(2)])
        assert torch.equal(getattr(sub, f.name), want), f.name
    second = p.seeds(slice(1, 2))
    for f in fields(Prompts):
        full = getattr(p, f.name)
        assert torch.equal(getattr(second, f.name), full[1:2]), f.name
        assert getattr(second, f.name).data_ptr() == full[1].data_ptr()  # a view
    joined = Prompts.cat([p.seeds(slice(0, 1)), second, second])
    for f in fields(Prompts):
        full = getattr(p, f.name)
        assert torch.equal(getattr(joined, f.name), torch.cat([full, full[1:2]])), f.name
    # .to moves every field (the meta device: no GPU needed to see that nothing stays behind on the CPU).
    moved = p.to("meta")
    for f in fields(Prompts):
        assert getattr(moved, f.name).device.type == "meta" and getattr(moved, f.name).shape == getattr(p, f.name).shape
    assert all(getattr(p.to("cpu"), f.name) is getattr(p, f.name) for f in fields(Prompts))


def reference_words(dic: Dictionary, spec: PromptSpec, k: torch.Tensor, s: torch.Tensor, gen: torch.Generator,
                    exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The word sampler written directly from the equations, every word summed in full (the implementation before
    sample_words skipped the words without co-occurring features and fused the noise scale into the draw): the
    same random calls in the same order, so the same stream."""
    C = dic.C
    allowed = _allowed(C, dic.K, spec.cooccurrence)[k]
    if exclude is not None:
        allowed = allowed & (torch.arange(C) != exclude[..., None])
    z = (torch.rand(*k.shape, C, generator=gen) < spec.polysemy_rate) & allowed
    if spec.cooccurrence == "patterned":
        t = s[..., None].expand(*k.shape, C)
    elif spec.cooccurrence == "switched":
        t = -s[..., None].expand(*k.shape, C)
    else:
        t = torch.where(torch.rand(*k.shape, C, generator=gen) < 0.5, 1, -1)
    zt = z.to(dic.a.dtype)
    cooc = zt @ dic.a + (zt * t.to(dic.a.dtype)) @ dic.b
    sf = s[..., None].to(dic.a.dtype)
    if spec.unseen:
        base = dic.a_unseen + sf * dic.b_unseen
    elif spec.switched_semantics:
        base = dic.a[k] + sf * dic.b_switched[k]
    else:
        table = torch.stack([dic.a - dic.b, dic.a + dic.b], 1).flatten(0, 1)
        base = torch.nn.functional.embedding(2 * k + (s > 0).long(), table)
    xi = spec.sigma * torch.randn(*k.shape, dic.a.shape[1], generator=gen, dtype=dic.a.dtype)
    if spec.noise == "orthogonal":
        xi = xi @ dic.noise_projector()
    return (base + cooc) + xi, xi


@pytest.mark.parametrize("kw", [
    {"polysemy_rate": 0.3},
    {"cooccurrence": "random", "polysemy_rate": 0.6, "dtype": "float64"},
    {"noise": "orthogonal", "polysemy_rate": 1.0, "cross_overlap": 0.3},
    {"sigma": 0.0, "polysemy_rate": 0.5, "shared_labels": True},
])
def test_word_and_prompt_samplers_equal_the_direct_formulas_bit_for_bit(kw, monkeypatch) -> None:
    """The fast sampler (products only on words with a co-occurring feature, the noise added in place) gives
    exactly the words of the direct formulas, for the training rule and every scenario's spec (switched
    co-occurrence, unseen concept, switched semantics, polysemous query), from the same generator state: the
    random streams, and so every number drawn from a seed, are those of the direct implementation."""
    config = SyntheticConfig(K=3, K_irr=2, d=40, L=4, scenarios=[s for s in SCENARIOS if s != "uniform_concepts"],
                             **kw)
    dic = build_dictionary(config)
    k = torch.randint(3, (2, 60, 5), generator=torch.Generator().manual_seed(1))
    s = torch.where(torch.rand(2, 60, 5, generator=torch.Generator().manual_seed(2)) < 0.5, 1, -1)
    exclude = torch.where(k == 0, 1, -1)
    specs = [train_spec(config)] + [scenario_spec(config, name) for name in config.scenarios]
    specs += [replace(specs[0], cooccurrence="switched")]
    for spec in specs:
        for ex in (None, exclude):
            got = sample_words(dic, spec, k, s, torch.Generator().manual_seed(3), ex)
            want = reference_words(dic, spec, k, s, torch.Generator().manual_seed(3), ex)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), spec
    # Whole prompts: every field equals the prompts assembled from the reference words (the same draws around).
    fast = [sample_prompts(dic, spec, 2, 50, torch.Generator().manual_seed(4)) for spec in specs]
    monkeypatch.setattr(data_module, "sample_words", reference_words)
    for spec, got_prompts in zip(specs, fast, strict=True):
        slow = sample_prompts(dic, spec, 2, 50, torch.Generator().manual_seed(4))
        assert all(torch.equal(getattr(got_prompts, f.name), getattr(slow, f.name)) for f in fields(Prompts)), spec
    # Control: the words do depend on the co-occurring features (a sampler that dropped them would fail above).
    if config.polysemy_rate > 0:
        bare = replace(specs[0], polysemy_rate=0.0)
        assert not torch.equal(sample_words(dic, bare, k, s, torch.Generator().manual_seed(3))[0],
                               reference_words(dic, specs[0], k, s, torch.Generator().manual_seed(3))[0])
