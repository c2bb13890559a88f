"""The ICL conditions polysemous_in_context and its adversarial twin: sampling, LM query text, attention readout."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import numpy as np
import pytest

from mcicl.core.runs import RunFolder
from mcicl.probing.contexts import ContextSet, make_context
from mcicl.probing.contextual import extract_contexts
from mcicl.probing.extract import ExtractionConfig, extract_words
from mcicl.probing.icl import run as icl_run
from mcicl.probing.icl.episodes import EpisodeConfig
from mcicl.probing.icl.readout import attention_readout
from mcicl.probing.icl.run import IclConfig, run_icl, summarise
from mcicl.probing.icl.tasks import CONDITIONS, DEFAULT_CONDITIONS, IclSampler, PromptTemplate
from tests.icl_fixtures import small_concept_set

SENTENCES = {
    ("bat", "animal"): ["The bat flew out of the cave at dusk.", "A bat hung from the barn roof.",
                        "The bat hunted moths in the dark."],
    ("bat", "sports_equipment"): ["He swung the bat at the ball.", "She bought a new cricket bat.",
                                  "The batter gripped the wooden bat."],
    ("orange", "fruit"): ["She peeled an orange for lunch.", "The orange was sweet and juicy.",
                          "He squeezed an orange into a glass."],
    ("orange", "colour"): ["She painted the door orange.", "The sky turned orange at sunset.",
                           "He wore an orange vest."],
}


@pytest.fixture(scope="module")
def contexts() -> ContextSet:
    return ContextSet("t", [make_context(w, s, t) for (w, s), ts in SENTENCES.items() for t in ts])


def _sampler(contexts: ContextSet) -> IclSampler:
    return IclSampler(small_concept_set(), queries_per_episode=3, contexts=contexts)


def test_twins_share_episodes_and_differ_only_in_the_sentence(contexts):
    sampler = _sampler(contexts)
    same = sampler.sample("polysemous_in_context", 4, 30, seed=1)
    other = sampler.sample("polysemous_in_context_adversarial", 4, 30, seed=1)
    assert len(same) == len(other) == 90
    for a, b in zip(same, other, strict=True):
        assert (a.task, a.demos, a.query, a.gold, a.query_concept) == (b.task, b.demos, b.query, b.gold,
                                                                          b.query_concept)
        senses = small_concept_set().polysemy[a.query]
        combo = a.task.split("|")
        # The task holds exactly one sense of the word, and the gold label is that sense.
        assert [s for s in senses if s in combo] == [a.query_concept] and a.gold == a.query_concept.replace("_", " ")
        assert a.context_sense == a.query_concept and a.query_context in SENTENCES[(a.query, a.query_concept)]
        assert b.context_sense != b.query_concept and b.context_sense in senses
        assert b.query_context in SENTENCES[(b.query, b.context_sense)]
        assert a.query_context[a.query_start:a.query_start + len(a.query)] == a.query
        assert all(w not in small_concept_set().polysemy for w, _ in a.demos)  # monosemous demonstrations
    assert same == sampler.sample("polysemous_in_context", 4, 30, seed=1)  # deterministic by seed
    assert same != sampler.sample("polysemous_in_context", 4, 30, seed=2)
    assert {p.query for p in same} == {"bat", "orange"}
    assert len({p.query_key for p in same}) == 12  # every sentence is its own query


def test_in_context_conditions_are_opt_in_and_need_contexts_of_the_set(contexts):
    assert "polysemous_in_context" in CONDITIONS and "polysemous_in_context" not in DEFAULT_CONDITIONS
    assert IclConfig().prompts.conditions == list(DEFAULT_CONDITIONS)
    # Without contexts the sampler uses the built-in ones, whose senses are not this small set's concepts.
    with pytest.raises(ValueError, match="hold no polysemous word of 'icl-test' in two of its senses"):
        IclSampler(small_concept_set()).sample("polysemous_in_context", 2, 1, seed=0)
    assert PromptTemplate().query_in_context("The bat flew.", "bat") == "The bat flew. bat ->"


def test_lm_readout_reads_the_sentence(contexts, monkeypatch):
    sampler = _sampler(contexts)
    prompts = sampler.sample("polysemous_in_context_adversarial", 2, 2, seed=0)
    seen = []

    def capture(model, tokenizer, scoring, **kwargs):
        seen.extend(scoring)
        return [np.zeros(len(s.options)) for s in scoring]

    monkeypatch.setattr(icl_run, "score_prompts", capture)
    icl_run._lm_scores(IclConfig(), SimpleNamespace(model=None, tokenizer=None), prompts)  # type: ignore[arg-type]
    for p, s in zip(prompts, seen, strict=True):
        assert s.query == f"{p.query_context} {p.query} ->" and s.options == tuple(f" {lab}" for lab in p.labels)


def test_attention_readout_uses_the_contextual_vector(minilm, contexts):
    config = IclConfig(readout="static_kernel", tune_episodes=3, bootstrap=100, prompts=EpisodeConfig(
        shots=[4], episodes=3, conditions=["polysemous_in_context", "polysemous_in_context_adversarial"]))
    sampler = _sampler(contexts)
    prompts = sampler.sample("polysemous_in_context", 4, 3, seed=0)
    vectors, dropped, record = icl_run.static_vectors(config, minilm, prompts)
    scored = icl_run._static_scores(config, vectors, prompts, prompts, record)
    assert not dropped and len(scored.logprobs) == len(prompts)
    beta = scored.record["beta"]["best"]
    layer = record["layer"]
    for p, lp in zip(prompts[:3], scored.logprobs[:3], strict=True):
        q = extract_contexts(minilm.model, minilm.tokenizer, [make_context(p.query, p.context_sense,
                                                                           p.query_context)],
                             layers=layer, show_progress=False).vectors[layer]
        alone = extract_words([p.query], _ecfg(), loaded=minilm, show_progress=False).vectors[layer]
        demos = extract_words([w for w, _ in p.demos], _ecfg(), loaded=minilm, show_progress=False)
        keys = np.stack([demos.vectors[layer][demos.words.index(w)] for w, _ in p.demos])
        ids = np.array([[p.labels.index(lab) for _, lab in p.demos]])
        expected = attention_readout(q, keys[None], ids, len(p.labels), [beta])[0, 0]
        assert np.allclose(np.exp(lp), expected, atol=1e-6)
        wrong = attention_readout(alone, keys[None], ids, len(p.labels), [beta])[0, 0]
        assert not np.allclose(wrong, expected, atol=1e-6)  # the out-of-context vector would score differently


def _ecfg() -> ExtractionConfig:
    return ExtractionConfig(model="default", layers="last")


def test_run_icl_writes_context_rows_and_the_paired_effect(minilm, tmp_path):
    config = IclConfig(readout="static_kernel", baselines=[], tune_episodes=3, bootstrap=100, prompts=EpisodeConfig(
        shots=[4], episodes=6, conditions=["polysemous_in_context", "polysemous_in_context_adversarial"]))
    summary = run_icl(config, RunFolder.create(tmp_path / "run", "probe icl"), loaded=minilm)
    with open(tmp_path / "run" / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["condition"] for r in rows} == set(config.prompts.conditions)
    assert all(r["query"] in r["query_context"].lower() for r in rows)
    effect = summary["context_effect"]["4"]
    acc = summary["accuracy"]
    assert effect["n"] == sum(r["condition"] == "polysemous_in_context" for r in rows)  # paired prompt by prompt
    assert effect["mean"] == pytest.approx(
        acc["polysemous_in_context"]["4"]["mean"] - acc["polysemous_in_context_adversarial"]["4"]["mean"])
    # The paired statistic: rebuilt from rows by hand.
    again = summarise([{**r, "shots": int(r["shots"]), "episode": int(r["episode"]), "correct": int(r["correct"])}
                       for r in rows], ways=2, n_boot=100)
    assert again["context_effect"]["4"]["mean"] == pytest.approx(effect["mean"])
