"""The attention probe: token layout, statistics and nulls, a hand-set head recovered, knockout, end to end."""

from __future__ import annotations

import copy
import csv
import math
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from mcicl.core.configuration import from_dict
from mcicl.core.runs import RunFolder
from mcicl.probing.datasets.concepts import ConceptSet
from mcicl.probing.extract import ExtractionConfig
from mcicl.probing.icl.attention import (
    AttentionConfig,
    cell_statistics,
    concept_pairs,
    head_stability,
    head_statistics,
    knockout,
    layout_prompts,
    measure_attention,
    query_attention,
    run_attention,
)
from mcicl.probing.icl.episodes import EpisodeConfig
from mcicl.probing.icl.tasks import IclSampler, PromptTemplate
from mcicl.probing.models import LoadedModel, ModelRef, load_model
from mcicl.probing.tiny import build_tiny_model, build_tiny_tokenizer
from tests.conftest import mcicl_cli

WORDS = {
    "animals": ["dog", "cat", "horse", "lion", "tiger", "wolf", "bear", "fox"],
    "tools": ["hammer", "saw", "drill", "wrench", "chisel", "pliers", "axe", "spade"],
    "vehicles": ["car", "bus", "train", "truck", "van", "boat", "ship", "plane"],
}
CONCEPTS = ConceptSet("handset", WORDS)
HIDDEN, HEADS, ALPHA = 16, 2, 1.0
QUICK = {"permutations": 200, "bootstrap": 200, "top_k": 2, "knockout_draws": 2}


def attention_prompts(**fields) -> EpisodeConfig:
    """The attention probe's default prompts section with ``fields`` changed."""
    return replace(AttentionConfig().prompts, **fields)
ON_CPU = ExtractionConfig(device="cpu")


# -- a one-layer GPT-2 whose head 0 attends to same-concept words, by hand ----------------------------------

def handset_model(tmp_path) -> tuple[LoadedModel, dict[int, int]]:
    """(model, word token id -> concept index): head 0 reads concept identity, head 1 attends uniformly.

    Each concept word is one token whose embedding is e_c (c = its concept); every other token embeds to 0 and
    position embeddings are 0, so after ln_1 a concept token is the fixed pattern n_c and the rest is 0. Head 0's
    W_Q = W_K = ALPHA * (projection on dims 0..2): its score q.k / sqrt(d_head) is high for same-concept tokens.
    Head 1's W_Q is 0: uniform attention, so its correct attention is exactly chance.
    """
    corpus = [f"{w} ->\n" * 40 for ws in WORDS.values() for w in ws]
    tokenizer = build_tiny_tokenizer(corpus, vocab_size=900)
    word_ids = {}
    for c, ws in enumerate(WORDS.values()):
        for w in ws:
            ids = tokenizer(w)["input_ids"]
            assert len(ids) == 1, f"{w!r} is {len(ids)} tokens; the hand-set model needs one token per word"
            word_ids[ids[0]] = c
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=512, n_embd=HIDDEN, n_layer=1,
                                       n_head=HEADS, pad_token_id=tokenizer.pad_token_id,
                                       attn_implementation="eager"))
    with torch.no_grad():
        wte, block = model.transformer.wte.weight, model.transformer.h[0]
        wte.zero_()
        for tid, c in word_ids.items():
            wte[tid, c] = 1.0
        model.transformer.wpe.weight.zero_()
        w = block.attn.c_attn.weight  # Conv1D (in, 3 * hidden): q | k | v
        w.zero_()
        block.attn.c_attn.bias.zero_()
        for i in range(3):
            w[i, i] = ALPHA  # head 0 query dims 0..2
            w[i, HIDDEN + i] = ALPHA  # head 0 key dims 0..2
        w[:, 2 * HIDDEN:] = torch.eye(HIDDEN)  # values: identity (irrelevant to the attention pattern)
    model.eval()
    return LoadedModel(model, tokenizer, ModelRef("handset", str(tmp_path), "local")), word_ids


def manual_word_value(ids: list[int], word_ids: dict[int, int], query_concept: int) -> tuple[float, float]:
    """(head 0's share of attention on same-concept demo words, chance) from the weights' formula.

    ln_1(e_c) = (e_c - 1/16) / sqrt(15/256) (eps 1e-5), so q.k = ALPHA^2 * sum_{i<3} n_c[i] n_c'[i]; the
    softmax normaliser cancels in the ratio. Demo words: every concept-word token except the last (the query).
    """
    def ln(c: int) -> np.ndarray:
        e = np.zeros(HIDDEN)
        e[c] = 1.0
        return (e - e.mean()) / math.sqrt(e.var() + 1e-5)

    q = ALPHA * ln(query_concept)[:3]
    demo = [word_ids[t] for t in ids[:-1] if t in word_ids]
    weights = np.array([math.exp(q @ (ALPHA * ln(c)[:3]) / math.sqrt(HIDDEN // HEADS)) for c in demo])
    same = np.array([c == query_concept for c in demo])
    return float(weights[same].sum() / weights.sum()), float(same.mean())


@pytest.fixture(scope="module")
def handset(tmp_path_factory):
    return handset_model(tmp_path_factory.mktemp("handset"))


def test_handset_head_recovered_with_its_value(handset):
    loaded, word_ids = handset
    # query = the word itself, so the last prompt token (the causal query position) carries the concept
    template = PromptTemplate(query="{word}", label=" -> {label}")
    prompts = attention_prompts(conditions=["in_distribution", "flipped_labels"], shots=[3, 6], episodes=8,
                                template=template)
    config = AttentionConfig(prompts=prompts, extraction=ON_CPU, **QUICK)
    result = measure_attention(config, loaded, CONCEPTS, show_progress=False)
    assert result.top_heads[0] == (0, 0)
    names = list(WORDS)
    for cond, shots in [("in_distribution", 3), ("in_distribution", 6), ("flipped_labels", 6)]:
        cell = [p for p in result.prompts if (p.condition, p.shots) == (cond, shots)]
        manual = [manual_word_value(list(lay.ids), word_ids, names.index(p.query_concept))
                  for p, lay in zip(cell, layout_prompts(loaded.tokenizer, cell, template, "last"), strict=True)]
        rows = {(r["layer"], r["head"], r["kind"]): r for r in result.rows
                if (r["condition"], r["shots"]) == (cond, shots)}
        head0, head1 = rows[(0, 0, "word")], rows[(0, 1, "word")]
        assert head0["value"] == pytest.approx(np.mean([v for v, _ in manual]), abs=1e-4)
        assert head0["chance"] == pytest.approx(np.mean([c for _, c in manual]), abs=1e-9)
        # 8 episodes flipped whole (the query swap's unit): p cannot go far below 2^-8 plus ties
        assert head0["value"] > 0.95 and head0["p_corrected"] < 0.05
        # head 1 attends uniformly: exactly chance, and not significant
        assert head1["value"] == pytest.approx(head1["chance"], abs=1e-5)
        assert head1["p_corrected"] > 0.05
        # labels embed to 0, so head 0 spreads evenly over label tokens: chance, not significant
        label0 = rows[(0, 0, "label")]
        assert label0["value"] == pytest.approx(label0["chance"], abs=1e-5) and label0["p_corrected"] > 0.05


def test_handset_head_fails_when_concepts_are_relabelled(handset):
    """The control: the same head, scored against concepts that do not match its embeddings, finds nothing."""
    loaded, _ = handset
    template = PromptTemplate(query="{word}", label=" -> {label}")
    scrambled = ConceptSet("scrambled", {c: [ws[i] for ws in WORDS.values()] for c, i in
                                         (("mix0", 0), ("mix1", 1), ("mix2", 2), ("mix3", 3), ("mix4", 4),
                                          ("mix5", 5), ("mix6", 6), ("mix7", 7))})
    prompts = attention_prompts(conditions=["in_distribution"], shots=[4], episodes=8, template=template,
                                queries_per_episode=2)
    config = AttentionConfig(prompts=prompts, extraction=ON_CPU, **QUICK)
    result = measure_attention(config, loaded, scrambled, show_progress=False)
    head0 = next(r for r in result.rows if (r["layer"], r["head"], r["kind"]) == (0, 0, "word"))
    assert head0["p_corrected"] > 0.05


# -- the statistics on planted masses ------------------------------------------------------------------------

def test_statistics_planted_head_and_confounds():
    rng = np.random.default_rng(0)
    n_prompts, n_demos, episodes = 40, 4, np.repeat(np.arange(10), 4)
    counts = np.ones((n_prompts, n_demos))
    # each episode: 2 demonstrations of concept 0 and 2 of concept 1 in a random order, queries of both
    demo = np.repeat(np.stack([rng.permutation([0, 0, 1, 1]) for _ in range(10)]), 4, axis=0)
    query = np.tile([0, 1, 0, 1], 10)
    match = demo == query[:, None]
    masses = rng.uniform(0.5, 1.5, size=(n_prompts, n_demos, 1, 4))
    masses[:, :, 0, 0] += 4 * match  # head 0 prefers matching demonstrations
    masses[:, -1, 0, 1] += 6  # head 1 prefers the last demonstration (recency), blind to concepts
    masses[:, :, 0, 2] += 6 * (demo == 0)  # head 2 prefers concept 0, whatever the query
    stats = head_statistics(masses, counts, demo, query, episodes, masses.sum(1) * 2, n_permutations=400,
                            n_boot=200)
    share = masses / masses.sum(1, keepdims=True)
    expected = (share * match[:, :, None, None]).sum(1).mean(0)
    np.testing.assert_allclose(stats.value, expected, atol=1e-12)
    assert stats.chance == pytest.approx(0.5)
    np.testing.assert_allclose(stats.demo_mass, 0.5, atol=1e-12)
    assert stats.p_corrected[0, 0] < 0.01
    assert (stats.p_corrected[0, 1:] > 0.05).all()
    assert stats.ci_low[0, 0] < stats.value[0, 0] < stats.ci_high[0, 0]
    np.testing.assert_allclose(stats.null[0], 0.5, atol=0.03)

    # Confound 1: the matching demonstration is always the last one. The within-prompt permutation null alone
    # would credit the recency head; the position-matched null (same slots, other episodes) does not.
    demo_last = np.zeros_like(demo)
    demo_last[:, -1] = 1
    query_one = np.ones_like(query)
    stats = head_statistics(masses, counts, demo_last, query_one, episodes, masses.sum(1), n_permutations=400,
                            n_boot=200)
    assert stats.value[0, 1] > stats.null[0, 1] + 0.3
    assert stats.position_null[0, 1] == pytest.approx(stats.value[0, 1], abs=0.1)
    assert np.isnan(stats.query_null).all()  # every query of an episode has one concept: no query swap
    assert stats.p_corrected[0, 1] > 0.05

    # Confound 2: most queries are of concept 0, which head 2 prefers whatever the query. The query-swap
    # null (same demonstrations, queries trading concepts) does not credit it; the demo permutation would.
    # Half the episodes have 3 of 4 queries of concept 0 (one 0-1 pair swaps, two queries are left out), half are
    # balanced (two pairs): the swapped queries keep their concept counts, so head 2's preference cancels.
    query_skew = np.concatenate([np.tile([0, 0, 0, 1], 5), np.tile([0, 1, 0, 1], 5)])
    stats = head_statistics(masses, counts, demo, query_skew, episodes, masses.sum(1), n_permutations=400,
                            n_boot=200)
    assert stats.value[0, 2] > stats.null[0, 2] + 0.1
    assert stats.query_prompts == 5 * 2 + 5 * 4
    own = (share * (demo == query_skew[:, None])[:, :, None, None]).sum(1)
    other = (share * (demo != query_skew[:, None])[:, :, None, None]).sum(1)
    assert stats.query_null[0, 0] < stats.query_observed[0, 0] - 0.2  # the matching head loses its match
    # balanced episodes alone: every query paired, so by hand the null is the other concept's share, 2 ways
    half = slice(20, 40)
    bal = head_statistics(masses[half], counts[half], demo[half], query_skew[half], episodes[half],
                          masses[half].sum(1), n_permutations=100, n_boot=100)
    assert bal.query_prompts == 20
    np.testing.assert_allclose(bal.query_observed, own[half].mean(0), atol=1e-12)
    np.testing.assert_allclose(bal.query_null, other[half].mean(0), atol=1e-12)
    assert stats.query_null[0, 2] == pytest.approx(stats.query_observed[0, 2], abs=0.05)
    # flipping whole episodes (10 of them), the smallest attainable p is about 2^-10; head 2 has no effect, so its
    # p is near-uniform across permutation seeds (one seed in 20 falls below 0.05): the median of 5 seeds is tested
    assert stats.p_corrected[0, 0] < 0.05
    ps = [head_statistics(masses, counts, demo, query_skew, episodes, masses.sum(1), n_permutations=200, n_boot=100,
                          seed=k).p_corrected[0, 2] for k in range(5)]
    assert np.median(ps) > 0.05


def test_query_pairs_exclude_identity_and_same_concept():
    rng = np.random.default_rng(0)
    for concepts, n_pairs in (([0, 0, 1, 1], {2}), ([0, 0, 0, 1], {1}), ([1, 1], {0}), ([0, 1, 2], {1}),
                              ([2, 0, 1, 0], {1, 2})):
        for _ in range(20):
            pairs = concept_pairs(concepts, rng)
            assert len(pairs) in n_pairs and pairs.shape[1] == 2
            assert all(i != j and concepts[i] != concepts[j] for i, j in pairs.tolist())
            used = set(pairs.ravel().tolist())
            assert len(used) == 2 * len(pairs)  # every query in one pair at most
            left = {concepts[k] for k in range(len(concepts)) if k not in used}
            assert len(left) <= 1  # maximal: no two unpaired queries of different concepts remain


def test_nulls_permute_whole_episodes():
    """Four identical prompts per episode: the null is that of one prompt per episode, not 4x narrower."""
    rng = np.random.default_rng(1)
    n_ep, n_demos = 12, 4
    demo = np.stack([rng.permutation([0, 0, 1, 1]) for _ in range(n_ep)])
    query = np.zeros(n_ep, dtype=int)
    masses = rng.uniform(0.5, 1.5, size=(n_ep, n_demos, 1, 1))
    masses[:, :, 0, 0] += 0.02 * (demo == query[:, None])  # a weak effect: a p well inside (0, 1)
    args = dict(n_permutations=2000, n_boot=100, seed=0)
    one = head_statistics(masses, np.ones((n_ep, n_demos)), demo, query, np.arange(n_ep), masses.sum(1), **args)
    rep = lambda x: np.repeat(x, 4, axis=0)  # noqa: E731
    four = head_statistics(rep(masses), np.ones((4 * n_ep, n_demos)), rep(demo), rep(query),
                           np.repeat(np.arange(n_ep), 4), rep(masses).sum(1), **args)
    assert four.value[0, 0] == pytest.approx(one.value[0, 0])
    assert 0.05 < one.p_value[0, 0] < 0.6
    assert four.p_value[0, 0] == pytest.approx(one.p_value[0, 0], abs=0.04)
    # the same prompts permuted one by one (each its own "episode"): a null too narrow, a p far too small
    by_prompt = head_statistics(rep(masses), np.ones((4 * n_ep, n_demos)), rep(demo), rep(query),
                                np.arange(4 * n_ep), rep(masses).sum(1), **args)
    assert by_prompt.p_value[0, 0] < one.p_value[0, 0] / 5


def test_head_stability_by_hand():
    a = np.array([[0.1, 0.5], [0.3, 0.9]])
    b = np.array([[0.2, 0.4], [0.1, 0.8]])  # ranks 2,3,1,4 against 1,3,2,4
    c = -a
    sig = [np.array([[0, 1], [0, 1]]), np.array([[0, 1], [1, 1]]), np.zeros((2, 2))]
    out = head_stability([a, b, c], sig)
    assert out["pairs"] == [[0, 1], [0, 2], [1, 2]]
    d = np.array([1, 3, 2, 4]) - np.array([2, 3, 1, 4])
    assert out["spearman"][0] == pytest.approx(1 - 6 * (d ** 2).sum() / (4 * 15))  # 0.8, the textbook formula
    assert out["spearman"][1] == pytest.approx(-1.0)
    assert out["jaccard"] == pytest.approx([2 / 3, 0.0, 0.0])
    assert out["significant"] == [2, 3, 0] and out["significant_in_all"] == 0 and out["heads"] == 4


# -- capture: eager probabilities, padding, batching ------------------------------------------------------

def test_query_attention_equals_manual_and_batching(handset, minilm):
    loaded, _ = handset
    template = PromptTemplate(query="{word}", label=" -> {label}")
    sampler = IclSampler(CONCEPTS, queries_per_episode=2)
    prompts = sampler.sample("in_distribution", 2, 2, 0) + sampler.sample("in_distribution", 5, 2, 0)
    layouts = layout_prompts(loaded.tokenizer, prompts, template, "last")
    batched = query_attention(loaded.model, loaded.tokenizer, layouts, batch_size=8, show_progress=False)
    single = query_attention(loaded.model, loaded.tokenizer, layouts, batch_size=1, show_progress=False)
    model = loaded.model.transformer
    for lay, b, s in zip(layouts, batched, single, strict=True):
        np.testing.assert_allclose(b, s, atol=1e-6)
        # manual eager attention of layer 0 at the last token: softmax(q_last . k / sqrt(d)) over the prefix
        with torch.no_grad():
            h = model.h[0].ln_1(model.wte(torch.tensor(lay.ids)) + model.wpe(torch.arange(len(lay.ids))))
            q, k, _ = model.h[0].attn.c_attn(h).split(HIDDEN, dim=-1)
            d = HIDDEN // HEADS
            for head in range(HEADS):
                scores = k[:, head * d:(head + 1) * d] @ q[-1, head * d:(head + 1) * d] / math.sqrt(d)
                np.testing.assert_allclose(b[0, head], torch.softmax(scores, 0).numpy(), atol=1e-6)
    # an encoder (right padding, query = the word's tokens): batched == single, rows are distributions
    lays = layout_prompts(minilm.tokenizer, prompts, PromptTemplate(), "word")
    batched = query_attention(minilm.model, minilm.tokenizer, lays, batch_size=8, show_progress=False)
    single = query_attention(minilm.model, minilm.tokenizer, lays, batch_size=1, show_progress=False)
    for b, s in zip(batched, single, strict=True):
        np.testing.assert_allclose(b, s, atol=1e-5)
        np.testing.assert_allclose(b.sum(-1), 1.0, atol=1e-5)
    assert minilm.model.config._attn_implementation != "eager"  # the caller's setting is restored
    # a bare eager forward of one prompt, no padding, no mask: the same probabilities
    bare = copy.deepcopy(minilm.model)
    bare.set_attn_implementation("eager")
    with torch.no_grad():
        attn = bare(input_ids=torch.tensor([lays[0].ids]), output_attentions=True).attentions
    rows = torch.stack([a[0][:, list(lays[0].query)].mean(1) for a in attn]).numpy()
    np.testing.assert_allclose(batched[0], rows, atol=1e-5)


def test_layout_locates_words_and_labels(minilm):
    sampler = IclSampler(CONCEPTS, queries_per_episode=2)
    prompts = sampler.sample("arbitrary_labels", 4, 2, 3)
    tok = minilm.tokenizer
    for p, lay in zip(prompts, layout_prompts(tok, prompts, PromptTemplate(), "word"), strict=True):
        for (word, label), w_pos, l_pos in zip(p.demos, lay.demo_words, lay.demo_labels, strict=True):
            assert tok.decode([lay.ids[t] for t in w_pos]) == word.lower()
            assert tok.decode([lay.ids[t] for t in l_pos]) == label.lower()
        assert tok.decode([lay.ids[t] for t in lay.query]) == p.query.lower()
        assert lay.match == tuple(c == p.query_concept for c in p.demo_concepts)


# -- knockout ------------------------------------------------------------------------------------------------

def test_knockout_equals_zeroed_projection_weights(tmp_path):
    folder = build_tiny_model("gpt2", tmp_path / "gpt2", layers=2, heads=4, hidden=32)
    loaded = load_model(folder)
    ids = loaded.tokenizer("dog -> animal\ncat -> animal\nhammer ->", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base = loaded.model(ids).logits
        with knockout(loaded.model, [(1, 2), (0, 0)]):
            knocked = loaded.model(ids).logits
        after = loaded.model(ids).logits
        manual = copy.deepcopy(loaded.model)
        d = 32 // 4
        manual.transformer.h[1].attn.c_proj.weight[2 * d:3 * d] = 0  # Conv1D (in, out): head 2's input rows
        manual.transformer.h[0].attn.c_proj.weight[0:d] = 0
        expected = manual(ids).logits
    torch.testing.assert_close(knocked, expected, atol=1e-5, rtol=1e-5)
    assert (knocked - base).abs().max() > 1e-3  # the knockout does something
    torch.testing.assert_close(after, base)  # and the hooks are gone afterwards
    with pytest.raises(ValueError, match="heads"):
        with knockout(loaded.model, [(0, 4)]):
            pass


# -- end to end ----------------------------------------------------------------------------------------------

def test_random_weights_causal_end_to_end(tmp_path):
    """A random-weight tiny GPT-2: no head beyond the null; the behaviour link and knockout are reported."""
    folder = build_tiny_model("gpt2", tmp_path / "tiny", layers=2, heads=4, hidden=32,
                              corpus=[w for ws in WORDS.values() for w in ws])
    config = AttentionConfig(extraction=ExtractionConfig(model=str(folder), device="cpu"),
                             prompts=attention_prompts(conditions=["in_distribution", "skewed"], shots=[2, 4],
                                                       episodes=5), **QUICK)
    run = RunFolder.create(tmp_path / "run", "probe attention")
    summary = run_attention(config, run, concept_set=CONCEPTS, show_progress=False)
    rows = list(csv.DictReader(open(run.path / "attention.csv")))
    assert len(rows) == 2 * 2 * 3 * 2 * 4  # conditions x shots x kinds x layers x heads
    assert min(float(r["p_corrected"]) for r in rows) > 0.05
    assert summary["random_weights"] and summary["query_position"] == "last"
    knock = summary["behaviour"]["knockout"]
    assert knock["k"] == 2 and len(knock["random_k_knocked_out"]) == 2
    assert 0 <= knock["accuracy"] <= 1 and knock["n_prompts"] == 5 * 4
    prompts = list(csv.DictReader(open(run.path / "prompts.csv")))
    assert len(prompts) == summary["prompts"] and {r["correct"] for r in prompts} <= {"0", "1"}
    assert (run.path / "figures" / "attention_heatmap.png").is_file()


def test_cli_minilm_end_to_end(tmp_path):
    out = tmp_path / "attn"
    res = mcicl_cli("probe", "attention", "--model", "default", "--conditions", "in_distribution,polysemous_query",
                    "--shots", "4", "--episodes", "4", "--permutations", "100", "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(open(out / "attention.csv")))
    assert len(rows) == 2 * 1 * 3 * 6 * 12  # conditions x shots x kinds x layers x heads
    assert {r["condition"] for r in rows} == {"in_distribution", "polysemous_query"}
    assert all(0 <= float(r["value"]) <= 1 and 0 < float(r["p_corrected"]) <= 1 for r in rows)
    for name in ("attention_heatmap.png", "attention_top_heads.png"):
        assert (out / "figures" / name).is_file()
    assert "top head" in res.stdout


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="conditions"):
        AttentionConfig(prompts=attention_prompts(conditions=["zero_shot"]))
    with pytest.raises(ValueError, match="prompts.shots"):
        AttentionConfig(prompts=attention_prompts(shots=[0, 2]))
    with pytest.raises(ValueError, match="query_position"):
        AttentionConfig(query_position="first")


def test_cell_statistics_rejects_mixed_shots(handset):
    loaded, _ = handset
    sampler = IclSampler(CONCEPTS, queries_per_episode=1)
    prompts = sampler.sample("in_distribution", 2, 2, 0) + sampler.sample("in_distribution", 3, 2, 0)
    lays = layout_prompts(loaded.tokenizer, prompts, PromptTemplate(), "last")
    rows = query_attention(loaded.model, loaded.tokenizer, lays, show_progress=False)
    with pytest.raises(ValueError, match="same number of demonstrations"):
        cell_statistics(rows, lays, prompts, "word")


# -- config: one prompts section, old flat keys, the command line -------------------------------------------

def test_old_flat_keys_load_with_a_warning_naming_the_new_key():
    old = {"shots": [4, 2], "episodes": 6, "n_permutations": 300, "n_boot": 200, "template": {"header": "Q:\n"}}
    with pytest.warns(DeprecationWarning) as caught:
        config = from_dict(AttentionConfig, old)
    said = " ".join(str(w.message) for w in caught)
    for new in ("'prompts.shots'", "'prompts.episodes'", "'permutations'", "'bootstrap'", "'prompts.template'"):
        assert new in said
    nested = {"prompts": {"shots": [4, 2], "episodes": 6, "template": {"header": "Q:\n"}}, "permutations": 300,
              "bootstrap": 200}
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert from_dict(AttentionConfig, nested) == config
    # a partial prompts section keeps the attention probe's own defaults, not the ICL probe's
    assert config.prompts.conditions == list(AttentionConfig().prompts.conditions)
    assert from_dict(AttentionConfig, {"prompts": {"ways": 3}}).prompts.shots == [2, 4, 8]


def test_cli_config_file_option_precedence_and_type_errors(tmp_path):
    cfg = tmp_path / "attention.yaml"
    cfg.write_text("prompts:\n  episodes: 7\n  ways: 3\npermutations: 300\n")
    res = mcicl_cli("probe", "attention", "--config", str(cfg), "--ways", "4", "--print-config")
    assert res.returncode == 0, res.stderr
    assert "episodes: 7  # from config file" in res.stdout and "permutations: 300  # from config file" in res.stdout
    assert "ways: 4  # from --ways" in res.stdout
    assert "- 2\n  - 4\n  - 8" in res.stdout  # the attention default shots survive a partial prompts section
    res = mcicl_cli("probe", "attention", "--permutations", "many", "--print-config")
    assert res.returncode == 2 and "--permutations 'many': accepted: an integer" in res.stderr
    cfg.write_text("prompts:\n  episodes: lots\n")
    res = mcicl_cli("probe", "attention", "--config", str(cfg), "--print-config")
    assert res.returncode == 2 and "prompts.episodes='lots'; accepted: an integer" in res.stderr
    assert "config file" in res.stderr
