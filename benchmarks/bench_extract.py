"""Benchmark: extracting every layer for 2,000 words on the MiniLM, against bare forward passes and a loop.

Measured in one run, on the same words (the GloVe vocabulary in ../shared/data/glove):
- ``mcicl`` extraction (all 7 hidden states, mean pooling over the word's tokens, batch 256),
- bare batched forward passes (``tokenizer(batch, padding=True)`` + ``model(..., output_hidden_states=True)``,
  batch 256, no pooling, input order),
- a per-word unbatched loop (one forward pass per word, then pooling),
- nnsight tracing the same layers, where nnsight is installed,
and the peak memory each adds (resident set size of a fresh child process above the
loaded model).
Times are the best of ``--repeats`` interleaved runs. Usage: ``python benchmarks/bench_extract.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from nnsight import NNsight

from mcicl.probing.extract import extract
from mcicl.probing.models import load_model

REPO = Path(__file__).resolve().parents[1]
GLOVE = REPO.parent / "shared" / "data" / "glove" / "glove.6B.50d.top2445.txt"
BATCH = 256


def glove_words(n: int) -> tuple[list[str], int]:
    """The first ``n`` GloVe vocabulary words that decode as UTF-8, and how many lines did not."""
    words, bad = [], 0
    for raw in GLOVE.read_bytes().splitlines():
        try:
            words.append(raw.split(b" ", 1)[0].decode("utf-8"))
        except UnicodeDecodeError:  # the file has a few Windows-1252 lines
            bad += 1
    return words[:n], bad


def run_bare(model, tokenizer, words: list[str]) -> None:
    """Bare batched forward passes with all hidden states (nothing kept)."""

    with torch.inference_mode():
        for i in range(0, len(words), BATCH):
            enc = tokenizer(words[i:i + BATCH], padding=True, return_tensors="pt")
            model(**enc, output_hidden_states=True)


def run_ours(model, tokenizer, words: list[str]):
    """mcicl extraction of all layers."""

    return extract(model, tokenizer, words, layers="all", batch_size=BATCH, show_progress=False)


def run_loop(model, tokenizer, words: list[str]) -> None:
    """One unpadded forward pass per word, mean over the word's tokens, every layer."""

    with torch.inference_mode():
        for w in words:
            enc = tokenizer(w, return_tensors="pt")
            hidden = model(**enc, output_hidden_states=True).hidden_states
            [h[0, 1:-1].mean(0) for h in hidden]


def run_nnsight(model, tokenizer, words: list[str]) -> None:
    """nnsight tracing every encoder layer's output, batch 256."""

    wrapped = NNsight(model)
    for i in range(0, len(words), BATCH):
        enc = tokenizer(words[i:i + BATCH], padding=True, return_tensors="pt")
        with wrapped.trace(**enc):
            [layer.output[0].save() for layer in wrapped.encoder.layer]


def _rss_kib() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def peak_mib(name: str, n_words: int, threads: int) -> float:
    """Peak resident memory (MiB) a method adds over the loaded model, measured in a fresh child process."""
    out = subprocess.run([sys.executable, __file__, "--memory-of", name, "--words", str(n_words),
                          "--threads", str(threads)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _memory_child(name: str, n_words: int) -> None:

    words, _ = glove_words(n_words)
    _loaded = load_model("default")
    model, tokenizer = _loaded.model, _loaded.tokenizer
    start = _rss_kib()
    METHODS[name](model, tokenizer, words)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start) / 1024)


METHODS = {"bare": run_bare, "mcicl": run_ours, "loop": run_loop, "nnsight": run_nnsight}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, default=2000, help="number of GloVe words (default: 2000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats, best kept (default: 3)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default: 1, stable timings on a shared machine)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--memory-of", choices=list(METHODS), help=argparse.SUPPRESS)  # internal: child mode
    args = parser.parse_args(argv)
    if not GLOVE.is_file():
        print(f"skipped: GloVe vocabulary not found at {GLOVE}")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    torch.set_num_threads(args.threads)
    if args.memory_of:
        _memory_child(args.memory_of, args.words)
        return 0

    words, bad = glove_words(args.words)
    _loaded = load_model("default")
    model, tokenizer = _loaded.model, _loaded.tokenizer
    try:
        import nnsight  # noqa: F401
        has_nnsight = True
    except ImportError:
        has_nnsight = False
    names = ["bare", "mcicl"] + (["nnsight"] if has_nnsight else [])
    run_ours(model, tokenizer, words[:300])  # warm-up (allocator, kernels)
    run_bare(model, tokenizer, words[:300])
    best = {n: float("inf") for n in names}
    for _ in range(args.repeats):
        for n in names:  # interleaved, so load from other processes hits every method alike
            t0 = time.perf_counter()
            METHODS[n](model, tokenizer, words)
            best[n] = min(best[n], time.perf_counter() - t0)
            print(f"  ({n}: {time.perf_counter() - t0:.2f} s)", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    run_loop(model, tokenizer, words)
    best["loop"] = time.perf_counter() - t0
    print(f"  (loop: {best['loop']:.2f} s; measuring memory)", file=sys.stderr, flush=True)
    memory = {n: round(peak_mib(n, len(words), args.threads), 1) for n in names}
    ex = run_ours(model, tokenizer, words)
    kept_mib = sum(v.nbytes for v in ex.vectors.values()) / 2**20
    enc = tokenizer(words, padding=True)
    tokens = sum(map(sum, enc["attention_mask"]))
    all_states_mib = tokens * len(ex.layers) * ex.vectors["0"].shape[1] * 4 / 2**20
    result = {
        "words": len(words), "glove_lines_not_utf8": bad, "layers": len(ex.layers), "batch_size": BATCH,
        "torch_threads": torch.get_num_threads(), "seconds": {k: round(v, 3) for k, v in best.items()},
        "mcicl_over_bare": round(best["mcicl"] / best["bare"], 3),
        "loop_over_mcicl": round(best["loop"] / best["mcicl"], 2),
        "loop_over_bare": round(best["loop"] / best["bare"], 2),
        "nnsight_over_mcicl": round(best["nnsight"] / best["mcicl"], 2) if has_nnsight else "nnsight not installed",
        "peak_rss_added_mib": memory, "pooled_vectors_kept_mib": round(kept_mib, 1),
        "all_hidden_states_of_all_tokens_mib": round(all_states_mib, 1),
    }
    print(f"{len(words)} GloVe words ({bad} non-UTF-8 lines skipped), MiniLM, {len(ex.layers)} hidden states, "
          f"batch {BATCH}, {torch.get_num_threads()} torch threads; best of {args.repeats}")
    for n in [*names, "loop"]:
        print(f"  {n:8s} {best[n]:7.3f} s" + (f"   peak RSS +{memory[n]} MiB" if n in memory else ""))
    print(f"mcicl / bare batched forward: {result['mcicl_over_bare']}x (target <= 1.05x)")
    print(f"per-word loop / mcicl:        {result['loop_over_mcicl']}x (target >= 5x)")
    print(f"nnsight / mcicl:              {result['nnsight_over_mcicl']}")
    print(f"kept: {kept_mib:.1f} MiB of pooled vectors; all hidden states of all tokens would be "
          f"{all_states_mib:.1f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
