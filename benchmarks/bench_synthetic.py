"""Benchmark of the synthetic world (a script, not a test): run ``python benchmarks/bench_synthetic.py``.

Measured in one run and printed:
1. the default config with 1 seed: wall time of a full ``train`` (evaluation, checkpoints, figures) and training
   steps per second;
2. S = 8 seeds vectorized vs 8 sequential single-seed runs of the same training loop: the speed-up ratio;
3. achieved FLOP/s of a training step (analytic count, forward + backward = 3 x forward) as a fraction of a
   same-dtype matmul measured here.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from mcicl.synthetic.config import SyntheticConfig
from mcicl.synthetic.train import build_model, build_world, sgd_step, train

from mcicl.core.runs import RunFolder


def time_loop(config: SyntheticConfig, steps: int) -> float:
    """Seconds for ``steps`` SGD steps (world and model built beforehand, not timed)."""
    world = build_world(config)
    model = build_model(config, world)
    sgd_step(model, config, world.train, 0)  # warm-up
    start = time.perf_counter()
    for step in range(1, steps + 1):
        sgd_step(model, config, world.train, step)
    return time.perf_counter() - start


def step_flops(config: SyntheticConfig) -> float:
    """Analytic FLOPs of one training step (all seeds): 3 x the forward pass's multiply-adds x 2."""
    d, L, m = config.d, config.L, config.m
    B = config.n_train if config.full_batch else config.batch_size
    forward = 2 * d * d + 2 * d * d + 2 * L * d + 2 * L * d + 2 * 2 * m * d  # W_Q x, W_K^T ., scores, h, MLP
    if config.value == "projected":
        forward += 2 * L * d * 2 * d
    return 3.0 * forward * B * config.seeds


def matmul_flops_per_s(dtype: torch.dtype, n: int = 1024, repeats: int = 10) -> float:
    """FLOP/s of an n x n matmul in ``dtype`` on this machine."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start)


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
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train(base, RunFolder.create(Path(tmp) / "run", "bench"))
        wall = time.perf_counter() - start
    loop1 = time_loop(base, args.steps)
    print(f"default config, 1 seed: full train (eval, checkpoints, figures) {wall:.1f} s wall for {base.steps} steps; "
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
