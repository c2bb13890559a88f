"""synthetic/: data geometry, model equations, config validation, mechanics (determinism, resume, CLI, sweep)."""

from __future__ import annotations

import csv
import math
import time

import numpy as np
import pytest
import torch

from mcicl.core.configuration import ConfigError, from_dict
from mcicl.core.io import read_jsonl
from mcicl.core.jobs import DemoContext
from mcicl.core.runs import RunFolder
from mcicl.core.vectors import LabelledVectors
from mcicl.synthetic.config import SyntheticConfig
from mcicl.synthetic.convergence import crossing_step
from mcicl.synthetic.data import build_dictionary, sample_prompts, sample_words, scenario_spec, train_spec
from mcicl.synthetic.export import learned_vectors
from mcicl.synthetic.model import OneLayerTransformer, logistic_loss
from mcicl.synthetic.sweep import run_sweep
from mcicl.synthetic.train import build_world, demo_stage, train
from tests.conftest import mcicl_cli

TINY = dict(K=2, K_irr=1, d=16, L=4, n_train=64, n_test=200, n_test_ood=50, steps=20, eval_every=5, ood_every=10,
            checkpoint_every=10, scenarios=["noise_x2", "flipped_labels"], n_features=5, seeds=2)


def tiny(**kw) -> SyntheticConfig:
    return from_dict(SyntheticConfig, {**TINY, **kw})


def _cos(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))


@pytest.mark.parametrize("within,cross", [(0.3, 0.0), (0.7, 0.2)])
def test_sampled_words_have_configured_geometry(within: float, cross: float) -> None:
    cfg = SyntheticConfig(within_cosine=within, cross_overlap=cross, polysemy_rate=0.0, sigma=0.01, d=64)
    dic = build_dictionary(cfg)
    # The dictionary itself: unit words, exact cosines.
    assert torch.allclose(dic.mu(0, 1).norm(), torch.tensor(1.0), atol=1e-5)
    assert math.isclose(float(_cos(dic.mu(1, 1), dic.mu(1, -1))), within, abs_tol=1e-5)
    assert math.isclose(float(_cos(dic.mu(0, 1), dic.mu(2, -1))), cross, abs_tol=1e-5)
    # Sampled words (with noise): mean cosines within tolerance.
    gen = torch.Generator().manual_seed(0)
    spec = train_spec(cfg)
    n = 300
    k = torch.zeros(n, dtype=torch.long)
    plus, _ = sample_words(dic, spec, k, torch.ones(n, dtype=torch.long), gen)
    minus, _ = sample_words(dic, spec, k, -torch.ones(n, dtype=torch.long), gen)
    other, _ = sample_words(dic, spec, k + 1, torch.ones(n, dtype=torch.long), gen)
    assert abs(float(_cos(plus, minus).mean()) - within) < 0.03
    assert abs(float(_cos(plus, other).mean()) - cross) < 0.03
    assert float(_cos(plus, plus.roll(1, 0)).mean()) > 0.9  # same concept and sign: nearly parallel


def test_prompts_follow_the_spec() -> None:
    cfg = SyntheticConfig(seeds=2)
    dic = build_dictionary(cfg)
    p = sample_prompts(dic, train_spec(cfg), 2, 500, torch.Generator().manual_seed(1))
    assert p.x.shape == (2, 500, cfg.L, cfg.d) and p.xq.shape == (2, 500, cfg.d)
    assert p.same.any(-1).all() and (~p.same).any(-1).all()  # both_signs: each prompt shows both senses
    # Labels are q_{k*}^{s_l}: +d_k component sign agrees with the demonstration's sign vs the query's.
    k = p.concept[..., None].expand_as(p.same)
    dk = dic.dl[k]
    label_sign = torch.sign((p.y * dk).sum(-1))
    query_sign = torch.sign((p.xq * dic.b[p.concept]).sum(-1))
    assert torch.equal(label_sign == query_sign[..., None], p.same)
    assert torch.equal(p.target, query_sign)
    flipped = sample_prompts(dic, scenario_spec(cfg, "flipped_labels"), 1, 300, torch.Generator().manual_seed(1))
    q_sign = torch.sign((flipped.xq * dic.b[flipped.concept]).sum(-1))
    assert torch.equal(flipped.target, -q_sign)  # the answer follows the flipped demonstrations
    longp = sample_prompts(dic, scenario_spec(cfg, "length_long_4x"), 1, 10, torch.Generator().manual_seed(1))
    assert longp.x.shape[2] == 4 * cfg.L


def _model64(value: str = "label") -> tuple[OneLayerTransformer, object]:
    cfg = SyntheticConfig(K=2, K_irr=1, d=14, L=3, m=3, seeds=2, dtype="float64", value=value, sigma0=0.3,
                          scenarios=[])
    dic = build_dictionary(cfg)
    model = OneLayerTransformer(cfg, dic, torch.Generator().manual_seed(0))
    prompts = sample_prompts(dic, train_spec(cfg), 2, 5, torch.Generator().manual_seed(2))
    return model, prompts


@pytest.mark.parametrize("value", ["label", "projected"])
def test_gradients_match_finite_differences(value: str) -> None:
    model, p = _model64(value)
    names = [n for n, _ in model.named_parameters()]
    params = tuple(t.detach().clone().requires_grad_(True) for _, t in model.named_parameters())

    def loss(*ps):
        out = torch.func.functional_call(model, dict(zip(names, ps, strict=True)), (p.x, p.y, p.xq))
        return logistic_loss(out.f, p.target).mean()

    assert torch.autograd.gradcheck(loss, params, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_zero_query_matrix_gives_uniform_attention() -> None:
    model, p = _model64()
    with torch.no_grad():
        model.W_Q.zero_()
    out = model.run(p)
    assert torch.allclose(out.alpha, torch.full_like(out.alpha, 1 / p.x.shape[2]), atol=1e-12)
    # and h is then the plain mean of the labels
    assert torch.allclose(out.h, p.y.mean(2), atol=1e-12)


@pytest.mark.parametrize("field,value,accepted", [
    ("d", 10, "an integer >= "), ("L", 0, "an integer >= 1"), ("sigma", -0.1, "a number >= 0"),
    ("lr", 0.0, "a number > 0"), ("scenarios", ["nope"], "names from length_short"),
    ("within_cosine", 1.0, "[0, 1)"), ("cross_overlap", 0.9, "(1+within_cosine)/2"),
    ("value", "both", "'label' or 'projected'"),
])
def test_bad_configs_are_clear_errors(field: str, value, accepted: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(SyntheticConfig, {field: value})
    assert err.value.field == field and accepted in str(err.value)


def test_training_is_deterministic_and_seeds_differ(tmp_path) -> None:

    cfg = tiny()
    train(cfg, RunFolder.create(tmp_path / "a", "t"), figures=False)
    train(cfg, RunFolder.create(tmp_path / "b", "t"), figures=False)
    a, b = read_jsonl(tmp_path / "a" / "metrics.jsonl"), read_jsonl(tmp_path / "b" / "metrics.jsonl")
    assert a == b
    losses = a[-1]["test"]["logistic_loss"]
    assert losses[0] != losses[1]  # the two seeds are different models
    assert a[-1]["test"]["logistic_loss"] != a[0]["test"]["logistic_loss"]  # it trained


def test_resume_gives_the_uninterrupted_numbers(tmp_path) -> None:
    full = mcicl_cli("synthetic", "train", "--out", str(tmp_path / "full"), "--quiet",
                     *sum((["--set", f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"]
                           for k, v in TINY.items()), []))
    assert full.returncode == 0, full.stderr

    cfg = tiny(steps=10)
    run = RunFolder.create(tmp_path / "part", "synthetic train")
    train(cfg, run, figures=False)  # interrupted at step 10 (its last checkpoint)
    res = mcicl_cli("synthetic", "train", "--out", str(tmp_path / "part"), "--resume", "--steps", "20", "--quiet")
    assert res.returncode == 0, res.stderr
    assert read_jsonl(tmp_path / "part" / "metrics.jsonl") == read_jsonl(tmp_path / "full" / "metrics.jsonl")
    assert (tmp_path / "part" / "figures" / "dynamics.png").is_file()
    # A run is never rewound, and --resume cannot silently drop config changes.
    with pytest.raises(ValueError, match="below the checkpointed step 20"):
        train(cfg, RunFolder.create(tmp_path / "part", "synthetic train", resume=True), resume=True)
    res = mcicl_cli("synthetic", "train", "--out", str(tmp_path / "part"), "--resume", "--set", "lr=0.5",
                    "--seeds", "3", "--quiet")
    assert res.returncode == 2 and "only --steps may change" in res.stderr and "lr=0.5 (run: " in res.stderr
    assert read_jsonl(tmp_path / "part" / "metrics.jsonl") == read_jsonl(tmp_path / "full" / "metrics.jsonl")


def test_dictionary_and_scenario_sets_do_not_depend_on_the_scenario_list() -> None:

    every, few = build_world(tiny(scenarios=["noise_x2", "unseen_concept"])), build_world(tiny(scenarios=["noise_x2"]))
    assert torch.equal(every.dictionary.a, few.dictionary.a) and torch.equal(every.dictionary.b, few.dictionary.b)
    assert torch.equal(every.train.x, few.train.x)
    assert torch.equal(every.ood["noise_x2"].xq, few.ood["noise_x2"].xq)


def test_crossing_step_stays_between_evaluations() -> None:

    steps, err = np.array([0, 50, 100]), np.array([0.3, 0.005, 0.0])
    assert crossing_step(steps, err, 0.001, floor=0.5 / 400) <= 100  # floor above the level: no overshoot
    assert 50 < crossing_step(steps, err, 0.001, floor=0.5 / 10_000) < 100


def test_cli_errors_and_replot(tmp_path) -> None:
    bad = mcicl_cli("synthetic", "train", "--out", str(tmp_path / "bad"), "--set", "sigma=-1", "--quiet")
    assert bad.returncode == 2 and "sigma=-1.0" in bad.stderr and "a number >= 0" in bad.stderr
    bad = mcicl_cli("synthetic", "sweep", "--grid", "nonsense=1,2", "--out", str(tmp_path / "bad2"), "--quiet")
    assert bad.returncode == 2 and "nonsense" in bad.stderr

    run = RunFolder.create(tmp_path / "r", "t")
    train(tiny(), run, figures=False)
    assert not (run.figures / "ood.png").exists()
    out = mcicl_cli("synthetic", "plot", str(run.path))
    assert out.returncode == 0, out.stderr
    for name in ("dynamics", "ood", "convergence", "decomposition"):
        assert (run.figures / f"{name}.png").stat().st_size > 10_000


def test_sweep_writes_table_and_heatmap(tmp_path) -> None:

    run = RunFolder.create(tmp_path / "sw", "t")
    rows = run_sweep(tiny(seeds=1, steps=10), {"within_cosine": [0.2, 0.6], "cross_overlap": [0.0]}, run)
    assert len(rows) == 2
    with open(run.path / "sweep.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [float(r["within_cosine"]) for r in table] == [0.2, 0.6]
    for col in ("test_zero_one", "ood.noise_x2.test_zero_one", "ood.flipped_labels.test_zero_one"):
        assert all(0 <= float(r[col]) <= 1 for r in table)
    assert (run.figures / "sweep.png").is_file()
    with pytest.raises(ConfigError):
        run_sweep(tiny(), {"within_cosine": [2.0]}, RunFolder.create(tmp_path / "sw2", "t"))


def test_exports_are_labelled_vectors(tmp_path) -> None:

    cfg = tiny(K=3, d=20)
    train(cfg, RunFolder.create(tmp_path / "r", "t"), figures=False)
    feats = LabelledVectors.load(tmp_path / "r" / "features.npz")
    assert feats.vectors.shape == (3 * 2 * cfg.n_features, cfg.d)
    assert set(feats.labels) == {"c0", "c1", "c2"} and set(feats.signs.tolist()) == {1, -1}
    assert feats.meta["config"]["within_cosine"] == cfg.within_cosine
    poly = LabelledVectors.load(tmp_path / "r" / "features.polysemy.npz")
    assert set(poly.labels) == {"c0|c1", "c0|c2", "c1|c2"}
    dic = LabelledVectors.load(tmp_path / "r" / "dictionary.npz")
    assert dic.vectors.shape == (6, cfg.d) and list(dic.signs) == [1, -1] * 3
    cos = dic.vectors[0] @ dic.vectors[1] / (np.linalg.norm(dic.vectors[0]) * np.linalg.norm(dic.vectors[1]))
    assert abs(cos - cfg.within_cosine) < 1e-5
    q = learned_vectors(tmp_path / "r", "query", seed_index=1)
    k = learned_vectors(tmp_path / "r", "key")
    assert q.vectors.shape == feats.vectors.shape and q.meta["space"] == "learned_query"
    assert not np.allclose(q.vectors, k.vectors)
    with pytest.raises(ValueError, match="seed_index=5"):
        learned_vectors(tmp_path / "r", "query", seed_index=5)


def test_demo_stage_small(tmp_path) -> None:


    run = RunFolder.create(tmp_path / "demo", "demo")
    start = time.process_time()
    out = demo_stage(DemoContext(run, model="default", seed=0, small=True, quiet=True))
    assert time.process_time() - start < 30  # target <= 15 s on 2 idle cores
    assert out["run_dir"] == str(run.path / "synthetic")
    assert (run.path / "synthetic" / "summary.json").is_file()
    assert (run.path / "synthetic" / "figures" / "ood.png").is_file()
    assert set(out["ood_test_zero_one"]) == set(SyntheticConfig().scenarios)
    assert out["test_zero_one"] <= 0.05
