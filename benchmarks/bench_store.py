"""Benchmark: streamed geometry statistics over a generated activation store larger than the memory they use.

Writes a store of generated vectors (no model: concept clusters in ``--dim`` dimensions, float32) of ``--gb`` GB
in shards of ``--shard-rows`` rows, with the layout :mod:`probing.store` writes (manifest + safetensors shards),
then, in a fresh child process, opens it and computes :func:`probing.store.store_geometry` (two passes, shard by
shard, memory-mapped), printing the child's peak resident memory (``ru_maxrss``) and its RSS after the passes
(psutil), the seconds, and the statistics; with ``--permutations B`` (default 100) the streamed label-permutation
null of the cosine statistics is accumulated in the same second pass. The store is deleted afterwards unless
``--keep``.
Usage: ``python benchmarks/bench_store.py --gb 2 --out /tmp/bench-store``.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mcicl.core.shards import write_atomic, write_shard


def generate(path: Path, gb: float, dim: int, shard_rows: int, concepts: int, seed: int = 0) -> dict:
    """Write the store; return its size and shape."""
    rng = np.random.default_rng(seed)
    rows = int(gb * 1e9 // (dim * 4))
    n_shards = -(-rows // shard_rows)
    centers = rng.normal(size=(concepts, dim)).astype(np.float32)
    path.mkdir(parents=True, exist_ok=True)
    manifest = {"format": 1, "key": {"model": {"class": "generated"}, "layers": ["0"], "pooling": "mean",
                                     "template": "{word}", "revision": None},
                "plan": {"n_items": rows, "shard_items": shard_rows, "n_shards": n_shards}, "dim": dim, "shards": {}}
    total = 0
    for i in range(n_shards):
        lo, hi = i * shard_rows, min((i + 1) * shard_rows, rows)
        codes = rng.integers(0, concepts, size=hi - lo)
        X = centers[codes] + rng.normal(size=(hi - lo, dim)).astype(np.float32) + 0.5
        words = [f"w{j}" for j in range(lo, hi)]
        labels = [f"c{c}" for c in codes]
        arrays = {"layer.0": X, "item": np.arange(lo, hi, dtype=np.int64), "position": np.full(hi - lo, -1),
                  "first_item": np.array([lo], dtype=np.int64)}
        size = write_shard(path / f"shard-{i:05d}.safetensors", arrays,
                           {"words": json.dumps(words), "labels": json.dumps(labels), "rows": str(hi - lo),
                            "dim": str(dim), "shard": str(i)})
        manifest["shards"][str(i)] = {"rows": hi - lo, "bytes": size}
        total += size
    write_atomic(path / "manifest.json", json.dumps(manifest).encode())
    return {"rows": rows, "dim": dim, "shards": n_shards, "bytes": total}


def measure(path: Path, permutations: int) -> dict:
    """Streamed statistics of the store (run in a fresh process): seconds, peak and final RSS, the values."""
    import psutil  # deferred: only the child measures

    from mcicl.probing.store import ActivationStore, store_geometry

    imported = psutil.Process().memory_info().rss / 2**20  # torch, transformers, ... (probing imports them)
    start = time.perf_counter()
    store = ActivationStore.open(path)
    g, names = store_geometry(store, "0", n_permutations=permutations, seed=0)
    seconds = time.perf_counter() - start
    null = {f"{k}_null": [round(float(v.mean()), 6), round(float(np.quantile(v, 0.025)), 6),
                          round(float(np.quantile(v, 0.975)), 6)]
            for k, v in (g.null.statistics().items() if g.null is not None else [])}
    return {"seconds": round(seconds, 1), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "permutations": permutations, **null,
            "rss_after_import_mb": imported, "rss_after_mb": psutil.Process().memory_info().rss / 2**20,
            "concepts": len(names),
            **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in g.summary().items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=2.0)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--shard-rows", type=int, default=8192)
    parser.add_argument("--concepts", type=int, default=100)
    parser.add_argument("--out", default="/tmp/mcicl-bench-store")
    parser.add_argument("--permutations", type=int, default=100)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--measure-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    path = Path(args.out)
    if args.measure_only:
        print(json.dumps(measure(path, args.permutations)))
        return
    start = time.perf_counter()
    info = generate(path, args.gb, args.dim, args.shard_rows, args.concepts)
    print(f"generated {info['bytes'] / 1e9:.2f} GB ({info['rows']:,} rows x {info['dim']}, {info['shards']} shards) "
          f"in {time.perf_counter() - start:.0f} s")
    try:
        out = subprocess.run([sys.executable, __file__, "--out", str(path), "--measure-only", "--permutations",
                              str(args.permutations)], check=True, capture_output=True, text=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"streamed statistics ({args.permutations} permutations) in {result['seconds']} s; peak resident "
              f"memory {result['peak_rss_mb']:.0f} MB; "
              f"RSS after the imports {result['rss_after_import_mb']:.0f} MB, after the passes "
              f"{result['rss_after_mb']:.0f} MB (store {info['bytes'] / 2**20:,.0f} MB)")
        print(json.dumps(result, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
