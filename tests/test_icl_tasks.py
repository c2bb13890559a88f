"""ICL prompt sampling (deterministic by seed, each condition does what it says), readout maths, bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from mcicl.probing.datasets import builtin_concepts
from mcicl.probing.datasets.concepts import ConceptSet
from mcicl.probing.datasets.sets import descendants
from mcicl.probing.icl.readout import attention_readout
from mcicl.probing.icl.stats import bootstrap_accuracy
from mcicl.probing.icl.tasks import CONDITIONS, DEFAULT_CONDITIONS, IclSampler, concept_label
from tests.icl_fixtures import small_concept_set


@pytest.fixture(scope="module")
def sampler() -> IclSampler:
    return IclSampler(small_concept_set(), ways=2, queries_per_episode=3)


def test_sampling_is_deterministic_by_seed(sampler):
    for cond in DEFAULT_CONDITIONS:  # the in-context ones need contexts: tests/test_contexts_icl.py
        a = sampler.sample(cond, 4, n_episodes=5, seed=1)
        assert a == sampler.sample(cond, 4, n_episodes=5, seed=1)
    assert sampler.sample("in_distribution", 4, 5, seed=1) != sampler.sample("in_distribution", 4, 5, seed=2)


def test_in_distribution_prompts(sampler):
    prompts = sampler.sample("in_distribution", 8, n_episodes=20, seed=0)
    for p in prompts:
        assert len(p.demos) == 8 and p.query not in {w for w, _ in p.demos}
        assert p.labels == tuple(concept_label(c) for c in p.task.split("|"))
        assert p.gold == concept_label(p.query_concept) and p.query_concept in p.task.split("|")
        counts = [sum(lab == x for _, lab in p.demos) for x in p.labels]
        assert counts == [4, 4]  # balanced
        assert not sampler.is_novel(tuple(p.task.split("|")))


def test_conditions_change_what_they_say(sampler):
    skewed = sampler.sample("skewed", 10, 10, seed=0)
    assert all(sorted(sum(lab == x for _, lab in p.demos) for x in p.labels) == [2, 8] for p in skewed)
    for p in sampler.sample("flipped_labels", 4, 10, seed=0):
        semantic = {concept_label(c) for c in p.task.split("|")}
        assert set(p.labels) == semantic and p.gold != concept_label(p.query_concept)
        # every demonstration carries the other concept's name
        assert all(lab != concept_label(c) for (_, lab), c in zip(p.demos, p.demo_concepts, strict=True))
    arbitrary = sampler.sample("arbitrary_labels", 4, 10, seed=0)
    assert all(set(p.labels) <= set("A B C D E F foo bar baz qux quux corge X Y Z W V U".split()) for p in arbitrary)
    novel = {p.task for p in sampler.sample("novel_pair", 2, 30, seed=0)}
    seen = {p.task for p in sampler.sample("in_distribution", 2, 30, seed=0)}
    assert novel and not novel & seen
    zero = sampler.sample("zero_shot", 8, 5, seed=0)
    assert all(p.shots == 0 and not p.demos for p in zero)
    shuffled = sampler.sample("shuffled_labels", 8, 20, seed=0)
    mismatched = sum(lab != concept_label(c) for p in shuffled for (_, lab), c in zip(p.demos, p.demo_concepts,
                                                                                        strict=True))
    assert mismatched > 0.25 * 8 * 20  # labels drawn at random, not the concept's own


def test_polysemous_query_gets_the_sense_the_task_asks_about(sampler):
    prompts = sampler.sample("polysemous_query", 4, n_episodes=60, seed=0)
    cs = small_concept_set()
    golds: dict[str, set[str]] = {}
    for p in prompts:
        concepts = p.task.split("|")
        assert p.query in cs.polysemy and p.query_concept in cs.polysemy[p.query]
        assert [c for c in concepts if c in cs.polysemy[p.query]] == [p.query_concept]  # unambiguous task
        assert all(w not in cs.polysemy for w, _ in p.demos)  # monosemous demonstrations
        golds.setdefault(p.query, set()).add(p.gold)
    assert any(len(g) >= 2 for g in golds.values()), "the same word must be labelled differently by two tasks"


def test_bad_input_errors(sampler):
    with pytest.raises(ValueError, match="has 1 concept"):
        IclSampler(ConceptSet("one", {"animal": ["dog", "cat", "cow"]}))
    with pytest.raises(ValueError, match=r"concept '.*' has only 12 monosemous word\(s\).*accepted: shots <= 22"):
        sampler.sample("in_distribution", 32, 2, seed=0)
    with pytest.raises(ValueError, match="accepted: shots <= 14"):
        sampler.sample("skewed", 16, 2, seed=0)
    with pytest.raises(ValueError, match="unknown ICL condition 'nope'"):
        sampler.sample("nope", 2, 2, seed=0)
    no_poly = IclSampler(ConceptSet("plain", {c: ws for c, ws in small_concept_set().concepts.items()}))
    with pytest.raises(ValueError, match="lists no polysemous words"):
        no_poly.sample("polysemous_query", 2, 2, seed=0)


def test_attention_readout_limits():
    rng = np.random.default_rng(0)
    keys = rng.normal(size=(1, 5, 8))
    labels = np.array([[0, 0, 1, 1, 1]])
    query = keys[:, 0] + 0.01 * rng.normal(size=(1, 8))  # nearly the first demonstration (label 0)
    probs = attention_readout(query, keys, labels, 2, betas=[0.0, 1000.0])
    np.testing.assert_allclose(probs[0, 0], [0.4, 0.6])  # beta 0: demonstration label frequencies
    assert probs[0, 1, 0] > 0.99  # large beta: the nearest demonstration's label
    np.testing.assert_allclose(probs.sum(-1), 1.0)


def test_bootstrap_interval():
    correct = [1] * 45 + [0] * 15
    ci = bootstrap_accuracy(correct, n_boot=500, seed=0)
    assert ci.mean == 0.75 and ci.n == 60 and ci.ci_low < 0.75 < ci.ci_high and ci.ci_high - ci.ci_low < 0.3
    # queries of one episode move together: resampling episodes must widen the interval
    clustered = bootstrap_accuracy(correct, clusters=np.repeat(np.arange(15), 4), n_boot=500, seed=0)
    assert clustered.ci_high - clustered.ci_low > ci.ci_high - ci.ci_low
    assert bootstrap_accuracy([1, 1, 1], n_boot=200).ci_low == 1.0


@pytest.mark.parametrize("ways", [2, 3])
def test_no_task_combines_a_concept_with_its_ancestor(ways):
    """The built-in set has a hierarchy (trees under plants): a task never asks plants vs trees."""

    cs = builtin_concepts()
    sampler = IclSampler(cs, ways=ways, queries_per_episode=1)
    below = {c: set(descendants(cs, c)) for c in cs.concepts}
    related = {c: below[c] | {a for a in cs.concepts if c in below[a]} for c in cs.concepts}
    assert related["trees"] == {"plants"} and related["animals"] >= {"birds", "fish"}
    for cond in CONDITIONS:
        for p in sampler.sample(cond, 2, n_episodes=300, seed=0):
            concepts = p.task.split("|")
            assert not any(related[a] & set(concepts) for a in concepts), (cond, p.task)
            if cond == "polysemous_query":  # nor a concept above or below another sense of the query
                others = set(cs.polysemy[p.query]) - {p.query_concept}
                assert not set(concepts) & {r for s in others for r in related[s] | {s}}, (p.query, p.task)


def test_queries_need_words_the_demonstrations_left_over():
    """Two concepts of 9 words, 16 shots, 4 queries: 2 words left; a clear error, never a numpy crash."""
    cs = ConceptSet("nine", {"a": [f"a{i}" for i in range(9)], "b": [f"b{i}" for i in range(9)]})
    with pytest.raises(ValueError, match=r"queries_per_episode=4.*leaving 2.*shots <= 14"):
        IclSampler(cs, ways=2, queries_per_episode=4, novel_fraction=0.0).sample("in_distribution", 16, 3, seed=0)
    for queries, shots in ((2, 16), (4, 14)):  # at the limit every episode gets its queries
        sampler = IclSampler(cs, ways=2, queries_per_episode=queries, novel_fraction=0.0)
        prompts = sampler.sample("in_distribution", shots, 20, seed=0)
        assert len(prompts) == 20 * queries
