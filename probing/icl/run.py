"""``mcicl probe icl`` as a function: sample prompts per (condition, shots), score them, summarise, plot.

Four readouts share the prompts and the outputs:
- ``lm``: a causal LM scores every candidate label (probing.icl.scoring, cached prefixes);
- ``in_prompt``: the whole prompt goes through the model; the query's in-prompt state against the demonstrations'
  in-prompt states, softmax(beta * cos) mass per label (probing.icl.in_prompt; the default for encoders);
- ``attention_vote``: the model's own heads' attention from the query on the demonstrations, h = sum_d alpha_d y_d,
  per head, and pooled over the heads chosen on held-out episodes;
- ``static_kernel``: softmax(beta * cos) between out-of-context word vectors (probing.extract; the model never
  reads the prompt); a query inside a sentence (the in_context conditions) is its contextual vector there.

Baselines run on the same prompts (``--baselines``): ``static_kernel`` and ``random_weights`` (the readout on the
same architecture and tokenizer with re-initialised weights); each gets a paired interval per condition and shots.
Knobs (beta, heads) are chosen on held-out in-distribution episodes (seed + 1) by a stated rule
(:data:`BETA_RULE`, :data:`HEAD_RULE`); every beta of the grid is kept in beta_sweep.csv.

The ``lm`` readout is also read under lm-evaluation-harness's three scoring conventions side by side
(:data:`probing.icl.scoring.CONVENTIONS`: acc, acc_norm, acc_calibrated), each with its interval, in summary.json's
``scoring_conventions`` and scoring_conventions.csv; the prediction of record (``correct``) stays ``acc``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from transformers import AutoConfig

from mcicl.core.configuration import to_dict
from mcicl.core.jobs import DemoContext, JobContext
from mcicl.core.plotting import save_figure
from mcicl.core.runs import RunFolder
from mcicl.core.seeding import seed_everything
from mcicl.probing.contexts import ContextSet
from mcicl.probing.contextual import extract_contexts, load_contexts
from mcicl.probing.datasets.concepts import ConceptSet
from mcicl.probing.extract import ExtractionConfig, extract_words, n_hidden_layers
from mcicl.probing.extract_config import resolve_layers
from mcicl.probing.icl.episodes import EpisodeConfig
from mcicl.probing.icl.figures import ACCURACY_CAPTION, BETA_CAPTION, accuracy_figure, beta_sweep_figure
from mcicl.probing.icl.icl_config import READOUTS, SCORING_METHODS, IclConfig  # noqa: F401  (imported from here)
from mcicl.probing.icl.in_prompt import PromptReading, label_prompt, prompt_spans, read_prompts
from mcicl.probing.icl.readout import (
    LOG_FLOOR,
    WordVectors,
    predict,
    readout_contexts,
    readout_probabilities,
    readout_words,
    state_probabilities,
    vote_probabilities,
)
from mcicl.probing.icl.scoring import (
    CONVENTION_RULES,
    CONVENTIONS,
    ScoringPrompt,
    ScoringResult,
    convention_scores,
    score_prompts,
    unconditional_logprobs,
)
from mcicl.probing.icl.stats import AccuracyCI, choose_near_median, cluster_bootstrap, sign_flip_p
from mcicl.probing.icl.tasks import (
    CONDITIONS,
    CONTEXT_CONDITIONS,
    SENTENCE_CONDITIONS,
    IclPrompt,
    IclSampler,
    load_suite,
    majority_label,
)
from mcicl.probing.models import (
    LoadedModel,
    ModelNotFoundError,
    hub_error,
    is_causal_config,
    load_model,
    pretrained_kwargs,
    reinitialised_model,
    resolve_model,
)
from mcicl.probing.placement import resolve_device
from mcicl.probing.semcor import SemcorReport
from mcicl.probing.tiny import is_random_weights

log = logging.getLogger("mcicl")


def plan(config: IclConfig, sampler: IclSampler) -> list[tuple[str, int]]:
    """The (condition, shots) cells to run: zero_shot at 0 shots only, every other condition at shots >= 1."""
    cells = []
    for cond in config.prompts.conditions:
        if CONDITIONS[cond].zero_shot:
            cells.append((cond, 0))
            continue
        cells += [(cond, s) for s in config.prompts.shots if s > 0]
    for cond, s in cells:
        sampler.check_shots(cond, s)
    if not cells:
        raise ValueError(f"conditions {config.prompts.conditions} with shots {config.prompts.shots} leave nothing "
                         "to run; only "
                         "zero_shot runs at 0 shots, every other condition needs shots >= 1")
    return cells


def choose_readout(config: IclConfig) -> str:
    """The readout to run: under 'auto', 'lm' for a causal LM and 'in_prompt' for an encoder; a clear error when an
    encoder is asked for --readout lm."""
    ref = resolve_model(config.extraction.model, config.extraction.revision)
    try:
        kwargs = pretrained_kwargs(ref, config.extraction.trust_remote_code)
        model_config = AutoConfig.from_pretrained(ref.location, **kwargs)
    except OSError as err:
        if ref.source == "hub":
            raise hub_error(ref, err) from err
        raise ModelNotFoundError(f"could not read the config of {ref.location!r}: {err}") from err
    causal = is_causal_config(model_config)
    if config.readout == "lm" and not causal:
        archs = ", ".join(getattr(model_config, "architectures", None) or [type(model_config).__name__])
        raise ValueError(f"readout='lm' needs a causal language model, but {ref.name} is an encoder ({archs}); "
                         "accepted: readout='in_prompt' (or attention_vote, static_kernel) for this model, or a "
                         "causal LM such as model='EleutherAI/pythia-160m'")
    if config.readout == "auto":
        return "lm" if causal else "in_prompt"
    return config.readout


BETA_RULE = ("beta: the median (upper middle of an even count) of the betas whose held-out in-distribution accuracy "
             "is within one standard error (over tune episodes) of the best")
HEAD_RULE = ("heads: the top_heads heads with the highest held-out in-distribution accuracy of their own vote (ties: "
             "higher mean probability of the gold label), their votes averaged")
INFERENCE = {"interval": "95% percentile interval of a three-way cluster (pigeonhole) bootstrap: episodes, query "
                         "words and query concepts resampled independently, each prompt weighted by the product of "
                         "its clusters' multiplicities (conservative where words nest in concepts)",
             "paired_p": "two-sided sign-flip permutation test of the mean paired difference, signs flipped per "
                         "episode (an episode's prompts share demonstrations)"}


@dataclass
class Scored:
    """One readout on the prompts: label log-probabilities per prompt, how its knob was chosen, its sweeps."""

    logprobs: list[np.ndarray]
    record: dict[str, Any]
    sweep: list[dict[str, Any]]  # kernel readouts: (beta, condition, shots) -> accuracy, follows_majority
    heads: list[dict[str, Any]]  # attention_vote: (layer, head, condition, shots) -> accuracy
    variants: dict[str, list[np.ndarray]]  # other readings of the same prompts (attention_vote: all heads pooled)


def _gold(prompts: list[IclPrompt]) -> np.ndarray:
    return np.array([p.labels.index(p.gold) for p in prompts], dtype=int)


def _episode_se(correct: np.ndarray, prompts: list[IclPrompt]) -> float:
    """Standard error of an accuracy over episodes (the unit that shares demonstrations)."""
    by: dict[tuple[int, int], list[float]] = {}
    for c, p in zip(correct, prompts, strict=True):
        by.setdefault((p.shots, p.episode), []).append(float(c))
    means = np.array([np.mean(v) for v in by.values()])
    return float(means.std(ddof=1) / np.sqrt(len(means))) if len(means) > 1 else 0.0


def _choose_beta(config: IclConfig, tune: list[IclPrompt], probs: np.ndarray, rng: np.random.Generator
                 ) -> tuple[int, dict[str, Any]]:
    """(index of the chosen beta, its record) from the tune prompts' label probabilities (P, B, L)."""
    gold = _gold(tune)
    correct = [predict(probs[:, b], rng) == gold for b in range(len(config.betas))]
    acc = [float(c.mean()) for c in correct]
    se = _episode_se(correct[int(np.argmax(acc))], tune)
    chosen, near = choose_near_median(config.betas, acc, se)
    return list(config.betas).index(chosen), {
        "grid": list(config.betas), "best": chosen, "near_tied": near, "standard_error": se, "rule": BETA_RULE,
        "tuning_accuracy": dict(zip([str(b) for b in config.betas], acc, strict=True)),
        "tuning_prompts": len(tune)}


def _majority(prompts: list[IclPrompt], seed: int) -> list[str]:
    rng = np.random.default_rng([seed, 11])
    return [majority_label(p, rng) for p in prompts]


def _sweep(readout: str, prompts: list[IclPrompt], probs: np.ndarray, betas: list[float], seed: int
           ) -> list[dict[str, Any]]:
    """Accuracy and share following the demonstrations' majority label per (beta, condition, shots)."""
    rng = np.random.default_rng([seed, 7])
    gold, cells = _gold(prompts), _cells(prompts)
    majority = np.array([p.labels.index(m) for p, m in zip(prompts, _majority(prompts, seed), strict=True)])
    out = []
    for b, beta in enumerate(betas):
        pred = predict(probs[:, b], rng)
        for cell, idx in cells.items():
            out.append({"readout": readout, "condition": cell[0], "shots": cell[1], "beta": beta,
                        "accuracy": float((pred[idx] == gold[idx]).mean()),
                        "follows_majority": float((pred[idx] == majority[idx]).mean()) if cell[1] else float("nan"),
                        "n": len(idx)})
    return out


def _logs(probs: np.ndarray) -> list[np.ndarray]:
    return [np.log(np.maximum(row, LOG_FLOOR)) for row in probs]


def static_vectors(config: IclConfig, loaded: LoadedModel, prompts: list[IclPrompt]
                   ) -> tuple[WordVectors, list[str], dict[str, Any]]:
    """(out-of-context word vectors, words without a vector, extraction record) for the static kernel; a query in a
    sentence is its contextual vector there (:mod:`probing.contextual`)."""
    words = readout_words(prompts)
    extraction = extract_words(words, config.extraction, loaded=loaded, show_progress=False)
    layer = extraction.layers[-1]
    index = {w: i for i, w in enumerate(extraction.words)}
    matrix = extraction.vectors[layer]
    in_sentences = readout_contexts(prompts)
    if in_sentences:
        ctx = extract_contexts(loaded.model, loaded.tokenizer, in_sentences, layers=config.extraction.layers,
                               pooling=config.extraction.pooling, show_progress=False)
        for k, c in enumerate(in_sentences):
            index[f"{c.word}@{c.start}:{c.context}"] = len(extraction.words) + k
        matrix = np.concatenate([matrix, ctx.vectors[ctx.layers[-1]]])
    record = {"layer": layer, "extraction": {k: v for k, v in extraction.meta.items() if k != "n_tokens"}}
    return WordVectors(index, matrix), sorted(set(words) - set(extraction.words)), record


def _usable(prompts: list[IclPrompt], vectors: WordVectors) -> list[IclPrompt]:
    return [p for p in prompts if all(w in vectors.index for w in readout_words([p]) + [p.query_key])]


def _static_scores(config: IclConfig, vectors: WordVectors, prompts: list[IclPrompt], tune: list[IclPrompt],
                   record: dict[str, Any]) -> Scored:
    rng = np.random.default_rng([config.seed, 7])
    best, beta = _choose_beta(config, tune, readout_probabilities(tune, vectors, config.betas), rng)
    probs = readout_probabilities(prompts, vectors, config.betas)
    return Scored(_logs(probs[:, best]), {"beta": beta, **record},
                  _sweep("static_kernel", prompts, probs, list(config.betas), config.seed), [], {})


def _read(config: IclConfig, loaded: LoadedModel, prompts: list[IclPrompt], attention: bool
          ) -> tuple[list[PromptReading], dict[str, np.ndarray], int]:
    """Every prompt read whole by the model, the zero-shot label keys, and the layer read."""
    t = config.prompts.template
    layer = resolve_layers(config.extraction.layers, n_hidden_layers(loaded.model))[-1]
    readings = read_prompts(loaded.model, loaded.tokenizer, [prompt_spans(p, t) for p in prompts], layer,
                            attention=attention, batch_size=config.batch_size)
    labels = list(dict.fromkeys(lab for p in prompts if not p.demos for lab in p.labels))
    keys = read_prompts(loaded.model, loaded.tokenizer, [label_prompt(lab, t) for lab in labels], layer,
                        attention=False, batch_size=config.batch_size)
    return readings, {lab: r.query for lab, r in zip(labels, keys, strict=True)}, layer


def _state_probs(prompts: list[IclPrompt], readings: list[PromptReading], label_keys: dict[str, np.ndarray],
                 betas: list[float]) -> np.ndarray:
    queries = np.stack([r.query for r in readings]) if readings else np.zeros((0, 1))
    keys = [r.demos if p.demos else np.stack([label_keys[lab] for lab in p.labels])
            for p, r in zip(prompts, readings, strict=True)]
    return state_probabilities(prompts, queries, keys, betas)


def _votes(prompts: list[IclPrompt], readings: list[PromptReading]) -> np.ndarray:
    """Per-head vote probabilities (P, layers, heads, labels) of prompts with demonstrations."""
    n_labels = len(prompts[0].labels)
    shape = readings[0].attention.shape[:2]
    out = np.zeros((len(prompts), *shape, n_labels))
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(len(p.demos), []).append(i)
    for _, idx in groups.items():
        att = np.stack([readings[i].attention for i in idx])
        labels = np.array([[prompts[i].labels.index(lab) for _, lab in prompts[i].demos] for i in idx])
        out[idx] = vote_probabilities(att, labels, n_labels)
    return out


def _in_prompt_scores(config: IclConfig, loaded: LoadedModel, prompts: list[IclPrompt], tune: list[IclPrompt],
                      readout: str) -> Scored:
    """The in_prompt or attention_vote readout: every prompt (and tune prompt) read whole by ``loaded``."""
    readings, label_keys, layer = _read(config, loaded, prompts + tune, readout == "attention_vote")
    ev, tu = readings[:len(prompts)], readings[len(prompts):]
    rng = np.random.default_rng([config.seed, 7])
    if readout == "in_prompt":
        best, beta = _choose_beta(config, tune, _state_probs(tune, tu, label_keys, config.betas), rng)
        probs = _state_probs(prompts, ev, label_keys, config.betas)
        return Scored(_logs(probs[:, best]), {"beta": beta, "layer": str(layer)},
                      _sweep("in_prompt", prompts, probs, list(config.betas), config.seed), [], {})
    # attention_vote: heads chosen on tune prompts with demonstrations; zero-shot prompts have none to attend to
    tune_d = [i for i, p in enumerate(tune) if p.demos]
    if not tune_d:
        raise ValueError("readout='attention_vote' chooses its heads on prompts with demonstrations; accepted: "
                         "shots with at least one value >= 1")
    votes_t = _votes([tune[i] for i in tune_d], [tu[i] for i in tune_d])  # (P, L, H, K)
    gold_t = _gold([tune[i] for i in tune_d])
    pred_t = np.stack([predict(votes_t[:, a, b], rng) for a in range(votes_t.shape[1])
                       for b in range(votes_t.shape[2])], axis=1)  # (P, L*H)
    n_layers, n_h = votes_t.shape[1:3]
    acc_t = (pred_t == gold_t[:, None]).mean(0)
    p_gold = votes_t.reshape(len(tune_d), n_layers * n_h, -1)[np.arange(len(tune_d)), :, gold_t].mean(0)
    order = np.lexsort((-p_gold, -acc_t))[:config.top_heads]
    chosen = [(int(f // n_h), int(f % n_h)) for f in order]
    zero_probs = _state_probs(prompts, ev, label_keys, [1.0])[:, 0]  # zero shots: the in-prompt rule
    with_demos = [i for i, p in enumerate(prompts) if p.demos]
    pooled = zero_probs.copy()
    every = zero_probs.copy()
    heads_rows: list[dict[str, Any]] = []
    if with_demos:
        votes = _votes([prompts[i] for i in with_demos], [ev[i] for i in with_demos])
        pooled[with_demos] = np.mean([votes[:, a, b] for a, b in chosen], axis=0)
        every[with_demos] = votes.mean((1, 2))
        sub = [prompts[i] for i in with_demos]
        gold = _gold(sub)
        for cell, idx in _cells(sub).items():
            for a in range(n_layers):
                for b in range(n_h):
                    heads_rows.append({"condition": cell[0], "shots": cell[1], "layer": a, "head": b,
                                       "accuracy": float((predict(votes[idx, a, b], rng) == gold[idx]).mean()),
                                       "held_out_accuracy": float(acc_t[a * n_h + b]),
                                       "chosen": (a, b) in chosen, "n": len(idx)})
    record = {"heads": {"chosen": [list(h) for h in chosen], "rule": HEAD_RULE, "tuning_prompts": len(tune_d),
                        "held_out_accuracy": [float(acc_t[a * n_h + b]) for a, b in chosen],
                        "layers": int(n_layers), "heads_per_layer": int(n_h)},
              "zero_shot_rule": "in_prompt at beta 1 (no demonstrations to attend to)", "layer": str(layer)}
    return Scored(_logs(pooled), record, [], heads_rows, {"all_heads": _logs(every)})


def _score(readout: str, config: IclConfig, loaded: LoadedModel, prompts: list[IclPrompt], tune: list[IclPrompt],
           vectors: tuple[WordVectors, dict[str, Any]] | None = None) -> Scored:
    """``readout`` of ``loaded`` on ``prompts`` (knobs chosen on ``tune``)."""
    if readout == "lm":
        scored = _lm_scores(config, loaded, prompts)
        return Scored(scored.scores, {"scoring": scored.record()}, [], [], {})
    if readout == "static_kernel":
        if vectors is None:
            wv, _, record = static_vectors(config, loaded, prompts + tune)
            vectors = (wv, record)
        return _static_scores(config, vectors[0], prompts, tune, vectors[1])
    return _in_prompt_scores(config, loaded, prompts, tune, readout)


def _cells(prompts: list[IclPrompt]) -> dict[tuple[str, int], list[int]]:
    cells: dict[tuple[str, int], list[int]] = {}
    for i, p in enumerate(prompts):
        cells.setdefault((p.condition, p.shots), []).append(i)
    return cells


def _lm_scores(config: IclConfig, loaded: LoadedModel, prompts: list[IclPrompt]) -> ScoringResult:
    model, tokenizer = loaded.model, loaded.tokenizer
    t = config.prompts.template
    scoring = [ScoringPrompt(t.prefix(p.demos), t.query_in_context(p.query_context, p.query) if p.query_context
                             else t.query_text(p.query), tuple(t.option(lab) for lab in p.labels))
               for p in prompts]
    return score_prompts(model, tokenizer, scoring, method=config.scoring, batch_size=config.batch_size)


def _conventions(config: IclConfig, loaded: LoadedModel, prompts: list[IclPrompt], logprobs: list[np.ndarray]
                 ) -> tuple[dict[str, list[np.ndarray]], dict[str, float]]:
    """(scores per scoring convention, each label continuation's unconditional log-prob) of the lm readout."""
    t = config.prompts.template
    options = [[t.option(lab) for lab in p.labels] for p in prompts]
    unconditional = unconditional_logprobs(loaded.model, loaded.tokenizer, [o for opts in options for o in opts])
    return convention_scores(logprobs, options, unconditional), unconditional


def _predicted(prompts: list[IclPrompt], logprobs: list[np.ndarray], rng: np.random.Generator) -> list[str]:
    """The highest-scoring label per prompt, ties broken at random."""
    out = []
    for p, lp in zip(prompts, logprobs, strict=True):
        top = np.flatnonzero(lp >= lp.max() - 1e-12)
        out.append(p.labels[int(top[int(rng.integers(len(top)))])])
    return out


@dataclass
class IclResult:
    """An ICL probe in memory: one row per scored prompt, the beta sweeps, per-head accuracies and the summary."""

    config: IclConfig
    readout: str  # the readout used: "lm", "in_prompt", "attention_vote" or "static_kernel"
    rows: list[dict[str, Any]]
    beta_sweep: list[dict[str, Any]]
    summary: dict[str, Any]
    heads: list[dict[str, Any]] | None = None  # attention_vote: per (condition, shots, layer, head) accuracy

    def figures(self) -> dict[str, Figure]:
        """Accuracy against shots per condition, and (kernel readouts) accuracy against beta."""
        out = {"accuracy_vs_shots": accuracy_figure(self.summary)}
        own = [r for r in self.beta_sweep if r["readout"] == self.readout]
        if own:
            out["accuracy_vs_beta"] = beta_sweep_figure(own, best=self.summary["beta"]["best"])
        return out

    def save(self, run: RunFolder) -> None:
        """Write config.yaml, results.csv, beta_sweep.csv, heads.csv, summary.json and the figures into ``run``."""
        run.save_config({**_plain(self.config), "readout_resolved": self.readout})
        run.write_csv("results.csv", self.rows)
        if self.beta_sweep:
            run.write_csv("beta_sweep.csv", self.beta_sweep)
        if self.heads:
            run.write_csv("heads.csv", self.heads)
        if conv := convention_rows(self.summary):
            run.write_csv("scoring_conventions.csv", conv)
        run.write_summary(self.summary)
        captions = {"accuracy_vs_shots": ACCURACY_CAPTION, "accuracy_vs_beta": BETA_CAPTION}
        for name, fig in self.figures().items():
            save_figure(fig, run.figures, name, caption=captions[name])


def run_icl(config: IclConfig, run: RunFolder, *, loaded: LoadedModel | None = None,
            concept_set: ConceptSet | None = None) -> dict[str, Any]:
    """Probe (:func:`icl_probe`), write the run folder, and return summary.json's content."""
    result = icl_probe(config, loaded=loaded, concept_set=concept_set)
    result.save(run)
    return result.summary


def icl_probe(config: IclConfig, *, loaded: LoadedModel | None = None,
              concept_set: ConceptSet | None = None, contexts: ContextSet | None = None) -> IclResult:
    """Sample the ICL prompts, score them with the chosen readout and its baselines, summarise; nothing is written
    to disk. ``contexts``, when given, replaces ``config.contexts`` (the sentences of the in-context queries)."""
    cs = concept_set if concept_set is not None else load_suite(config.prompts.suite, config.prompts.polysemy,
                                                                config.columns)
    conditions = list(config.prompts.conditions)
    if "polysemous_query" in conditions and not cs.polysemy:
        raise ValueError(f"condition polysemous_query needs polysemous words, but concept set {cs.name!r} lists "
                         "none; use suite='polysemy', add polysemy=FILE, or leave polysemous_query out of "
                         "conditions")
    if any(c in SENTENCE_CONDITIONS for c in conditions):
        if not cs.polysemy:
            raise ValueError(f"conditions {', '.join(SENTENCE_CONDITIONS)} need polysemous words, but concept set "
                             f"{cs.name!r} lists none; use --suite polysemy or add --polysemy FILE")
        if contexts is None:
            contexts, _ = load_contexts(config.contexts, cs, min_per_sense=1, columns=config.columns)
    episodes = config.prompts
    sampler = IclSampler(cs, ways=episodes.ways, queries_per_episode=episodes.queries_per_episode,
                         novel_fraction=episodes.novel_fraction, arbitrary_label_sets=tuple(episodes.arbitrary_labels),
                         split_seed=config.seed, contexts=contexts)
    cells = plan(config, sampler)
    if loaded is None:
        readout = choose_readout(config)
    else:
        readout = ("lm" if loaded.causal else "in_prompt") if config.readout == "auto" else config.readout
    if readout == "lm" and loaded is not None and not loaded.causal:
        raise ValueError("readout='lm' needs a causal language model; the loaded model is an encoder; accepted: "
                         "readout='in_prompt' (or attention_vote, static_kernel), or a causal LM")
    prompts = [p for cond, s in cells for p in sampler.sample(cond, s, config.prompts.episodes, config.seed)]
    # Knobs (beta, heads) are chosen on held-out in-distribution episodes of the run's shot counts (seed + 1).
    tune_shots = [s for s in config.prompts.shots if s > 0] or [0]
    tune = [p for s in tune_shots for p in sampler.sample("in_distribution", s, config.tune_episodes,
                                                          config.seed + 1)]
    log.info("ICL probe: %d prompts in %d (condition, shots) cells, %s readout, baselines %s", len(prompts),
             len(cells), readout, ", ".join(config.baselines) or "none")
    if loaded is None:
        ext = config.extraction
        device, device_map = resolve_device(ext.device)
        loaded = load_model(ext.model, kind="causal" if readout == "lm" else "auto", dtype=ext.dtype,
                            device=device, device_map=device_map, trust_remote_code=ext.trust_remote_code,
                            revision=ext.revision)
    ref = loaded.ref
    extra: dict[str, Any] = {}
    vectors = None
    if readout == "static_kernel" or "static_kernel" in config.baselines:
        # Prompts whose words have no static vector are left out of every readout, so all are paired.
        wv, dropped, record = static_vectors(config, loaded, prompts + tune)
        prompts, tune = _usable(prompts, wv), _usable(tune, wv)
        if not tune or not prompts:
            raise ValueError(f"no prompt has vectors for all its words ({len(dropped)} word(s) dropped, e.g. "
                             f"{', '.join(dropped[:5])}); accepted: a model that represents the concept set's words")
        if dropped:
            log.warning("%d word(s) without a vector; prompts using them were left out: %s", len(dropped),
                        ", ".join(dropped[:10]))
        extra["dropped_words"] = dropped
        vectors = (wv, record)
    primary = _score(readout, config, loaded, prompts, tune, vectors)
    extra.update(primary.record)
    conventions: dict[str, list[str]] = {}
    unconditional: dict[str, float] = {}
    if readout == "lm":
        by_convention, unconditional = _conventions(config, loaded, prompts, primary.logprobs)
        rng_c = np.random.default_rng([config.seed, 13])  # its own stream: the other predictions stay as they were
        conventions = {name: _predicted(prompts, sc, rng_c) for name, sc in by_convention.items() if name != "acc"}
    scored: dict[str, Scored] = {}
    described: dict[str, dict[str, Any]] = {}
    if "static_kernel" in config.baselines and readout != "static_kernel":
        scored["static_kernel"] = _score("static_kernel", config, loaded, prompts, tune, vectors)
        described["static_kernel"] = {"readout": "static_kernel", "model": ref.name,
                                      "what": "softmax(beta*cos) between out-of-context word vectors"}
    if "random_weights" in config.baselines:
        random_model = reinitialised_model(loaded, seed=config.seed)
        scored["random_weights"] = _score(readout, config, random_model, prompts, tune)
        described["random_weights"] = {"readout": readout, "model": f"{ref.name}, weights re-initialised (seed "
                                       f"{config.seed}), same tokenizer"}
        del random_model

    rng = np.random.default_rng([config.seed, 11])
    predicted = _predicted(prompts, primary.logprobs, rng)
    others = {name: _predicted(prompts, s.logprobs, rng) for name, s in scored.items()}
    variants = {name: _predicted(prompts, lp, rng) for name, lp in primary.variants.items()}
    majority = _majority(prompts, config.seed)
    freq = sense_frequencies(contexts) if contexts is not None else {}
    rows = []
    for i, p in enumerate(prompts):
        lp = primary.logprobs[i]
        rows.append({
            "task": p.task, "condition": p.condition, "shots": p.shots, "episode": p.episode, "query": p.query,
            "query_concept": p.query_concept, "gold": p.gold, "predicted": predicted[i],
            "correct": int(predicted[i] == p.gold), "majority_label": majority[i],
            **{f"correct_{name}": int(pred[i] == p.gold) for name, pred in {**others, **variants}.items()},
            **{f"correct_{name}": int(pred[i] == p.gold) for name, pred in conventions.items()},
            "labels": json.dumps(list(p.labels)),
            "label_logprobs": json.dumps({lab: round(float(v), 6) for lab, v in zip(p.labels, lp, strict=True)}),
            **({"label_logprobs_unconditional": json.dumps(
                {lab: round(unconditional[config.prompts.template.option(lab)], 6) for lab in p.labels})}
               if unconditional else {}),
            "demonstrations": " | ".join(f"{w}:{lab}" for w, lab in p.demos),
            **({"query_context": p.query_context, "context_sense": p.context_sense,
                **sense_frequency(freq, p.query, p.context_sense)} if p.query_context else {}),
        })
    summary = summarise(rows, ways=config.prompts.ways, n_boot=config.bootstrap, seed=config.seed,
                        baselines=[*scored, *primary.variants], permutations=config.permutations)
    for name, s in scored.items():
        summary["baselines"][name].update(described[name], **{k: v for k, v in s.record.items()
                                                               if k in ("beta", "heads", "layer")})
    for name in primary.variants:
        summary["baselines"][name].update({"readout": f"{readout} ({name.replace('_', ' ')} pooled)",
                                           "model": ref.name, "selected": False})
    if conventions:
        summary["scoring_conventions"] = convention_summary(rows, n_boot=config.bootstrap, seed=config.seed)
    if any("sense_frequency" in r for r in rows):
        summary["sense_frequency"] = sense_frequency_summary(rows, [*scored, *primary.variants],
                                                             n_boot=config.bootstrap, seed=config.seed)
    if isinstance(getattr(contexts, "report", None), SemcorReport):
        extra["contexts_report"] = contexts.report.to_dict()
    is_tiny = is_random_weights(ref.location)
    summary.update({"model": ref.name, "readout": readout, "suite": episodes.suite, "concept_set": cs.name,
                    "ways": episodes.ways, "template": _plain(episodes.template), "random_weights": is_tiny,
                    "prompts": len(rows), "inference": INFERENCE, **extra})
    sweep = primary.sweep + [r for s in scored.values() for r in s.sweep if r["readout"] != readout]
    return IclResult(config, readout, rows, sweep, summary, primary.heads or None)


def _factors(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """The clusters of each row: its episode (within its cell), its query word and its query concept."""
    return [[(r["condition"], r["shots"], r["episode"]) for r in rows], [r["query"] for r in rows],
            [r["query_concept"] for r in rows]]


def _ci(values: list[float], rows: list[dict[str, Any]], n_boot: int, seed: int) -> dict[str, Any]:
    return cluster_bootstrap(values, _factors(rows), n_boot=n_boot, seed=seed).to_dict()


def summarise(rows: list[dict[str, Any]], *, ways: int, n_boot: int = 1000, seed: int = 0,
              baselines: list[str] | tuple[str, ...] = (), permutations: int = 1000) -> dict[str, Any]:
    """accuracy / majority_label / follows_majority as {condition: {shots: {mean, ci_low, ci_high, n}}}, + chance;
    per baseline (a ``correct_<name>`` column) its accuracy tree and ``versus`` (readout minus baseline, paired by
    prompt, with an episode sign-flip p); with both in-context conditions, ``context_effect`` {shots: paired
    accuracy difference}. Intervals: the three-way cluster bootstrap of :data:`INFERENCE`."""
    cells: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        cells.setdefault((r["condition"], int(r["shots"])), []).append(r)
    out: dict[str, Any] = {"chance": 1.0 / ways, "accuracy": {}, "majority_label": {}, "follows_majority": {},
                           "baselines": {name: {"accuracy": {}} for name in baselines}, "versus": {}}
    for (cond, shots), rs in sorted(cells.items(), key=lambda kv: (list(CONDITIONS).index(kv[0][0]), kv[0][1])):
        key = str(shots)
        out["accuracy"].setdefault(cond, {})[key] = _ci([r["correct"] for r in rs], rs, n_boot, seed)
        out["majority_label"].setdefault(cond, {})[key] = _ci(
            [float(r["majority_label"] == r["gold"]) for r in rs], rs, n_boot, seed)
        if shots:
            out["follows_majority"].setdefault(cond, {})[key] = _ci(
                [float(r["predicted"] == r["majority_label"]) for r in rs], rs, n_boot, seed)
        for name in baselines:
            col = f"correct_{name}"
            out["baselines"][name]["accuracy"].setdefault(cond, {})[key] = _ci([r[col] for r in rs], rs, n_boot, seed)
            diff = [float(r["correct"]) - float(r[col]) for r in rs]
            d = _ci(diff, rs, n_boot, seed)
            d["p_value"] = sign_flip_p(diff, _factors(rs)[0], permutations=permutations, seed=seed)
            out["versus"].setdefault(name, {}).setdefault(cond, {})[key] = d
    twin, adversarial = CONTEXT_CONDITIONS
    for key in sorted(set(out["accuracy"].get(twin, {})) & set(out["accuracy"].get(adversarial, {})), key=int):
        pair = (cells[(twin, int(key))], cells[(adversarial, int(key))])
        out.setdefault("context_effect", {})[key] = context_effect(*pair, n_boot=n_boot, seed=seed).to_dict()
        for name in baselines:
            out["baselines"][name].setdefault("context_effect", {})[key] = context_effect(
                *pair, n_boot=n_boot, seed=seed, column=f"correct_{name}").to_dict()
    return out


def convention_summary(rows: list[dict[str, Any]], *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The lm readout's accuracy under each scoring convention (acc = ``correct``, the others ``correct_<name>``),
    {convention: {condition: {shots: {mean, ci_low, ci_high, n}}}}, with the same intervals as ``accuracy``."""
    cells: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        cells.setdefault((r["condition"], int(r["shots"])), []).append(r)
    out: dict[str, Any] = {"rules": dict(CONVENTION_RULES), "accuracy": {name: {} for name in CONVENTIONS},
                           "prediction_of_record": "acc"}
    for (cond, shots), rs in sorted(cells.items(), key=lambda kv: (list(CONDITIONS).index(kv[0][0]), kv[0][1])):
        for name in CONVENTIONS:
            col = "correct" if name == "acc" else f"correct_{name}"
            out["accuracy"][name].setdefault(cond, {})[str(shots)] = _ci([r[col] for r in rs], rs, n_boot, seed)
    return out


def convention_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """scoring_conventions.csv: one row per (condition, shots), each convention's accuracy and interval side by
    side (empty for readouts other than lm)."""
    tree = summary.get("scoring_conventions", {}).get("accuracy", {})
    if not tree:
        return []
    out = []
    for cond, by_shots in tree["acc"].items():
        for shots in by_shots:
            row: dict[str, Any] = {"condition": cond, "shots": int(shots), "n": by_shots[shots]["n"]}
            for name in CONVENTIONS:
                cell = tree[name][cond][shots]
                row.update({name: cell["mean"], f"{name}_ci_low": cell["ci_low"], f"{name}_ci_high": cell["ci_high"]})
            out.append(row)
    return out
def sense_frequencies(contexts: ContextSet) -> dict[str, dict[str, int]]:
    """word -> sense -> occurrences in the corpus: SemCor's counts before the cap (the natural skew), else the
    context set's own counts."""
    report = getattr(contexts, "report", None)
    if isinstance(report, SemcorReport) and report.per_word:
        return {w: dict(c) for w, c in report.per_word.items()}
    out: dict[str, dict[str, int]] = {}
    for (word, sense), n in contexts.counts().items():
        out.setdefault(word, {})[sense] = n
    return out


def sense_frequency(freq: dict[str, dict[str, int]], word: str, sense: str) -> dict[str, Any]:
    """Whether ``sense`` is ``word``'s majority sense (the one strictly most frequent), a minority sense, or tied
    for the top; and its share of the word's occurrences."""
    counts = freq.get(word, {})
    total, n = sum(counts.values()), counts.get(sense, 0)
    top = max(counts.values(), default=0)
    kind = "tied" if n == top and sum(v == top for v in counts.values()) > 1 else "majority" if n == top else "minority"
    return {"sense_frequency": kind if total else "unknown", "sense_share": n / total if total else float("nan")}


def sense_frequency_summary(rows: list[dict[str, Any]], baselines: list[str] | tuple[str, ...], *, n_boot: int,
                            seed: int) -> dict[str, Any]:
    """{condition: {shots: {majority, minority, difference}}} of the prompts whose query sits in a sentence: accuracy
    of queries in the word's majority sense and in a minority sense (tied senses left out), each with a cluster
    bootstrap over query words; the difference majority - minority resamples words once for both; the same per
    baseline under ``baselines``."""
    out: dict[str, Any] = {"unit": "query words (cluster bootstrap)", "tied_left_out": 0, "baselines": {}}
    cells: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("sense_frequency") in ("majority", "minority"):
            cells.setdefault((r["condition"], int(r["shots"])), []).append(r)
        elif "sense_frequency" in r:
            out["tied_left_out"] += 1
    for column, target in [("correct", out), *[(f"correct_{b}", out["baselines"].setdefault(b, {}))
                                               for b in baselines]]:
        for (cond, shots), rs in sorted(cells.items()):
            cell: dict[str, Any] = {}
            for kind in ("majority", "minority"):
                part = [r for r in rs if r["sense_frequency"] == kind]
                cell[kind] = cluster_bootstrap([float(r[column]) for r in part], [[r["query"] for r in part]],
                                               n_boot=n_boot, seed=seed).to_dict()
                cell[kind]["n_words"] = len({r["query"] for r in part})
            cell["difference"] = majority_minority_difference(rs, column, n_boot=n_boot, seed=seed)
            target.setdefault(cond, {})[str(shots)] = cell
    return out


def majority_minority_difference(rows: list[dict[str, Any]], column: str = "correct", *, n_boot: int = 1000,
                                 seed: int = 0) -> dict[str, float]:
    """Accuracy of majority-sense minus minority-sense queries, with a 95% percentile interval from resampling the
    query words (a drawn word brings all its prompts of both kinds)."""
    words = sorted({r["query"] for r in rows})
    index = {w: i for i, w in enumerate(words)}
    code = np.array([index[r["query"]] for r in rows])
    value = np.array([float(r[column]) for r in rows])
    major = np.array([r["sense_frequency"] == "majority" for r in rows])

    def diff(weights: np.ndarray) -> np.ndarray:  # weights (B, n_words)
        w = weights[:, code]
        a, b = (w * major).sum(1), (w * ~major).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (w * major * value).sum(1) / a - (w * ~major * value).sum(1) / b

    point = float(diff(np.ones((1, len(words))))[0])
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(words), size=(n_boot, len(words)))
    counts = np.zeros((n_boot, len(words)))
    np.add.at(counts, (np.repeat(np.arange(n_boot), len(words)), draws.ravel()), 1.0)
    boots = diff(counts)
    low, high = (np.nanquantile(boots, [0.025, 0.975]) if np.isfinite(boots).any() else (np.nan, np.nan))
    return {"mean": point, "ci_low": float(low), "ci_high": float(high), "n": len(rows), "n_words": len(words)}


def context_effect(selecting: list[dict[str, Any]], adversarial: list[dict[str, Any]], *, n_boot: int = 1000,
                   seed: int = 0, column: str = "correct") -> AccuracyCI:
    """Accuracy with the sense-selecting sentence minus accuracy with the other-sense sentence, paired prompt by
    prompt (the twins share word, task and demonstrations: the k-th query of episode e in each), with the
    three-way cluster bootstrap interval."""
    def keyed(rows: list[dict[str, Any]]) -> dict[tuple[int, int], dict[str, Any]]:
        seen: dict[int, int] = {}
        out = {}
        for r in rows:
            e = int(r["episode"])
            out[(e, seen.get(e, 0))] = r
            seen[e] = seen.get(e, 0) + 1
        return out

    a, b = keyed(selecting), keyed(adversarial)
    shared = sorted(set(a) & set(b))
    pairs = [a[k] for k in shared]
    return cluster_bootstrap([float(a[k][column]) - float(b[k][column]) for k in shared], _factors(pairs),
                             n_boot=n_boot, seed=seed)


def _plain(obj: Any) -> Any:

    return to_dict(obj)


def execute(config: IclConfig, ctx: JobContext) -> int:
    """``mcicl probe icl``: check the inputs, open the run folder, probe, save, print the headline accuracy."""
    seed_everything(config.seed)
    # A typo in --suite / --polysemy fails before the output folder exists.
    concept_set = load_suite(config.prompts.suite, config.prompts.polysemy, config.columns)
    folder = ctx.create_run(inputs={"--model": config.extraction.model, "--suite": config.prompts.suite,
                                    "--polysemy": config.prompts.polysemy})
    summary = run_icl(config, folder, concept_set=concept_set)
    acc = summary["accuracy"]
    best = max((int(s) for s in acc.get("in_distribution", {})), default=None)
    if best is not None:
        cell = acc["in_distribution"][str(best)]
        print(f"in-distribution accuracy at {best} shots ({summary['readout']}): {cell['mean']:.3f} "
              f"[{cell['ci_low']:.3f}, {cell['ci_high']:.3f}] (chance {summary['chance']:.2f})")
        for name, base in summary["baselines"].items():
            b, v = base["accuracy"]["in_distribution"][str(best)], summary["versus"][name]["in_distribution"][str(best)]
            print(f"  baseline {name}: {b['mean']:.3f}; difference {v['mean']:+.3f} [{v['ci_low']:+.3f}, "
                  f"{v['ci_high']:+.3f}], p {v['p_value']:.3g}")
        conventions = summary.get("scoring_conventions", {}).get("accuracy", {})
        if conventions:
            print("  scoring conventions: " + ", ".join(
                f"{name} {tree['in_distribution'][str(best)]['mean']:.3f}" for name, tree in conventions.items()))
    print(f"output is in {folder.path}")
    return 0


def demo_config(ctx: DemoContext) -> IclConfig:
    """The ICL config of the demo stage: the in-prompt readout on the built-in polysemy suite, beside the static
    kernel (and, full size, the random-weight model); smaller with ``ctx.small``."""
    small = ctx.small
    prompts = EpisodeConfig(suite="polysemy", shots=[0, 2, 8] if small else [0, 1, 2, 4, 8, 16],
                            episodes=12 if small else 25)
    return IclConfig(extraction=ExtractionConfig(model=ctx.model, layers="last", device="cpu"), prompts=prompts,
                     readout="in_prompt", baselines=["static_kernel"] if small else ["static_kernel", "random_weights"],
                     tune_episodes=8 if small else 25, bootstrap=200 if small else 1000,
                     permutations=200 if small else 1000, seed=ctx.seed or 0)


def demo_stage(ctx: DemoContext) -> dict[str, Any]:
    """Demo stage "ICL probes (in-prompt readout)": the probe into ``run/icl`` (run.json: "demo icl"); returns
    the headline accuracies."""
    config = demo_config(ctx)
    folder = ctx.stage_run("icl", "demo icl")
    summary = run_icl(config, folder)
    acc = summary["accuracy"]
    top = str(max(s for s in config.prompts.shots if s > 0))
    return {
        "folder": str(folder.path), "readout": summary["readout"], "beta": summary["beta"]["best"],
        "chance": summary["chance"],
        f"in_distribution_{top}_shots": acc["in_distribution"][top],
        f"polysemous_query_{top}_shots": acc["polysemous_query"][top],
        "zero_shot": acc["zero_shot"]["0"],
        f"in_distribution_{top}_shots_static_kernel": summary["baselines"]["static_kernel"]["accuracy"][
            "in_distribution"][top],
        "figure": str(folder.figures / "accuracy_vs_shots.png"),
    }
