"""Time and peak memory of ``mcicl probe dictionary``'s solvers on 2 cores: the built-in concept set (MiniLM, last
layer: the whole per-layer fit, sizes chosen on held-out words) and 20,000 generated vectors of 384 dimensions (one
dictionary of 256 atoms at 3 per word, each solver's default restarts and iterations). Each measurement runs in
its own process (peak resident memory is the child's ru_maxrss); BLAS and torch are held to 2 threads.

    .venv/bin/python benchmarks/bench_dictionary.py            # both sets, both solvers
    .venv/bin/python benchmarks/bench_dictionary.py --sets generated --solvers sae

Goal (issue 25): time and memory printed for both sets; the chosen solver (mod) within a few minutes on the
built-in set.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from mcicl.analysis.engine.sparse_coding import matched_cosines
from mcicl.probing.dictionary import fit_space, geometry_view, learner
from mcicl.probing.dictionary_config import DictionaryConfig
from mcicl.probing.extract_config import ExtractionConfig
from mcicl.probing.geometry import spaces_from_model

THREADS = "2"


def planted(n: int = 20_000, d: int = 384, atoms: int = 256, s: int = 3, seed: int = 0):
    """Rows that are s-sparse non-negative combinations of random unit atoms plus noise (sigma 0.02)."""
    rng = np.random.default_rng(seed)
    dic = rng.standard_normal((atoms, d))
    dic /= np.linalg.norm(dic, axis=1, keepdims=True)
    codes = np.zeros((n, atoms))
    rows = np.repeat(np.arange(n), s)
    codes[rows, np.concatenate([rng.choice(atoms, s, replace=False) for _ in range(n)])] = rng.uniform(0.6, 1.4,
                                                                                                      n * s)
    return codes @ dic + 0.02 * rng.standard_normal((n, d)), dic


def one(set_name: str, solver: str) -> dict:
    """Run one measurement in this process and return its numbers."""
    torch.set_num_threads(int(THREADS))
    cfg = DictionaryConfig(extraction=ExtractionConfig(layers="-1", device="cpu"), solver=solver, permutations=100,
                           bootstrap=100, baselines=[])
    if set_name == "builtin":
        spaces, _ = spaces_from_model(geometry_view(cfg), quiet=True)
        start = time.perf_counter()
        r = fit_space(spaces[-1], cfg)
        wall = time.perf_counter() - start
        extra = {"n": r["n_words"], "d": r["dim"], "atoms": r["choice"].atoms, "nonzeros": r["choice"].nonzeros,
                 "grid": len(r["choice"].rows)}
    else:
        x, truth = planted()
        start = time.perf_counter()
        dic = learner(cfg)(x, len(truth), [3], seed=0, max_iter=cfg.iterations)[3]
        wall = time.perf_counter() - start
        extra = {"n": len(x), "d": x.shape[1], "atoms": len(truth), "nonzeros": 3,
                 "recovered_0_9": float((matched_cosines(truth, dic) >= 0.9).mean())}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MiB
    return {"set": set_name, "solver": solver, "seconds": round(wall, 1), "peak_mib": round(peak), **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="builtin,generated")
    parser.add_argument("--solvers", default="mod,sae")
    parser.add_argument("--one", nargs=2, metavar=("SET", "SOLVER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*args.one)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": THREADS, "OPENBLAS_NUM_THREADS": THREADS, "MKL_NUM_THREADS": THREADS}
    print(f"{'set':<10} {'solver':<6} {'seconds':>8} {'peak MiB':>9}  details")
    for set_name in args.sets.split(","):
        for solver in args.solvers.split(","):
            out = subprocess.run([sys.executable, __file__, "--one", set_name, solver], env=env, check=True,
                                 capture_output=True, text=True).stdout.strip().splitlines()[-1]
            r = json.loads(out)
            details = {k: v for k, v in r.items() if k not in ("set", "solver", "seconds", "peak_mib")}
            print(f"{set_name:<10} {solver:<6} {r['seconds']:>8} {r['peak_mib']:>9}  {details}", flush=True)


if __name__ == "__main__":
    main()
