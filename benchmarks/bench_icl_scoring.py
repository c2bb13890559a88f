"""Benchmark: ICL label scoring with prefix (KV-cache) reuse vs naive one-forward-per-option scoring.

Model: a tiny Llama-architecture causal LM with RANDOM WEIGHTS (probing.tiny; speed only, no meaning).
Prompts: 16 demonstrations each, 2 and 10 candidate labels (multi-token labels included), every prompt with
its own demonstrations; then many queries sharing one set of demonstrations. Both scorers run in this one
process on the same prompts; the ratios are what to read (absolute prompts/s depend on the machine).

    .venv/bin/python benchmarks/bench_icl_scoring.py [--prompts 32] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from mcicl.probing.icl.scoring import ScoringPrompt, score_cached, score_naive
from mcicl.probing.models import load_model
from mcicl.probing.tiny import build_tiny_model

WORDS = ("dog cat horse lion tiger cow sheep wolf hammer saw drill wrench chisel pliers car bus train truck "
         "apple pear plum grape red blue green pink France Spain Italy Peru").split()
LABELS_10 = (" animal", " tool", " vehicle", " fruit", " colour", " country", " sports equipment", " foo bar",
             " A", " B")


def make_prompts(n: int, n_labels: int, rng: np.random.Generator, shared_prefix: bool = False):
    """``n`` prompts of 16 demonstrations (one shared set when ``shared_prefix``) with ``n_labels`` options."""

    labels = LABELS_10[:n_labels]

    def demos() -> str:
        return "".join(f"{rng.choice(WORDS)} ->{rng.choice(labels)}\n" for _ in range(16))

    prefix = demos()
    return [ScoringPrompt(prefix if shared_prefix else demos(), f"{rng.choice(WORDS)} ->", labels) for _ in range(n)]


def timed(fn, repeats: int = 3) -> float:
    """Best wall time of ``repeats`` calls (seconds)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:


    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_model("llama", tmp, hidden=128, layers=4, heads=4)
        _loaded = load_model(folder)
        model, tokenizer = _loaded.model, _loaded.tokenizer
    print(f"tiny Llama (RANDOM WEIGHTS, hidden 128, 4 layers), torch threads {args.threads}, "
          f"{args.prompts} prompts of 16 demonstrations")
    cases = [("own demonstrations, 2 labels", make_prompts(args.prompts, 2, rng)),
             ("own demonstrations, 10 labels (multi-token)", make_prompts(args.prompts, 10, rng)),
             ("one shared set of demonstrations, 10 labels", make_prompts(4 * args.prompts, 10, rng, True))]
    for name, prompts in cases:
        cached = score_cached(model, tokenizer, prompts)
        naive = score_naive(model, tokenizer, prompts)
        diff = max(float(np.abs(a - b).max()) for a, b in zip(cached, naive, strict=True))
        t_naive = timed(lambda p=prompts: score_naive(model, tokenizer, p), repeats=2)
        t_cached = timed(lambda p=prompts: score_cached(model, tokenizer, p))
        print(f"{name:46s} naive {len(prompts) / t_naive:8.1f} prompts/s   cached {len(prompts) / t_cached:8.1f} "
              f"prompts/s   speed-up {t_naive / t_cached:5.1f}x   max |cached - naive| {diff:.1e}")


if __name__ == "__main__":
    main()
