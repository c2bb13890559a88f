"""``mcicl probe icl`` as a function: sample prompts per (condition, shots), score them, summarise, plot.

Two readouts share the prompts and the outputs:
- ``lm``: a causal LM scores every candidate label (probing.icl.scoring, cached prefixes);
- ``attention``: any model's word vectors (probing.extract) feed the attention readout (probing.icl.readout);
  a query inside a sentence (the in_context conditions) is its contextual vector (probing.contextual).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from transformers import AutoConfig

from mcicl.core.configuration import to_dict
from mcicl.core.jobs import DemoContext, JobContext
from mcicl.core.plotting import save_figure
from mcicl.core.runs import RunFolder
from mcicl.core.seeding import seed_everything
from mcicl.probing.contextual import extract_contexts, load_contexts
from mcicl.probing.datasets import builtin_concepts, load_concept_set
from mcicl.probing.datasets.concepts import ConceptSet
from mcicl.probing.extract import ExtractionConfig, extract_words
from mcicl.probing.icl.episodes import EpisodeConfig
from mcicl.probing.icl.figures import ACCURACY_CAPTION, BETA_CAPTION, accuracy_figure, beta_sweep_figure
from mcicl.probing.icl.icl_config import READOUTS, SCORING_METHODS, IclConfig  # noqa: F401  (imported from here)
from mcicl.probing.icl.readout import (
    LOG_FLOOR,
    WordVectors,
    predict,
    readout_contexts,
    readout_probabilities,
    readout_words,
)
from mcicl.probing.icl.scoring import ScoringPrompt, ScoringResult, score_prompts
from mcicl.probing.icl.stats import bootstrap_accuracy
from mcicl.probing.icl.tasks import (
    CONDITIONS,
    CONTEXT_CONDITIONS,
    IclPrompt,
    IclSampler,
    majority_label,
)
from mcicl.probing.models import (
    LoadedModel,
    ModelNotFoundError,
    hub_error,
    is_causal_config,
    load_model,
    pretrained_kwargs,
    resolve_model,
)
from mcicl.probing.placement import resolve_device
from mcicl.probing.tiny import is_random_weights

log = logging.getLogger("mcicl")


def load_suite(suite: str, polysemy: str | None = None) -> ConceptSet:
    """The concept set of ``--suite``: 'polysemy' (built-in, with polysemy), 'concepts' (built-in, none), a file."""

    if suite == "polysemy":
        cs = builtin_concepts()
        return load_concept_set(cs, polysemy=polysemy) if polysemy else cs
    if suite == "concepts":
        cs = builtin_concepts()
        return ConceptSet(cs.name, cs.concepts, {}, {}, dict(cs.parents), cs.min_words)
    if not Path(suite).is_file():
        raise FileNotFoundError(f"suite={suite!r}: accepted: 'polysemy', 'concepts', or a concept-set file "
                                "(the JSON/CSV that `mcicl probe geometry --concepts` takes)")
    return load_concept_set(suite, polysemy=polysemy)


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
    """'lm' or 'attention'; a clear error when an encoder is asked for --readout lm."""


    ref = resolve_model(config.extraction.model)
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
                         "accepted: readout='attention' for this model, or a causal LM such as "
                         "model='EleutherAI/pythia-160m'")
    if config.readout == "auto":
        return "lm" if causal else "attention"
    return config.readout


def _attention_scores(config: IclConfig, loaded: LoadedModel, prompts: list[IclPrompt], tune: list[IclPrompt]):
    """(label log-probs per prompt, beta record, dropped words) with the attention readout."""

    words = readout_words(prompts + tune)
    extraction = extract_words(words, config.extraction, loaded=loaded)
    layer = extraction.layers[-1]
    index = {w: i for i, w in enumerate(extraction.words)}
    matrix = extraction.vectors[layer]
    in_sentences = readout_contexts(prompts + tune)
    if in_sentences:
        # Queries inside sentences: their contextual vectors at the same layer, same pooling.
        ctx = extract_contexts(loaded.model, loaded.tokenizer, in_sentences, layers=config.extraction.layers,
                               pooling=config.extraction.pooling, show_progress=False)
        for k, c in enumerate(in_sentences):
            index[f"{c.word}@{c.start}:{c.context}"] = len(extraction.words) + k
        matrix = np.concatenate([matrix, ctx.vectors[ctx.layers[-1]]])
    vectors = WordVectors(index, matrix)
    dropped = sorted(set(words) - set(extraction.words))

    def usable(ps: list[IclPrompt]) -> list[IclPrompt]:
        return [p for p in ps if all(w in vectors.index for w in readout_words([p]) + [p.query_key])]

    prompts_ok, tune_ok = usable(prompts), usable(tune)
    if not tune_ok:
        raise ValueError(f"no beta-tuning prompt has vectors for all its words ({len(dropped)} word(s) dropped, "
                         f"e.g. {', '.join(dropped[:5])}); accepted: a model that represents the concept set's words")
    rng = np.random.default_rng([config.seed, 7])
    # Choose beta on held-out in-distribution episodes, then apply it everywhere.
    tune_probs = readout_probabilities(tune_ok, vectors, config.betas)
    gold = np.array([p.labels.index(p.gold) for p in tune_ok])
    tune_acc = [float((predict(tune_probs[:, b], rng) == gold).mean()) for b in range(len(config.betas))]
    best = int(np.argmax(tune_acc))  # first maximum: the smallest beta among ties
    probs = readout_probabilities(prompts_ok, vectors, config.betas)
    sweep = []
    for b, beta in enumerate(config.betas):
        pred = predict(probs[:, b], rng)
        for cell, idx in _cells(prompts_ok).items():
            g = np.array([prompts_ok[i].labels.index(prompts_ok[i].gold) for i in idx])
            sweep.append({"condition": cell[0], "shots": cell[1], "beta": beta,
                          "accuracy": float((pred[idx] == g).mean()), "n": len(idx)})
    logprobs = [np.log(np.maximum(probs[i, best], LOG_FLOOR)) for i in range(len(prompts_ok))]
    record = {"grid": list(config.betas), "best": config.betas[best], "layer": layer,
              "tuning_accuracy": dict(zip([str(b) for b in config.betas], tune_acc, strict=True)),
              "tuning_prompts": len(tune_ok), "extraction": {k: v for k, v in extraction.meta.items()
                                                             if k != "n_tokens"}}
    return prompts_ok, logprobs, record, dropped, sweep


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


@dataclass
class IclResult:
    """An ICL probe in memory: one row per scored prompt, the beta sweep (attention readout) and the summary."""

    config: IclConfig
    readout: str  # the readout used: "lm" or "attention"
    rows: list[dict[str, Any]]
    beta_sweep: list[dict[str, Any]]
    summary: dict[str, Any]

    def figures(self) -> dict[str, Figure]:
        """Accuracy against shots per condition, and (attention readout) accuracy against beta."""
        out = {"accuracy_vs_shots": accuracy_figure(self.summary)}
        if self.beta_sweep:
            out["accuracy_vs_beta"] = beta_sweep_figure(self.beta_sweep, best=self.summary["beta"]["best"])
        return out

    def save(self, run: RunFolder) -> None:
        """Write config.yaml, results.csv, beta_sweep.csv, summary.json and the figures into ``run``."""
        run.save_config({**_plain(self.config), "readout_resolved": self.readout})
        run.write_csv("results.csv", self.rows)
        if self.beta_sweep:
            run.write_csv("beta_sweep.csv", self.beta_sweep)
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
              concept_set: ConceptSet | None = None) -> IclResult:
    """Sample the ICL prompts, score them with the chosen readout and summarise; nothing is written to disk."""

    cs = concept_set if concept_set is not None else load_suite(config.prompts.suite, config.prompts.polysemy)
    conditions = list(config.prompts.conditions)
    if "polysemous_query" in conditions and not cs.polysemy:
        raise ValueError(f"condition polysemous_query needs polysemous words, but concept set {cs.name!r} lists "
                         "none; use suite='polysemy', add polysemy=FILE, or leave polysemous_query out of "
                         "conditions")
    contexts = None
    if any(c in CONTEXT_CONDITIONS for c in conditions):
        if not cs.polysemy:
            raise ValueError(f"conditions {', '.join(CONTEXT_CONDITIONS)} need polysemous words, but concept set "
                             f"{cs.name!r} lists none; use --suite polysemy or add --polysemy FILE")
        contexts, _ = load_contexts(config.contexts, cs, min_per_sense=1)
    episodes = config.prompts
    sampler = IclSampler(cs, ways=episodes.ways, queries_per_episode=episodes.queries_per_episode,
                         novel_fraction=episodes.novel_fraction, arbitrary_label_sets=tuple(episodes.arbitrary_labels),
                         split_seed=config.seed, contexts=contexts)
    cells = plan(config, sampler)
    readout = choose_readout(config) if loaded is None else (
        "lm" if config.readout == "lm" or (config.readout == "auto" and loaded.causal) else "attention")
    if readout == "lm" and loaded is not None and not loaded.causal:
        raise ValueError("readout='lm' needs a causal language model; the loaded model is an encoder; accepted: "
                         "readout='attention', or a causal LM")
    prompts = [p for cond, s in cells for p in sampler.sample(cond, s, config.prompts.episodes, config.seed)]
    log.info("ICL probe: %d prompts in %d (condition, shots) cells, %s readout", len(prompts), len(cells), readout)
    if loaded is None:

        ext = config.extraction
        device, device_map = resolve_device(ext.device)
        loaded = load_model(ext.model, kind="causal" if readout == "lm" else "auto", dtype=ext.dtype,
                            device=device, device_map=device_map, trust_remote_code=ext.trust_remote_code)
    ref = loaded.ref
    extra: dict[str, Any] = {}
    sweep: list[dict] = []
    if readout == "attention":
        # Tune beta on the runs' shot counts; with --shots 0 alone, on 0-shot prompts (then beta barely matters).
        tune_shots = [s for s in config.prompts.shots if s > 0] or [0]
        tune = [p for s in tune_shots for p in sampler.sample("in_distribution", s, config.tune_episodes,
                                                              config.seed + 1)]
        prompts, logprobs, extra["beta"], dropped, sweep = _attention_scores(config, loaded, prompts, tune)
        if dropped:
            log.warning("%d word(s) without a vector; prompts using them were left out: %s", len(dropped),
                        ", ".join(dropped[:10]))
        extra["dropped_words"] = dropped
    else:
        scored = _lm_scores(config, loaded, prompts)
        logprobs, extra["scoring"] = scored.scores, scored.record()

    rng = np.random.default_rng([config.seed, 11])
    rows = []
    for p, lp in zip(prompts, logprobs, strict=True):
        top = np.flatnonzero(lp >= lp.max() - 1e-12)
        predicted = p.labels[int(top[int(rng.integers(len(top)))])]
        rows.append({
            "task": p.task, "condition": p.condition, "shots": p.shots, "episode": p.episode, "query": p.query,
            "query_concept": p.query_concept, "gold": p.gold, "predicted": predicted,
            "correct": int(predicted == p.gold), "majority_label": majority_label(p, rng),
            "labels": json.dumps(list(p.labels)),
            "label_logprobs": json.dumps({lab: round(float(v), 6) for lab, v in zip(p.labels, lp, strict=True)}),
            "demonstrations": " | ".join(f"{w}:{lab}" for w, lab in p.demos),
            **({"query_context": p.query_context, "context_sense": p.context_sense} if p.query_context else {}),
        })
    summary = summarise(rows, ways=config.prompts.ways, n_boot=config.bootstrap, seed=config.seed)
    is_tiny = is_random_weights(ref.location)
    summary.update({"model": ref.name, "readout": readout, "suite": episodes.suite, "concept_set": cs.name,
                    "ways": episodes.ways, "template": _plain(episodes.template), "random_weights": is_tiny,
                    "prompts": len(rows), **extra})
    return IclResult(config, readout, rows, sweep, summary)


def summarise(rows: list[dict[str, Any]], *, ways: int, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """accuracy / majority_label / follows_majority as {condition: {shots: {mean, ci_low, ci_high, n}}}, + chance;
    with both in-context conditions, ``context_effect`` {shots: paired accuracy difference} (n = episodes)."""
    cells: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        cells.setdefault((r["condition"], int(r["shots"])), []).append(r)
    out: dict[str, Any] = {"chance": 1.0 / ways, "accuracy": {}, "majority_label": {}, "follows_majority": {}}
    for (cond, shots), rs in sorted(cells.items(), key=lambda kv: (list(CONDITIONS).index(kv[0][0]), kv[0][1])):
        episodes = [r["episode"] for r in rs]
        key = str(shots)
        out["accuracy"].setdefault(cond, {})[key] = bootstrap_accuracy(
            [r["correct"] for r in rs], episodes, n_boot=n_boot, seed=seed).to_dict()
        out["majority_label"].setdefault(cond, {})[key] = bootstrap_accuracy(
            [r["majority_label"] == r["gold"] for r in rs], episodes, n_boot=n_boot, seed=seed).to_dict()
        if shots:
            out["follows_majority"].setdefault(cond, {})[key] = bootstrap_accuracy(
                [r["predicted"] == r["majority_label"] for r in rs], episodes, n_boot=n_boot, seed=seed).to_dict()
    twin, adversarial = CONTEXT_CONDITIONS
    for key in sorted(set(out["accuracy"].get(twin, {})) & set(out["accuracy"].get(adversarial, {})), key=int):
        out.setdefault("context_effect", {})[key] = context_effect(
            cells[(twin, int(key))], cells[(adversarial, int(key))], n_boot=n_boot, seed=seed).to_dict()
    return out


def context_effect(selecting: list[dict[str, Any]], adversarial: list[dict[str, Any]], *, n_boot: int = 1000,
                   seed: int = 0) -> Any:
    """Accuracy with the sense-selecting sentence minus accuracy with the other-sense sentence, paired by episode
    (the twins share word, task and demonstrations), with a bootstrap interval over episodes."""
    def per_episode(rows: list[dict[str, Any]]) -> dict[int, float]:
        out: dict[int, list[int]] = {}
        for r in rows:
            out.setdefault(int(r["episode"]), []).append(int(r["correct"]))
        return {e: float(np.mean(v)) for e, v in out.items()}

    a, b = per_episode(selecting), per_episode(adversarial)
    shared = sorted(set(a) & set(b))
    return bootstrap_accuracy([a[e] - b[e] for e in shared], n_boot=n_boot, seed=seed)


def _plain(obj: Any) -> Any:

    return to_dict(obj)


def execute(config: IclConfig, ctx: JobContext) -> int:
    """``mcicl probe icl``: check the inputs, open the run folder, probe, save, print the headline accuracy."""
    seed_everything(config.seed)
    # A typo in --suite / --polysemy fails before the output folder exists.
    concept_set = load_suite(config.prompts.suite, config.prompts.polysemy)
    folder = ctx.create_run(inputs={"--model": config.extraction.model, "--suite": config.prompts.suite,
                                    "--polysemy": config.prompts.polysemy})
    summary = run_icl(config, folder, concept_set=concept_set)
    acc = summary["accuracy"]
    best = max((int(s) for s in acc.get("in_distribution", {})), default=None)
    if best is not None:
        cell = acc["in_distribution"][str(best)]
        print(f"in-distribution accuracy at {best} shots: {cell['mean']:.3f} "
              f"[{cell['ci_low']:.3f}, {cell['ci_high']:.3f}] (chance {summary['chance']:.2f})")
    print(f"output is in {folder.path}")
    return 0


def demo_config(ctx: DemoContext) -> IclConfig:
    """The ICL config of the demo stage: the attention readout on the built-in polysemy suite (smaller with
    ``ctx.small``)."""
    small = ctx.small
    prompts = EpisodeConfig(suite="polysemy", shots=[0, 2, 8] if small else [0, 1, 2, 4, 8, 16],
                            episodes=12 if small else 25)
    return IclConfig(extraction=ExtractionConfig(model=ctx.model, layers="last", device="cpu"), prompts=prompts,
                     readout="attention", tune_episodes=8 if small else 25, seed=ctx.seed or 0)


def demo_stage(ctx: DemoContext) -> dict[str, Any]:
    """Demo stage "ICL probes (attention readout)": the probe into ``run/icl`` (run.json: "demo icl"); returns
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
        "figure": str(folder.figures / "accuracy_vs_shots.png"),
    }
