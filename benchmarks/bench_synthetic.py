"""Benchmark of the synthetic world (a script, not a test): run ``python benchmarks/bench_synthetic.py``.

Measured in one run and printed:
1. the default config with 1 seed: time of a full ``train`` (evaluation, checkpoints, figures), the same without
   figures, and training steps per second;
2. S = 8 seeds vectorized vs 8 sequential single-seed runs of the same training loop: the speed-up ratio;
3. achieved FLOP/s of a training step (analytic count, forward + backward = 3 x forward) as a fraction of a
   same-dtype matmul measured here.

Loops and the matmul are timed in CPU seconds of this process (``time.process_time``, one thread), so a shared
machine's other work does not inflate them; the full ``train`` is reported in wall and CPU seconds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from mcicl.core.runs import RunFolder
from mcicl.synthetic.config import SyntheticConfig
from mcicl.synthetic.train import build_model, build_world, sgd_step, train


def time_loop(config: SyntheticConfig, steps: int, best_of: int = 3) -> float:
    """CPU seconds for ``steps`` SGD steps (world and model built beforehand, not timed): the best of ``best_of``
    runs, the one least disturbed by other work on a shared machine."""
    world = build_world(config)
    model = build_model(config, world)
    sgd_step(model, config, world.train, 0)  # warm-up
    times = []
    for r in range(best_of):
        start = time.process_time()
        for step in range(r * steps + 1, (r + 1) * steps + 1):
            sgd_step(model, config, world.train, step)
        times.append(time.process_time() - start)
    return min(times)


def step_flops(config: SyntheticConfig) -> float:
    """Analytic FLOPs of one training step (all seeds): 3 x the forward pass's multiply-adds x 2."""
    d, L, m = config.d, config.L, config.m
    B = config.n_train if config.full_batch else config.batch_size
    forward = 2 * d * d + 2 * d * d + 2 * L * d + 2 * L * d + 2 * 2 * m * d  # W_Q x, W_K^T ., scores, h, MLP
    if config.value == "projected":
        forward += 2 * L * d * 2 * d
    return 3.0 * forward * B * config.seeds


def matmul_flops_per_s(dtype: torch.dtype, n: int = 1024, repeats: int = 10) -> float:
    """FLOP/s of an n x n matmul in ``dtype`` on this machine (CPU time)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.process_time()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.process_time() - start)


def main() -> None:
    """Print the benchmark figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="steps per timed loop (default: 200)")
    parser.add_argument("--seeds", type=int, default=8, help="S for the vectorized-vs-sequential test (default: 8)")
    args = parser.parse_args()
    base = SyntheticConfig(seeds=1)
    if base.threads:
        torch.set_num_threads(base.threads)  # what train() uses
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    runs = {}
    for figures in (True, False):
        with tempfile.TemporaryDirectory() as tmp:
            start, cpu = time.perf_counter(), time.process_time()
            train(base, RunFolder.create(Path(tmp) / "run", "bench"), figures=figures)
            runs[figures] = time.perf_counter() - start, time.process_time() - cpu
    loop1 = time_loop(base, args.steps)
    print(f"default config, 1 seed, {base.steps} steps: full train (eval, checkpoints, figures) {runs[True][0]:.1f} s "
          f"wall, {runs[True][1]:.1f} s CPU; without figures {runs[False][0]:.1f} s wall, {runs[False][1]:.1f} s CPU; "
          f"training loop {args.steps / loop1:.0f} steps/s")

    S = args.seeds
    vec = time_loop(replace(base, seeds=S), args.steps)
    seq = sum(time_loop(replace(base, seeds=1, seed=i), args.steps) for i in range(S))
    print(f"S={S} seeds, {args.steps} steps: vectorized {vec:.2f} s, sequential {seq:.2f} s, "
          f"speed-up {seq / vec:.1f}x (target >= 3x)")

    dtype = torch.float32
    peak = matmul_flops_per_s(dtype)
    for cfg, t in ((base, loop1), (replace(base, seeds=S), vec)):
        achieved = step_flops(cfg) * args.steps / t
        print(f"S={cfg.seeds}: training step {achieved / 1e9:.3f} GFLOP/s = {achieved / peak:.2%} of a float32 "
              f"1024x1024 matmul ({peak / 1e9:.1f} GFLOP/s)")


if __name__ == "__main__":
    main()
