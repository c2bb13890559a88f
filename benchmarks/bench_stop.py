"""Benchmark: stopping after the last layer needed against the full forward pass (the MiniLM, 6 layers).

For each layer k asked alone, mcicl extraction of ``--words`` GloVe words (mean pooling, batch 256) that runs
blocks 0..k-1 only, against the same extraction of every layer (the full forward pass). Goal: layer k of L costs
at most (k + 1) / L of the full pass plus 10% (layer 1 of 6: about 0.43x). Times are the best of ``--repeats``
interleaved runs on one torch thread (a shared machine: the best run is the least disturbed).
Usage: ``python benchmarks/bench_stop.py``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from mcicl.probing.extract import extract
from mcicl.probing.models import load_model

REPO = Path(__file__).resolve().parents[1]
GLOVE = REPO.parent / "shared" / "data" / "glove" / "glove.6B.50d.top2445.txt"


def words(n: int) -> list[str]:
    """The first ``n`` GloVe words that decode as UTF-8 (else generated letter strings)."""
    if GLOVE.is_file():
        out = []
        for raw in GLOVE.read_bytes().splitlines():
            try:
                out.append(raw.split(b" ", 1)[0].decode("utf-8"))
            except UnicodeDecodeError:
                continue
        return out[:n]
    return [f"word{i}" for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layers", default="1,3", help="layers k to time alone")
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = load_model("default")
    model, tok = loaded.model, loaded.tokenizer
    ws = words(args.words)
    ks = [int(k) for k in args.layers.split(",")]
    n_layers = model.config.num_hidden_layers
    runs = {"all": lambda: extract(model, tok, ws, layers="all", batch_size=256, show_progress=False)}
    for k in ks:
        runs[k] = lambda k=k: extract(model, tok, ws, layers=[k], batch_size=256, show_progress=False)
    best = {name: float("inf") for name in runs}
    runs["all"]()  # warm up
    for _ in range(args.repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    print(f"MiniLM ({n_layers} layers), {len(ws)} words, batch 256, best of {args.repeats}:")
    print(f"  every layer (full forward pass): {best['all']:.3f} s")
    for k in ks:
        goal = (k + 1) / n_layers + 0.10
        ratio = best[k] / best["all"]
        print(f"  layer {k} alone (blocks 0..{k - 1} run): {best[k]:.3f} s = {ratio:.2f}x of the full pass "
              f"(goal <= {goal:.2f}x: {'met' if ratio <= goal else 'NOT met'})")


if __name__ == "__main__":
    main()
