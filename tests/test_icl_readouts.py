"""The ICL readouts and their statistics against hand computations: the in-prompt states and attention of a tiny
random-weight encoder against a bare forward pass, the vote and kernel readouts by hand, the near-tie rule for beta,
the cluster bootstrap and the episode sign-flip test (exact cases and enumeration), the random-weight baseline."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from mcicl.probing.extract import ExtractionConfig
from mcicl.probing.icl.episodes import EpisodeConfig
from mcicl.probing.icl.in_prompt import label_prompt, prompt_spans, read_prompts
from mcicl.probing.icl.readout import attention_readout, state_probabilities, vote_probabilities
from mcicl.probing.icl.run import IclConfig, icl_probe
from mcicl.probing.icl.stats import bootstrap_accuracy, choose_near_median, cluster_bootstrap, sign_flip_p
from mcicl.probing.icl.tasks import IclPrompt, PromptTemplate
from mcicl.probing.models import load_model, reinitialised_model
from mcicl.probing.tiny import build_tiny_model
from tests.icl_fixtures import SMALL_CONCEPTS, small_concept_set


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    words = [w for ws in SMALL_CONCEPTS.values() for w in ws]
    folder = build_tiny_model("bert", tmp_path_factory.mktemp("tiny") / "bert", corpus=[" ".join(words)])
    return load_model(str(folder))


def _prompt(demos, query="dog", concept="animal", labels=("animal", "vehicle"), gold="animal"):
    return IclPrompt("in_distribution", len(demos), 0, "animal|vehicle", labels, tuple(demos), query, concept, gold,
                     tuple("animal" if lab == "animal" else "vehicle" for _, lab in demos))


def _manual(loaded, text, spans, layer):
    """Hidden states and attentions of the prompt alone, tokens located by offsets, by hand."""
    tok = loaded.tokenizer
    enc = tok(text, return_offsets_mapping=True, return_special_tokens_mask=True)
    ids = torch.tensor([enc["input_ids"]])
    loaded.model.set_attn_implementation("eager")
    with torch.no_grad():
        out = loaded.model(input_ids=ids, output_hidden_states=True, output_attentions=True)

    def toks(span):
        pairs = zip(enc["offset_mapping"], enc["special_tokens_mask"], strict=True)
        return [t for t, ((s, e), sp) in enumerate(pairs) if not sp and e > s and s < span[1] and e > span[0]]
    return out, toks


def test_in_prompt_states_and_attention_equal_a_bare_forward(tiny_bert):
    t = PromptTemplate()
    prompts = [_prompt([("cat", "animal"), ("bus", "vehicle"), ("horse", "animal")]),
               _prompt([("car", "vehicle")], query="truck", concept="vehicle", gold="vehicle")]
    spans = [prompt_spans(p, t) for p in prompts]
    assert spans[0].text == t.prefix(prompts[0].demos) + t.query_text("dog")
    layer = 2
    batched = read_prompts(tiny_bert.model, tiny_bert.tokenizer, spans, layer, batch_size=2)
    for sp, got in zip(spans, batched, strict=True):
        out, toks = _manual(tiny_bert, sp.text, sp, layer)
        h = out.hidden_states[layer][0]
        q = toks(sp.query)
        assert np.allclose(got.query, h[q].mean(0).numpy(), atol=1e-5)
        for d, (w, lab) in enumerate(zip(sp.demo_words, sp.demo_labels, strict=True)):
            assert np.allclose(got.demos[d], h[toks(w)].mean(0).numpy(), atol=1e-5)
            for a, att in enumerate(out.attentions):  # query rows averaged, summed over the demo's word + label
                mass = att[0][:, q][:, :, toks(w) + toks(lab)].mean(1).sum(-1).numpy()
                assert np.allclose(got.attention[a, :, d], mass, atol=1e-5)
    zero = read_prompts(tiny_bert.model, tiny_bert.tokenizer, [label_prompt("animal", t)], layer)[0]
    assert zero.demos.shape[0] == 0 and zero.attention.shape[-1] == 0


def test_vote_and_kernel_readouts_by_hand():
    att = np.array([[[[0.1, 0.3, 0.2], [0.0, 0.0, 0.0]]]])  # (P=1, L=1, H=2, D=3); head 2 puts nothing on demos
    labels = np.array([[0, 1, 0]])
    votes = vote_probabilities(att, labels, 2)
    assert np.allclose(votes[0, 0, 0], [0.5, 0.5])  # (0.1 + 0.2) / 0.6, 0.3 / 0.6
    assert np.allclose(votes[0, 0, 1], [2 / 3, 1 / 3])  # uniform over demos
    q = np.array([[1.0, 0.0]])
    keys = np.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    cos = np.array([1.0, 0.0, 1 / np.sqrt(2)])
    w = np.exp(5 * cos) / np.exp(5 * cos).sum()
    assert np.allclose(attention_readout(q, keys, labels, 2, [5.0])[0, 0], [w[0] + w[2], w[1]])
    p = _prompt([("cat", "animal"), ("bus", "vehicle"), ("horse", "animal")])
    assert np.allclose(state_probabilities([p], q, [keys[0]], [5.0])[0, 0], [w[0] + w[2], w[1]])


def test_in_prompt_differs_from_static_when_the_context_changes(tiny_bert):
    """Same words, another header: the static kernel cannot change, the in-prompt readout does."""
    p = _prompt([("cat", "animal"), ("bus", "vehicle")])
    plain, headed = PromptTemplate(), PromptTemplate(header="red blue green yellow\n")
    a, b = (read_prompts(tiny_bert.model, tiny_bert.tokenizer, [prompt_spans(p, t)], 2)[0] for t in (plain, headed))
    pa = state_probabilities([p], a.query[None], [a.demos], [20.0])
    pb = state_probabilities([p], b.query[None], [b.demos], [20.0])
    assert not np.allclose(pa, pb, atol=1e-4)  # the static kernel takes no template: its numbers cannot move
    assert not np.allclose(a.demos[0], b.demos[0], atol=1e-4)


def test_near_tie_rule_takes_the_median_not_an_extreme():
    betas = [0.0, 1.0, 2.0, 5.0, 10.0, 20.0]
    acc = [0.90, 0.963, 0.963, 0.962, 0.95, 0.90]
    assert choose_near_median(betas, acc, se=0.005) == (2.0, [1.0, 2.0, 5.0])  # not 1.0, the first maximum
    assert choose_near_median(betas, acc, se=0.02) == (5.0, [1.0, 2.0, 5.0, 10.0])  # even count: upper middle
    assert choose_near_median(betas, acc, se=0.0) == (2.0, [1.0, 2.0])


def test_cluster_bootstrap_reduces_to_the_ordinary_bootstrap_and_widens_with_duplicates():
    rng = np.random.default_rng(3)
    x = (rng.random(40) < 0.7).astype(float)
    plain = bootstrap_accuracy(x, n_boot=500, seed=4)
    single = cluster_bootstrap(x, [[f"{i:03d}" for i in range(40)]], n_boot=500, seed=4)
    assert (single.ci_low, single.ci_high) == pytest.approx((plain.ci_low, plain.ci_high))  # the same resamples
    dup = np.repeat(x, 5)
    clustered = cluster_bootstrap(dup, [[f"{i:03d}" for i in np.repeat(np.arange(40), 5)]], n_boot=500, seed=4)
    assert (clustered.ci_low, clustered.ci_high) == pytest.approx((plain.ci_low, plain.ci_high))
    naive = bootstrap_accuracy(dup, n_boot=500, seed=4)  # rows as if independent: about sqrt(5) too narrow
    ratio = (clustered.ci_high - clustered.ci_low) / (naive.ci_high - naive.ci_low)
    assert 1.6 < ratio < 3.0


def test_two_way_cluster_bootstrap_equals_resampling_by_construction():
    """Each resample rebuilt as a data set: every (drawn a-cluster, drawn b-cluster) pair's observations."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, size=30)
    b = rng.integers(0, 5, size=30)
    x = rng.normal(size=30)
    n_boot = 40
    got = cluster_bootstrap(x, [a, b], n_boot=n_boot, seed=9, level=0.5)
    draws = np.random.default_rng(9)
    ids_a, ids_b = np.unique(a.astype(str)), np.unique(b.astype(str))
    da = draws.integers(0, len(ids_a), size=(n_boot, len(ids_a)))
    db = draws.integers(0, len(ids_b), size=(n_boot, len(ids_b)))
    means = []
    for r in range(n_boot):
        rows = [x[(a.astype(str) == ids_a[i]) & (b.astype(str) == ids_b[j])] for i in da[r] for j in db[r]]
        means.append(np.concatenate(rows).mean())
    assert (got.ci_low, got.ci_high) == pytest.approx(tuple(np.quantile(means, [0.25, 0.75])))


def test_sign_flip_by_episode_against_enumeration():
    diffs_by_episode = np.array([1.0, 0.5, 1.0, -0.5, 1.0, 0.5, 0.0, 1.0])
    # Two prompts per episode, flipped together: the exact p enumerates the 2^8 episode sign vectors.
    diffs = np.repeat(diffs_by_episode / 2, 2)
    units = np.repeat(np.arange(8), 2)
    obs = abs(diffs_by_episode.sum())
    exact = np.mean([abs(np.dot(s, diffs_by_episode)) >= obs - 1e-12
                     for s in itertools.product([-1, 1], repeat=8)])
    assert sign_flip_p(diffs, units, permutations=20000, seed=1) == pytest.approx(exact, abs=0.01)
    # flipped prompt by prompt the null is narrower and the p smaller: the episode is the unit
    assert sign_flip_p(diffs, np.arange(16), permutations=20000, seed=1) < exact - 0.005


def test_reinitialised_keeps_architecture_and_tokenizer_with_new_seeded_weights(tiny_bert):
    # (the tiny model itself was initialised with seed 0: another seed gives other weights)
    r1, r2, r3 = (reinitialised_model(tiny_bert, seed=s) for s in (5, 5, 6))
    assert r1.tokenizer is tiny_bert.tokenizer and type(r1.model) is type(tiny_bert.model)
    w0 = dict(tiny_bert.model.named_parameters())
    for name, w in r1.model.named_parameters():
        assert w.shape == w0[name].shape and torch.equal(w, dict(r2.model.named_parameters())[name])
    name = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(dict(r1.model.named_parameters())[name], w0[name])
    assert not torch.equal(dict(r1.model.named_parameters())[name], dict(r3.model.named_parameters())[name])


@pytest.mark.parametrize("readout", ["in_prompt", "attention_vote"])
def test_run_with_baselines_pairs_every_prompt(tiny_bert, readout):
    config = IclConfig(extraction=ExtractionConfig(layers="last"), readout=readout, tune_episodes=2,
                       bootstrap=100, permutations=100, prompts=EpisodeConfig(
                           shots=[0, 2], episodes=3, queries_per_episode=2,
                           conditions=["in_distribution", "skewed", "zero_shot"]))
    result = icl_probe(config, loaded=tiny_bert, concept_set=small_concept_set())
    s = result.summary
    assert s["readout"] == readout and set(s["baselines"]) >= {"static_kernel", "random_weights"}
    for cond, shots in (("in_distribution", "2"), ("zero_shot", "0")):
        rows = [r for r in result.rows if r["condition"] == cond and str(r["shots"]) == shots]
        for name in ("static_kernel", "random_weights"):
            diff = np.mean([r["correct"] - r[f"correct_{name}"] for r in rows])
            assert s["versus"][name][cond][shots]["mean"] == pytest.approx(diff)
            assert s["baselines"][name]["accuracy"][cond][shots]["n"] == len(rows)
    if readout == "in_prompt":
        assert s["beta"]["best"] in s["beta"]["near_tied"] and "median" in s["beta"]["rule"]
        assert {r["readout"] for r in result.beta_sweep} == {"in_prompt", "static_kernel"}
    else:
        chosen = s["heads"]["chosen"]
        held = {(r["layer"], r["head"]): r["held_out_accuracy"] for r in result.heads}
        rest = [v for h, v in held.items() if list(h) not in chosen]
        assert len(chosen) == 3 and min(held[tuple(h)] for h in chosen) >= max(rest)
        assert "all_heads" in s["baselines"]
