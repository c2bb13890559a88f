"""``mcicl probe contexts``: contextual geometry of polysemous words (and controls) per layer, as a run folder.

The measurement is :func:`probing.contextual.measure_contexts`; :func:`write_contexts_run` saves its result
(context_layers.csv, contexts.csv, vectors/contexts_<layer>.npz, summary.json, two figures).
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import numpy as np

from mcicl.analysis.engine.context_figures import context_layers_figure, word_contexts_figure
from mcicl.core.cli import add_model_options, add_run_options, merge_config
from mcicl.core.io import strict_json
from mcicl.core.runs import RunFolder
from mcicl.core.seeding import seed_everything
from mcicl.core.vectors import LabelledVectors
from mcicl.probing.contextual import ContextsConfig, ContextsResult, load_contexts, measure_contexts
from mcicl.probing.datasets import load_concept_set

log = logging.getLogger("mcicl")
PCA_WORDS = 6


def layer_rows(result: ContextsResult) -> list[dict[str, Any]]:
    """One row per (layer, group, statistic) with value, null band, CI and p-value (context_layers.csv)."""
    out = []
    for group, stats in (("polysemous", result.polysemous), ("controls", result.controls)):
        if stats is None:
            continue
        for layer, named in stats.per_layer.items():
            for stat, s in named.items():
                out.append({"layer": layer, "group": group, "stat": stat, "value": s.value, "null": s.null_mean,
                            "null_low": s.null_low, "null_high": s.null_high, "ci_low": s.ci_low,
                            "ci_high": s.ci_high, "p_value": s.p_value, "n_words": s.n})
    return out


def context_rows(result: ContextsResult) -> list[dict[str, Any]]:
    """One row per (context, layer): word, sense, predicted sense in and out of context, margins, shift."""
    ctx = result.extraction.contexts
    out = []
    for group, stats, idx in (("polysemous", result.polysemous, result.poly_rows),
                              ("controls", result.controls, result.control_rows)):
        if stats is None:
            continue
        for layer, values in stats.row_values.items():
            for r, i in enumerate(idx):
                c = ctx[int(i)]
                out.append({"layer": layer, "group": group, "word": c.word, "sense": c.sense,
                            "correct": bool(values["predicted"][r] == values["labels"][r]),
                            "baseline_correct": bool(values["baseline_predicted"][r] == values["labels"][r]),
                            "margin": float(values["margin"][r]),
                            "baseline_margin": float(values["baseline_margin"][r]),
                            "shift": float(values["shift"][r]), "context": c.context, "source": c.source})
    return out


def pca_words(result: ContextsResult, n: int = PCA_WORDS) -> list[str]:
    """Up to ``n`` polysemous words for the PCA panel: those with the highest pair AUC at the best layer."""
    stats = result.polysemous
    auc = stats.word_units[stats.best_layer].get("pair_auc")
    words = sorted({result.extraction.contexts[int(i)].word for i in result.poly_rows})
    if auc is None:
        return words[:n]
    order = np.argsort(-np.nan_to_num(auc, nan=-1.0), kind="stable")
    return [words[k] for k in order[:n]]


def write_contexts_run(result: ContextsResult, cfg: ContextsConfig, run: RunFolder) -> dict[str, Any]:
    """Write the run folder's files and figures; return summary.json's content."""
    run.save_config(cfg)
    rows = layer_rows(result)
    run.write_csv("context_layers.csv", rows)
    run.write_csv("contexts.csv", context_rows(result))
    (run.path / "vectors").mkdir(exist_ok=True)
    ctx = result.extraction.contexts
    for layer, matrix in result.extraction.vectors.items():
        LabelledVectors(matrix, [c.word for c in ctx], [c.sense for c in ctx],
                        meta={**result.extraction.meta, "layer": layer, "contexts": [c.context for c in ctx]}
                        ).save(run.path / "vectors" / f"contexts_{layer}.npz")
    info = result.info
    random_tag = " (random weights)" if info["random_weights"] else ""
    poly = result.polysemous
    best = poly.best_layer
    context_layers_figure(rows, run.figures, title=f"{info['source']}{random_tag}: polysemous words in context "
                                                   f"({info['contexts']} contexts, {info['n_polysemous_words']} words)")
    chosen = pca_words(result)
    keep = np.isin([c.word for c in ctx], chosen)
    word_contexts_figure(result.extraction.vectors[best][keep], [c.word for c, k in zip(ctx, keep, strict=True) if k],
                         [c.sense for c, k in zip(ctx, keep, strict=True) if k], chosen, run.figures, layer=best,
                         title=f"{info['source']}{random_tag}: contextual vectors at layer {best} (best layer), "
                               f"PCA per word, coloured by tagged sense\n(the {len(chosen)} words of highest "
                               "same-sense pair AUC)")
    summary = {
        "best_layer": best,
        "best_layer_rule": "the layer of highest in-context sense accuracy; each best-layer statistic is the "
                           "max over layers, and its null and bootstrap take the same max (selection corrected)",
        "sense_accuracy": poly.best["sense_accuracy"].to_dict(),
        "baseline_accuracy": poly.best["baseline_accuracy"].to_dict(),
        "shift": poly.best["shift"].to_dict(),
        "pair_auc": poly.best["pair_auc"].to_dict(),
        # Monosemous controls at the polysemous words' best layer (nearest of all concepts; shift toward own).
        "controls": ({k: s.to_dict() for k, s in result.controls.per_layer[best].items()}
                     if result.controls is not None else None),
        "per_layer": {"polysemous": poly.to_dict(),
                      "controls": result.controls.to_dict() if result.controls is not None else None},
        **{k: v for k, v in info.items() if k != "concepts"},
    }
    summary = strict_json(summary)
    run.write_summary(summary)
    return summary


def config_from_args(args: argparse.Namespace) -> ContextsConfig:
    """The resolved config: defaults, then --config FILE, then command-line options."""
    fields = ("contexts", "concepts", "min_per_sense", "permutations", "bootstrap", "seed", "extraction.model",
              "extraction.layers", "extraction.pooling", "extraction.batch_size", "extraction.dtype",
              "extraction.device", "extraction.cache_dir")
    flags = {"center": False if getattr(args, "no_center", False) else None,
             "extraction.trust_remote_code": True if getattr(args, "trust_remote_code", False) else None}
    return merge_config(ContextsConfig, args, fields, extra=flags)


def run(args: argparse.Namespace) -> int:
    """Handler of ``mcicl probe contexts``."""
    cfg = config_from_args(args)
    # Validate concepts and contexts before making the output folder, so a typo leaves nothing behind.
    cs = load_concept_set(cfg.concepts)
    contexts, dropped = load_contexts(cfg.contexts, cs, min_per_sense=cfg.min_per_sense)
    folder = RunFolder.create(args.out, "probe contexts", overwrite=args.overwrite,
                              inputs={"--model": cfg.extraction.model, "--contexts": cfg.contexts,
                                      "--concepts": cfg.concepts, "--cache-dir": cfg.extraction.cache_dir})
    seed_everything(cfg.seed)
    result = measure_contexts(cfg, concept_set=cs, contexts=contexts, quiet=args.quiet)
    result.info["dropped_senses"] = dropped
    summary = write_contexts_run(result, cfg, folder)
    acc, base = summary["sense_accuracy"], summary["baseline_accuracy"]
    log.info("best layer %s: sense accuracy %.3f (95%% CI %.3f-%.3f, null %.3f, p=%.3g); out of context %.3f",
             summary["best_layer"], acc["value"], acc["ci_low"], acc["ci_high"], acc["null"], acc["p_value"],
             base["value"])
    print(f"output is in {folder.path}")
    return 0


def register(probe_sub: argparse._SubParsersAction) -> None:
    """Add ``mcicl probe contexts``."""
    p = probe_sub.add_parser(
        "contexts", help="polysemous words inside sense-tagged sentences: sense accuracy, shift, pair AUC per layer",
        description="Read each polysemous word's hidden state at its occurrence in sense-tagged sentences and "
                    "measure, per layer, whether it is nearer its tagged sense's concept centroid than its other "
                    "senses' (vs the word out of context), how far the context moves it, and whether same-sense "
                    "contexts are more alike than different-sense ones; nulls shuffle senses within each word.")
    add_model_options(p)
    g = p.add_argument_group("what to measure")
    g.add_argument("--contexts", default=None,
                   help="builtin | wordnet (WordNet example sentences; with --concepts wordnet) | FILE (.csv with "
                        "word,sense,context or .json {word: {sense: [sentences]}}) (default: builtin)")
    g.add_argument("--concepts", default=None, help="builtin | wordnet | FILE (.json or .csv) (default: builtin)")
    g.add_argument("--layers", default=None, help="'all' or a comma list such as 0,3,-1 (default: all)")
    g.add_argument("--pooling", choices=("mean", "last"), default=None,
                   help="multi-token words: mean or last token (default: mean)")
    g.add_argument("--min-per-sense", type=int, default=None,
                   help="contexts each (word, sense) needs (default: 3; WordNet senses with fewer are dropped)")
    g.add_argument("--no-center", action="store_true",
                   help="raw cosines (default: centroids and out-of-context vectors centred on the concept-word "
                        "mean, contextual vectors on the contexts' mean)")
    g.add_argument("--batch-size", type=int, default=None, help="extraction batch size (default: 32)")
    g.add_argument("--cache-dir", default=None, help="extraction cache folder (default: no cache)")
    g = p.add_argument_group("statistics")
    g.add_argument("--permutations", type=int, default=None,
                   help="within-word sense shuffles for the null (default: 1000)")
    g.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples of words (default: 1000)")
    add_run_options(p)
    p.set_defaults(func=run)
