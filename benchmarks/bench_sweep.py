"""Benchmark of batched sweeps (a script, not a test): run ``python benchmarks/bench_sweep.py``.

Measured in one run and printed as ratios:
1. a 6 x 6 grid (within_cosine x cross_overlap) x 3 seeds: all 36 cells as one batched model vs cell by cell
   (the same ``train_cells`` code given one cell at a time), whole cost (worlds, training, evaluation), and
   the training steps alone;
2. cost per cell as the grid grows (4, 16, 64, 256 cells, 1 seed each, batched);
3. FLOP/s of a training step (analytic count, as in bench_synthetic.py) as a share of a same-dtype matmul
   measured here, at 1, 8, 64 and 256 stacked instances.

Times are CPU seconds of this process (``time.process_time``): training runs on one thread, so on an idle
machine they equal wall time, and on a shared machine they are not inflated by other people's work.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch
from bench_synthetic import step_flops
from mcicl.synthetic.cells import CellBatch, train_cells
from mcicl.synthetic.config import SyntheticConfig


def grid(base: SyntheticConfig, n: int) -> list[SyntheticConfig]:
    """n cells over (within_cosine, cross_overlap): a square grid when n is a square, else a 1-D row."""
    side = int(round(n**0.5))
    if side * side == n:
        pts = [(w, c) for w in np.linspace(0.1, 0.9, side) for c in np.linspace(0.0, 0.4, side)]
    else:
        pts = [(w, 0.0) for w in np.linspace(0.1, 0.9, n)]
    return [replace(base, within_cosine=float(w), cross_overlap=float(c)) for w, c in pts]


def timed(fn) -> float:
    """CPU seconds of ``fn()``."""
    start = time.process_time()
    fn()
    return time.process_time() - start


def matmul_flops_per_s(n: int = 1024, repeats: int = 10) -> float:
    """FLOP/s of an n x n float32 matmul (CPU time, the threads set above)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    return 2 * n**3 * repeats / timed(lambda: [a @ b for _ in range(repeats)])


def step_seconds(configs: list[SyntheticConfig], steps: int) -> float:
    """Seconds per SGD step of the stacked cells (world and model built beforehand, not timed)."""
    batch = CellBatch(configs)
    batch.step(0)  # warm-up
    return timed(lambda: [batch.step(step) for step in range(1, steps + 1)]) / steps


def main() -> None:
    """Print the benchmark figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps of the grid runs (default: 200)")
    parser.add_argument("--flop-steps", type=int, default=50, help="timed steps per FLOP/s point (default: 50)")
    args = parser.parse_args()
    base = SyntheticConfig(steps=args.steps, n_test=1000, n_test_ood=300, eval_every=10, ood_every=args.steps,
                           scenarios=["length_long", "flipped_labels", "polysemous_query", "noise_x5"])
    torch.set_num_threads(base.threads)  # what train_cells uses
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, CPU seconds, {args.steps} steps, "
          f"batch {base.batch_size}, n_test {base.n_test}")

    cells = grid(replace(base, seeds=3), 36)
    batched = timed(lambda: train_cells(cells))
    single = timed(lambda: [train_cells([c]) for c in cells])
    print(f"1. 6x6 grid x 3 seeds: batched {batched:.1f} s, cell by cell {single:.1f} s, "
          f"speed-up {single / batched:.1f}x (target >= 5x)")
    loop_batched = step_seconds(cells, args.flop_steps)
    loop_single = sum(step_seconds([c], args.flop_steps) for c in cells)
    print(f"   training steps alone (no world building, no evaluation): batched {1e3 * loop_batched:.1f} ms/step, "
          f"cell by cell {1e3 * loop_single:.1f} ms/step, speed-up {loop_single / loop_batched:.1f}x")

    per_cell = {}
    for n in (4, 16, 64, 256):
        per_cell[n] = timed(lambda n=n: train_cells(grid(replace(base, seeds=1), n))) / n
    print("2. cost per cell (1 seed, batched): " + ", ".join(f"{n} cells {s:.3f} s" for n, s in per_cell.items())
          + f"; 256 vs 4 cells per-cell cost ratio {per_cell[256] / per_cell[4]:.2f}")

    peak = matmul_flops_per_s()
    shares = []
    for s in (1, 8, 64, 256):
        configs = grid(replace(base, seeds=1), s)
        sec = step_seconds(configs, args.flop_steps)
        flops = step_flops(replace(base, seeds=s))
        shares.append(f"{s} instances {flops / sec / 1e9:.2f} GFLOP/s = {100 * flops / sec / peak:.1f}%")
    print(f"3. training step FLOP/s as a share of a float32 1024^2 matmul ({peak / 1e9:.1f} GFLOP/s): "
          + ", ".join(shares) + " (target >= 20% at 256)")


if __name__ == "__main__":
    main()
