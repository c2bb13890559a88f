"""``mcicl probe extract``: save word vectors of a model (per layer) for other tools.

Writes ``vectors/<layer>.npz`` (one LabelledVectors file per layer), ``vectors.npz`` (the last extracted
layer), ``words.txt``, ``labels.csv``, ``summary.json`` (with the words left out and why) and ``config.yaml``.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from mcicl.core.cli import add_model_options, add_run_options, merge_config
from mcicl.core.configuration import read_mapping, to_dict
from mcicl.core.plotting import Caption, palette, save_figure, styled, subplots
from mcicl.core.runs import RunFolder
from mcicl.probing.datasets import load_concept_set
from mcicl.probing.extract import ExtractionConfig, extract_words, load_for

log = logging.getLogger("mcicl")


def read_words_file(path: str | Path) -> list[str]:
    """Words of a text file, one per line (surrounding whitespace stripped; blank lines kept as empty words)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--words file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"--words file {path} is not UTF-8 text ({err.reason} at byte {err.start}); "
                         "accepted: a UTF-8 text file with one word per line") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():  # trailing blank lines are file endings, not words
        lines.pop()
    return [line.strip() for line in lines]


def words_from_concepts(spec: str, polysemy: str | None = None
                        ) -> tuple[list[str], list[tuple[str, str]], dict[str, Any]]:
    """(words to extract, (word, concept) label pairs, extra summary) from a concept-set spec (+ polysemy file)."""
    concept_set = load_concept_set(spec, polysemy=polysemy)
    words, labels = concept_set.words_and_labels()
    pairs = list(zip(words, labels, strict=True))
    labelled = {w for w, _ in pairs}
    for word, concept in concept_set.controls.items():
        if word not in labelled:
            pairs.append((word, concept))
            labelled.add(word)
    extra = [w for w in concept_set.polysemy if w not in labelled]  # unlabelled rows: senses are in the summary
    pairs += [(w, "") for w in extra]
    # A word listed under several concepts is extracted once and stored once per label.
    unique = list(dict.fromkeys(w for w, _ in pairs))
    return unique, pairs, {"concept_set": concept_set.name, "n_concepts": len(concept_set.concepts),
                           "polysemy": concept_set.polysemy, "controls": concept_set.controls}


def layer_stats(extraction: Any) -> list[dict[str, Any]]:
    """Per layer: mean vector norm and anisotropy (mean cosine between distinct words; 0 when isotropic)."""

    rows = []
    for layer in extraction.layers:
        x = extraction.vectors[layer].astype(np.float64)
        norms = np.linalg.norm(x, axis=1)
        n = len(x)
        unit = x / np.maximum(norms, 1e-12)[:, None]
        # Mean off-diagonal cosine in O(n d): (|sum of unit vectors|^2 - n) / (n (n - 1)).
        aniso = float((np.sum(unit.sum(0) ** 2) - n) / (n * (n - 1))) if n > 1 else float("nan")
        rows.append({"layer": layer, "n_words": n, "dim": x.shape[1], "mean_norm": float(norms.mean()) if n else 0.0,
                     "mean_pairwise_cosine": aniso})
    return rows


def _title(meta: dict[str, Any]) -> str:
    tag = " (random weights)" if meta.get("random_weights") else ""
    name = meta.get("model_name", meta["model"])
    return f"{name}{tag}: {meta['space']} space, template {meta['template']!r}, {meta['pooling']} pooling"


OVERVIEW_CAPTION = Caption(
    "Extracted vectors per layer",
    "Anisotropy (mean cosine between distinct words; 0 = isotropic) and mean vector norm per layer, and how many "
    "of the word's own tokens each word has (multi-token words are mean- or last-pooled).")


@styled
def overview_figure(rows: list[dict[str, Any]], n_tokens: list[int], *, title: str = "",
                    axes: Sequence[Axes] | None = None) -> Figure:
    """Anisotropy and mean norm per layer, and the number of tokens per word, on three Axes (new by default)."""
    colours = palette(3)
    if axes is None:
        fig, axes = subplots(1, 3, figsize=(12, 3.8))
    elif len(axes) != 3:
        raise ValueError(f"axes: {len(axes)} given; accepted: three matplotlib Axes")
    ax1, ax2, ax3 = axes
    fig = ax1.figure
    layers = [str(r["layer"]) for r in rows]
    xs = np.arange(len(rows))
    xlabel = "layer (0 = embedding output)" if layers[0].isdigit() else "space"
    ax1.plot(xs, [r["mean_pairwise_cosine"] for r in rows], "o-", color=colours[0])
    ax1.axhline(0, color="0.5", lw=0.8)
    ax1.set(xticks=xs, xticklabels=layers, xlabel=xlabel, ylabel="mean cosine between distinct words",
            title="Anisotropy per layer (0 = isotropic)")
    ax2.plot(xs, [r["mean_norm"] for r in rows], "s-", color=colours[1])
    ax2.set(xticks=xs, xticklabels=layers, xlabel=xlabel, ylabel="mean L2 norm of word vectors",
            title="Vector norm per layer")
    counts = np.bincount(np.asarray(n_tokens, dtype=int)) if n_tokens else np.zeros(2, dtype=int)
    ks = np.arange(len(counts))[1:]
    bars = ax3.bar(ks, counts[1:], color=colours[2])
    ax3.bar_label(bars, fontsize=8)
    ax3.set(xticks=ks, xlabel="tokens per word (the word's own tokens)", ylabel="number of words",
            title=f"Tokenization of {len(n_tokens)} words")
    ax3.margins(y=0.12)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def run(args: argparse.Namespace) -> int:
    """Extract vectors as the arguments say and write the run folder."""

    file_data = read_mapping(args.config) if args.config else {}
    # Pop all three (they are not ExtractionConfig fields), then let the command line win over the file.
    from_file = {k: file_data.pop(k, None) for k in ("words", "concepts", "polysemy")}
    words_file = args.words or from_file["words"]
    concepts = args.concepts or from_file["concepts"]
    polysemy_file = args.polysemy or from_file["polysemy"]
    if words_file and concepts:  # checked after merging: one may come from --config, the other from the CLI
        where = {k: "--config" if v is None else "the command line" for k, v in
                 (("words", args.words), ("concepts", args.concepts))}
        raise ValueError(f"words {words_file!r} (from {where['words']}) and concepts {concepts!r} (from "
                         f"{where['concepts']}): pass either --words FILE or --concepts SPEC, not both")
    if polysemy_file and not concepts:
        raise ValueError("--polysemy FILE goes with --concepts (it names concepts of the set)")
    if not words_file and not concepts:
        raise ValueError("no words: pass --words FILE (one word per line) or --concepts builtin|wordnet|FILE")
    config = merge_config(ExtractionConfig, args, ("model", "space", "layers", "template", "pooling", "batch_size",
                                                   "dtype", "device", "trust_remote_code", "cache_dir"),
                          file_data=file_data)
    if words_file:
        words = read_words_file(words_file)
        pairs, extra = [(w, "") for w in dict.fromkeys(words)], {}
    else:
        words, pairs, extra = words_from_concepts(concepts, polysemy_file)
    loaded = load_for(config)  # a missing model fails here, before any run folder is made
    run_folder = RunFolder.create(args.out, "probe extract", overwrite=args.overwrite,
                                  inputs={"--model": config.model, "--words": words_file, "--concepts": concepts,
                                          "--polysemy": polysemy_file, "--cache-dir": config.cache_dir})
    run_folder.save_config({**to_dict(config), "words": str(words_file) if words_file else None,
                            "concepts": concepts, "polysemy": polysemy_file})
    start = time.perf_counter()
    extraction = extract_words(words, config, loaded=loaded)
    seconds = time.perf_counter() - start
    if not extraction.words:
        raise ValueError(f"model {config.model!r}: none of the {len(words)} words could be represented "
                         f"({ {k: len(v) for k, v in extraction.report.items() if v} }); accepted: words the "
                         "model's tokenizer can encode (does the model folder hold its tokenizer files?)")

    (run_folder.path / "vectors").mkdir(exist_ok=True)
    files = {}
    for layer in extraction.layers:
        labelled = extraction.labelled(layer, pairs)
        files[layer] = str(labelled.save(run_folder.path / "vectors" / f"{layer}.npz").relative_to(run_folder.path))
    last = extraction.layers[-1]
    extraction.labelled(last, pairs).save(run_folder.path / "vectors.npz")
    (run_folder.path / "words.txt").write_text("".join(w + "\n" for w in extraction.words), encoding="utf-8")
    represented = set(extraction.words)
    run_folder.write_csv("labels.csv", [{"word": w, "label": lab} for w, lab in pairs if w in represented],
                         fieldnames=["word", "label"])
    report = extraction.report
    meta = {k: v for k, v in extraction.meta.items() if k != "n_tokens"}
    n_tokens = extraction.meta["n_tokens"]
    summary = {
        **meta, "layers": extraction.layers, "vector_files": files, "vectors_npz_layer": last,
        "dim": int(extraction.vectors[last].shape[1]), "n_words_given": len(words),
        "n_words_represented": len(extraction.words), "n_rows_labelled": sum(w in represented for w, _ in pairs),
        "dropped": {k: len(v) for k, v in report.items()}, "report": report,
        "multi_token_words": sum(n > 1 for n in n_tokens), "max_word_tokens": max(n_tokens, default=0),
        "seconds": round(seconds, 3), **extra,
    }
    rows = layer_stats(extraction)
    run_folder.write_csv("layers.csv", rows)
    run_folder.write_csv("words.csv", [{"word": w, "n_tokens": n} for w, n in zip(extraction.words, n_tokens,
                                                                                  strict=True)])
    summary["figures"] = [str(p.relative_to(run_folder.path))
                          for p in [save_figure(overview_figure(rows, n_tokens, title=_title(meta)), run_folder.figures,
                                                 "extraction_overview", caption=OVERVIEW_CAPTION)]]
    run_folder.write_summary(summary)
    log.info("extracted %d words x %d layer(s) (%s space); left out: %s", len(extraction.words),
             len(extraction.layers), config.space, summary["dropped"])
    print(f"output is in {run_folder.path}")
    return 0


def register(probe_sub: argparse._SubParsersAction) -> None:
    """Add ``mcicl probe extract``."""

    p = probe_sub.add_parser(
        "extract", help="save word vectors of a model, per layer (npz + words + labels)",
        description="Extract pooled word vectors from a Hugging Face model: input-embedding rows, unembedding rows "
                    "(models with an LM head) or hidden states of every layer, for each word alone or in a "
                    "template. Words the tokenizer cannot represent, empty lines and duplicates are reported in "
                    "summary.json.")
    src = p.add_argument_group("words")
    src.add_argument("--words", metavar="FILE", default=None, help="text file, one word per line")
    src.add_argument("--concepts", metavar="SPEC", default=None,
                     help="a concept set: 'builtin', 'wordnet', or a JSON/CSV file (labels come from it)")
    src.add_argument("--polysemy", metavar="FILE", default=None,
                     help='with --concepts: JSON {"word": ["concept_a", "concept_b"]} of polysemous words, merged '
                          "over the set's own inventory (polysemous words are extracted too)")
    g = p.add_argument_group("extraction")
    g.add_argument("--space", choices=["hidden", "input", "unembed"], default=None,
                   help="hidden states per layer, input-embedding rows, or unembedding rows (default: hidden)")
    g.add_argument("--layers", default=None,
                   help="hidden layers: 'all', 'last', or indices like '0,3,-1'; 0 = embedding output "
                        "(default: all)")
    g.add_argument("--template", default=None,
                   help="context with {word} once, e.g. 'A {word}.' (default: '{word}', the word alone)")
    g.add_argument("--pooling", choices=["mean", "last"], default=None,
                   help="how a multi-token word's own tokens are pooled (default: mean)")
    g.add_argument("--batch-size", type=int, default=None, help="words per forward pass (default: 64)")
    g.add_argument("--cache-dir", metavar="DIR", default=None,
                   help="on-disk cache of vectors: a second run is cheap, an interrupted one resumes "
                        "(default: no cache)")
    add_model_options(p)
    # None = "not given", so a --config file's values are not overridden by option defaults.
    p.set_defaults(model=None, dtype=None, device=None, trust_remote_code=None)
    add_run_options(p, seed=False)
    p.set_defaults(func=run)
