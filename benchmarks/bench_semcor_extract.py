"""Benchmark: contextual extraction of every polysemous-noun occurrence of SemCor brown1 against bare forward passes.

The occurrences are those ``--concepts supersenses`` labels in brown1 (no cap: ``max_per_sense`` unlimited,
``min_per_sense`` 1); ``--sentences N`` keeps the occurrences of the first N distinct sentences (corpus order) on a
loaded machine. Measured in one process, on the same sentences, every hidden layer of the MiniLM:

- ``mcicl``: :func:`probing.contextual.extract_contexts` (tokenize with offsets, locate each occurrence's tokens,
  one forward pass per distinct sentence, batched by length, mean pooling per occurrence), with a cache folder:
  ``cold`` (computes and writes the cache) and ``warm`` (reads it back);
- ``bare``: ``tokenizer(batch, padding=True)`` + ``model(..., output_hidden_states=True)`` over the distinct
  sentences, batch ``--batch``, nothing kept: in corpus order and sorted by length.

Prints sentences per second (distinct sentences / seconds) and the ratio mcicl / bare (goal: >= 0.8 including
pooling). Times are the best of ``--repeats`` interleaved runs. Usage: ``python benchmarks/bench_semcor_extract.py
[--sentences 2000]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from mcicl.probing.contextual import extract_contexts
from mcicl.probing.datasets.supersenses import supersense_concepts
from mcicl.probing.models import load_model
from mcicl.probing.semcor import default_semcor, load_semcor_contexts


def occurrences(n_sentences: int) -> tuple[list, list[str]]:
    """(every labelled polysemous-noun occurrence of brown1 in the first ``n_sentences`` distinct sentences, those
    sentences in corpus order)."""
    root = default_semcor()
    if root is None:
        raise SystemExit("SemCor 3.0 not found at ../shared/data/semcor3.0")
    cs = supersense_concepts()
    ctx = load_semcor_contexts(f"semcor:{root / 'brown1'}", cs, min_per_sense=1, max_per_sense=10**9)
    order = sorted(ctx.contexts, key=lambda c: (c.source.split(":")[0], int(c.source.split(":")[1])))
    poly = [c for c in order if c.word in cs.polysemy]
    sentences = list(dict.fromkeys(c.context for c in poly))
    if n_sentences:
        sentences = sentences[:n_sentences]
    keep = set(sentences)
    return [c for c in poly if c.context in keep], sentences


def bare(model, tokenizer, sentences: list[str], batch: int) -> None:
    """Bare batched forward passes with all hidden states (nothing kept)."""
    with torch.inference_mode():
        for i in range(0, len(sentences), batch):
            enc = tokenizer(sentences[i:i + batch], padding=True, return_tensors="pt")
            model(**enc, output_hidden_states=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sentences", type=int, default=2000, help="distinct sentences kept (0: all of brown1)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model("default", device="cpu")
    model, tok = loaded.model, loaded.tokenizer
    contexts, sentences = occurrences(args.sentences)
    by_length = sorted(sentences, key=lambda s: -len(tok(s)["input_ids"]))
    times: dict[str, list[float]] = {"mcicl_cold": [], "mcicl_warm": [], "bare_corpus_order": [],
                                     "bare_length_sorted": []}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:
            t = time.perf_counter()
            extract_contexts(model, tok, contexts, layers="all", batch_size=args.batch, cache_dir=cache,
                             show_progress=False)
            times["mcicl_cold"].append(time.perf_counter() - t)
            t = time.perf_counter()
            extract_contexts(model, tok, contexts, layers="all", batch_size=args.batch, cache_dir=cache,
                             show_progress=False)
            times["mcicl_warm"].append(time.perf_counter() - t)
        t = time.perf_counter()
        bare(model, tok, sentences, args.batch)
        times["bare_corpus_order"].append(time.perf_counter() - t)
        t = time.perf_counter()
        bare(model, tok, by_length, args.batch)
        times["bare_length_sorted"].append(time.perf_counter() - t)
    best = {k: min(v) for k, v in times.items()}
    rate = {k: len(sentences) / v for k, v in best.items()}
    out = {"occurrences": len(contexts), "distinct_sentences": len(sentences), "batch": args.batch,
           "threads": torch.get_num_threads(), "seconds_best": best, "sentences_per_second": rate,
           "ratio_cold_vs_bare_corpus_order": rate["mcicl_cold"] / rate["bare_corpus_order"],
           "ratio_cold_vs_bare_length_sorted": rate["mcicl_cold"] / rate["bare_length_sorted"],
           "ratio_warm_vs_bare_corpus_order": rate["mcicl_warm"] / rate["bare_corpus_order"]}
    print(json.dumps(out, indent=2))
    for k, v in rate.items():
        print(f"{k:>20}: {v:8.1f} sentences/s ({best[k]:.1f} s for {len(sentences)} sentences)")
    print(f"mcicl (cold cache, pooling included) / bare (corpus order): {out['ratio_cold_vs_bare_corpus_order']:.2f}x;"
          f" / bare (length-sorted): {out['ratio_cold_vs_bare_length_sorted']:.2f}x (goal >= 0.8x)")


if __name__ == "__main__":
    main()
