"""``mcicl probe semcor``: polysemous nouns of SemCor 3.0 labelled by WordNet supersense, measured per layer.

:func:`measure_semcor` reads the corpus (:mod:`probing.semcor`), builds ``--concepts supersenses``
(:mod:`probing.datasets.supersenses`), keeps at most ``max_per_sense`` occurrences per (word, supersense)
(seeded draw), and measures with :func:`probing.contextual.measure_contexts` the supersense accuracy in and
out of context per layer (polysemous words; monosemous controls), then the WiC-style pair AUC
(:mod:`analysis.engine.wic`) of the raw contextual vectors of the polysemous words' occurrences, for
same- vs different-supersense pairs and same- vs different-synset pairs (and, with ``wic``, the labelled pairs of a
WiC file, :mod:`probing.wic_input`). With ``random_baseline`` the same
architecture with random weights (``torch.manual_seed(seed)``, the model's own initialisation) is measured
the same way. :class:`SemcorResult` saves sense_counts.csv, sense_accuracy.csv, pair_auc.csv, summary.json and
two figures (per-word sense counts; accuracy and pair AUC per layer with intervals).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from mcicl.analysis.engine.wic import make_pairs, pair_auc, pair_cosines
from mcicl.core.io import strict_json
from mcicl.core.jobs import JobContext
from mcicl.core.plotting import Caption, save_figure
from mcicl.core.runs import RunFolder
from mcicl.core.seeding import seed_everything
from mcicl.probing.contexts_config import ContextsConfig
from mcicl.probing.contextual import ContextsResult, extract_contexts, measure_contexts
from mcicl.probing.datasets.supersenses import supersense_concepts
from mcicl.probing.extract import load_for
from mcicl.probing.models import LoadedModel, ModelRef
from mcicl.probing.semcor import SemcorContextSet, default_semcor, load_semcor_contexts
from mcicl.probing.semcor_config import SemcorConfig
from mcicl.probing.wic_input import read_wic, wic_contexts, wic_pair_auc

log = logging.getLogger("mcicl")
COUNTS_WORDS = 30
COUNTS_CAPTION = Caption("Senses in text: occurrences per supersense",
                         "Occurrences per supersense of the polysemous nouns of SemCor (found in the corpus before the "
                  "cap), the most frequent words, bars stacked by supersense: the natural skew of senses in text.")
LAYERS_CAPTION = Caption("SemCor supersenses per layer",
                         "Per layer: supersense accuracy of polysemous nouns in context and out of context (the word "
                  "alone: at most its majority-sense share), and the pair AUC (same vs different supersense, and "
                  "synset), trained vs random weights; 95% intervals resample words.")


def random_weights(loaded: LoadedModel, seed: int) -> LoadedModel:
    """The same architecture and tokenizer with freshly initialised weights (``torch.manual_seed(seed)``)."""
    import torch  # deferred: the config and --help stay torch-free

    torch.manual_seed(seed)
    model = type(loaded.model)(loaded.model.config).eval()
    ref = ModelRef(f"{loaded.ref.name} (random weights)", loaded.ref.location, "local")
    return LoadedModel(model, loaded.tokenizer, ref)


def corpus_path(spec: str) -> Path:
    """The SemCor folder named by ``spec`` ('auto': :func:`probing.semcor.default_semcor`)."""
    if spec != "auto":
        return Path(spec).expanduser()
    found = default_semcor()
    if found is None:
        raise FileNotFoundError("corpus='auto': SemCor 3.0 not found in ../shared/data/semcor3.0 or "
                                "/work/shared/data/semcor3.0; accepted: --corpus PATH (a SemCor 3.0 folder)")
    return found


@dataclass
class SemcorResult:
    """Sense counts, per-layer accuracy (trained, random weights) and pair AUC rows, and the corpus report."""

    config: SemcorConfig
    report: dict[str, Any]
    counts: list[dict[str, Any]]
    accuracy: list[dict[str, Any]]
    pairs: list[dict[str, Any]]
    info: dict[str, Any]
    details: dict[str, ContextsResult] = field(default_factory=dict)  # model -> its measurement (not saved)
    contexts: SemcorContextSet | None = None

    @property
    def summary(self) -> dict[str, Any]:
        """summary.json: the corpus report, the best layer's numbers and every layer's rows."""
        trained = [r for r in self.pairs if r["model"] == "trained" and r["label"] == "supersense"]
        best = max(trained, key=lambda r: r["auc"]) if trained else None
        return strict_json({**self.info, "semcor": self.report,
                            "pair_auc_best_layer": best, "accuracy": self.accuracy, "pair_auc": self.pairs})

    def figures(self) -> dict[str, Figure]:
        """``sense_counts`` and ``semcor_layers``."""
        return {"sense_counts": sense_counts_figure(self.counts), "semcor_layers": layers_figure(self)}

    def save(self, run: RunFolder) -> None:
        """Write config.yaml, the three CSV tables, the figures and summary.json."""
        run.save_config(self.config)
        run.write_csv("sense_counts.csv", self.counts)
        run.write_csv("sense_accuracy.csv", self.accuracy)
        run.write_csv("pair_auc.csv", self.pairs)
        captions = {"sense_counts": COUNTS_CAPTION, "semcor_layers": LAYERS_CAPTION}
        for name, fig in self.figures().items():
            save_figure(fig, run.figures, name, caption=captions[name])
        run.write_summary(self.summary)


def sense_count_rows(ctx: SemcorContextSet) -> list[dict[str, Any]]:
    """One row per (kept word, supersense): occurrences found in the corpus, kept, and the word's share."""
    kept = ctx.counts()
    out = []
    for word in ctx.words:
        found = ctx.report.per_word.get(word, {})
        total = sum(found.values())
        for sense, n in sorted(found.items(), key=lambda kv: (-kv[1], kv[0])):
            out.append({"word": word, "sense": sense, "found": n, "kept": kept.get((word, sense), 0),
                        "share": n / total if total else float("nan"), "word_total": total})
    return out


def _accuracy_rows(result: ContextsResult, model: str) -> list[dict[str, Any]]:
    rows = []
    for group, stats in (("polysemous", result.polysemous), ("controls", result.controls)):
        if stats is None:
            continue
        for layer, named in stats.per_layer.items():
            for stat in ("sense_accuracy", "baseline_accuracy"):
                s = named[stat]
                rows.append({"model": model, "group": group, "layer": layer,
                             "stat": "in_context" if stat == "sense_accuracy" else "out_of_context",
                             "value": s.value, "ci_low": s.ci_low, "ci_high": s.ci_high, "null": s.null_mean,
                             "p_value": s.p_value, "n_words": s.n})
    return rows


def _pair_rows(result: ContextsResult, ctx: SemcorContextSet, model: str, n_bootstrap: int,
               seed: int) -> list[dict[str, Any]]:
    ext = result.extraction
    idx = result.poly_rows
    words = [ext.contexts[int(i)].word for i in idx]
    labels = {"supersense": [ext.contexts[int(i)].sense for i in idx],
              "synset": [ctx.synsets[ext.contexts[int(i)].source] for i in idx]}
    rows = []
    for label, values in labels.items():
        pairs = make_pairs(words, values)
        for k, layer in enumerate(ext.layers):
            scores = pair_cosines(ext.vectors[layer][idx], pairs)
            a = pair_auc(scores, pairs, n_bootstrap=n_bootstrap, seed=seed + k)
            rows.append({"model": model, "label": label, "layer": layer, **a.to_dict()})
    return rows


def measure_semcor(cfg: SemcorConfig, *, loaded: LoadedModel | None = None, quiet: bool = False) -> SemcorResult:
    """Read, select, extract and measure (module doc); writes nothing."""
    path = corpus_path(cfg.corpus)
    cs = supersense_concepts()
    ctx = load_semcor_contexts(f"semcor:{path}", cs, min_per_sense=cfg.min_per_sense,
                               max_per_sense=cfg.max_per_sense, seed=cfg.seed, max_files=cfg.max_files)
    cc = ContextsConfig(extraction=cfg.extraction, contexts=f"semcor:{path}", concepts="supersenses",
                        min_per_sense=cfg.min_per_sense, permutations=cfg.permutations, bootstrap=cfg.bootstrap,
                        seed=cfg.seed)
    loaded = loaded if loaded is not None else load_for(cfg.extraction)
    models = [("trained", loaded)] + ([("random", random_weights(loaded, cfg.seed))] if cfg.random_baseline else [])
    wic = wic_contexts(read_wic(cfg.wic)) if cfg.wic else None
    accuracy, pairs, details = [], [], {}
    for name, lm in models:
        result = details[name] = measure_contexts(cc, loaded=lm, concept_set=cs, contexts=ctx, quiet=quiet)
        accuracy += _accuracy_rows(result, name)
        pairs += _pair_rows(result, ctx, name, cfg.bootstrap, cfg.seed)
        if wic is not None:
            ext = cfg.extraction
            vectors = extract_contexts(lm.model, lm.tokenizer, wic[0], layers=ext.layers, pooling=ext.pooling,
                                       batch_size=ext.batch_size, show_progress=not quiet).vectors
            pairs += [{"model": name, "label": "wic", **r}
                      for r in wic_pair_auc(vectors, wic[1], n_bootstrap=cfg.bootstrap, seed=cfg.seed)]
    n_poly = len({c.word for c in ctx.contexts if c.word in cs.polysemy})
    info = {"source": loaded.ref.name, "corpus": str(path), "files_read": ctx.report.files,
            "n_contexts": len(ctx), "n_polysemous_words": n_poly,
            "n_control_words": len({c.word for c in ctx.contexts if c.word in cs.controls}),
            "selection": f"tagged nouns of SemCor written as their lemma; >= {cfg.min_per_sense} occurrences per "
                         f"(word, supersense), at most {cfg.max_per_sense} drawn with seed {cfg.seed}",
            "pair_vectors": "raw contextual vectors (not centred); pairs of one word's occurrences"}
    return SemcorResult(cfg, ctx.report.to_dict(), sense_count_rows(ctx), accuracy, pairs, info, details, ctx)


def pair_auc_halves(result: SemcorResult, layer: str, *, seed: int, n_bootstrap: int) -> list[dict[str, Any]]:
    """The trained model's same-supersense pair AUC at ``layer`` on two disjoint random halves of the words."""
    measured = result.details["trained"]
    ext, idx = measured.extraction, measured.poly_rows
    words = np.array([ext.contexts[int(i)].word for i in idx])
    names = np.unique(words)
    order = np.random.default_rng([seed, 23]).permutation(names.size)
    out = []
    for half in (names[order[: names.size // 2]], names[order[names.size // 2:]]):
        sel = np.isin(words, half)
        pairs = make_pairs(words[sel], [ext.contexts[int(i)].sense for i in idx[sel]])
        out.append(pair_auc(pair_cosines(ext.vectors[layer][idx[sel]], pairs), pairs, n_bootstrap=n_bootstrap,
                            seed=seed).to_dict())
    return out


def sense_counts_figure(rows: list[dict[str, Any]], n_words: int = COUNTS_WORDS) -> Figure:
    """Stacked horizontal bars: occurrences per supersense of the ``n_words`` most frequent polysemous words."""
    totals: dict[str, int] = {}
    for r in rows:
        totals[r["word"]] = r["word_total"]
    poly = {r["word"] for r in rows if r["share"] < 1}
    words = sorted((w for w in totals if w in poly), key=lambda w: (-totals[w], w))[:n_words][::-1]
    senses = sorted({r["sense"] for r in rows if r["word"] in words})
    colours = {s: f"C{k % 10}" for k, s in enumerate(senses)}
    hatches = {s: ("" if k < 10 else "//" if k < 20 else "..") for k, s in enumerate(senses)}
    fig = Figure(figsize=(10, max(3.0, 0.3 * len(words) + 1.5)))
    ax = fig.add_subplot()
    widest = max((totals[w] for w in words), default=1)
    for y, w in enumerate(words):
        left = 0
        for r in sorted((r for r in rows if r["word"] == w), key=lambda r: (-r["found"], r["sense"])):
            ax.barh(y, r["found"], left=left, color=colours[r["sense"]], hatch=hatches[r["sense"]],
                    edgecolor="white", linewidth=0.5)
            if r["found"] >= 0.09 * widest:  # segments wide enough carry their supersense's name
                ax.text(left + r["found"] / 2, y, r["sense"].removeprefix("noun."), ha="center", va="center",
                        fontsize=6.5, color="black", bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none",
                                                           "alpha": 0.75})
            left += r["found"]
        top = max(r["share"] for r in rows if r["word"] == w)
        ax.text(left + widest * 0.01, y, f"{top:.0%}", va="center", fontsize=7, color="0.3")
    for s in senses:
        ax.barh(np.nan, 0, color=colours[s], hatch=hatches[s], label=s.removeprefix("noun."))
    ax.set_yticks(range(len(words)), words)
    ax.set_xlim(0, widest * 1.08)
    ax.set_xlabel("tagged occurrences in SemCor (before the cap); bars ordered by sense frequency, "
                  "the majority sense's share at the end")
    ax.set_title(f"Senses in text: the {len(words)} most frequent polysemous nouns, by supersense")
    ax.legend(fontsize=7, ncol=2, loc="lower right", title="supersense", title_fontsize=8)
    fig.tight_layout()
    return fig


def layers_figure(result: SemcorResult) -> Figure:
    """Two panels per layer: supersense accuracy (in / out of context; trained, random) and pair AUC."""
    fig = Figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    styles = {"trained": "-", "random": ":"}
    for model in ("trained", "random"):
        for stat, colour in (("in_context", "C0"), ("out_of_context", "C1")):
            rows = [r for r in result.accuracy if r["model"] == model and r["group"] == "polysemous"
                    and r["stat"] == stat]
            if not rows:
                continue
            x = [int(r["layer"]) for r in rows]
            ax1.plot(x, [r["value"] for r in rows], styles[model], color=colour, marker="o",
                     label=f"{stat.replace('_', ' ')} ({model})")
            ax1.fill_between(x, [r["ci_low"] for r in rows], [r["ci_high"] for r in rows], color=colour, alpha=0.15)
        for label, colour in (("supersense", "C2"), ("synset", "C3"), ("wic", "C4")):
            rows = [r for r in result.pairs if r["model"] == model and r["label"] == label]
            if not rows:
                continue
            x = [int(r["layer"]) for r in rows]
            ax2.plot(x, [r["auc"] for r in rows], styles[model], color=colour, marker="o",
                     label=f"{'WiC file pairs' if label == 'wic' else 'same ' + label} ({model})")
            ax2.fill_between(x, [r["ci_low"] for r in rows], [r["ci_high"] for r in rows], color=colour, alpha=0.15)
    ax1.set(xlabel="layer (0 = embeddings)", ylabel="supersense accuracy (mean over words)",
            title="Which supersense? (candidates: the word's own)")
    ax2.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax2.set(xlabel="layer (0 = embeddings)", ylabel="pair AUC (pooled over words)",
            title="Same sense, more alike? (WiC-style pairs)")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.suptitle(f"{result.info['source']} on SemCor: {result.info['n_polysemous_words']} polysemous nouns, "
                 f"{result.info['n_contexts']} occurrences", fontsize=10)
    fig.tight_layout()
    return fig


def execute(cfg: SemcorConfig, ctx: JobContext) -> int:
    """``mcicl probe semcor``: check the corpus, open the run folder, measure, save, print where."""
    path = corpus_path(cfg.corpus)
    if not path.exists():
        raise FileNotFoundError(f"corpus={cfg.corpus!r}: no such file or folder; accepted: 'auto' or a SemCor 3.0 "
                                "folder (brown1/brown2/brownv), a tagfiles/ folder or a tag file")
    folder = ctx.create_run(inputs={"--model": cfg.extraction.model, "--corpus": str(path),
                                    "--cache-dir": cfg.extraction.cache_dir})
    seed_everything(cfg.seed)
    result = measure_semcor(replace(cfg, corpus=str(path)), quiet=ctx.quiet)
    result.save(folder)
    best = result.summary["pair_auc_best_layer"]
    if best:
        log.info("pair AUC (same supersense), best layer %s: %.3f (95%% CI %.3f-%.3f over %d words)", best["layer"],
                 best["auc"], best["ci_low"], best["ci_high"], best["n_words"])
    print(f"output is in {folder.path}")
    return 0
