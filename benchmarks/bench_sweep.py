"""Benchmark of batched sweeps (a script, not a test): run ``python benchmarks/bench_sweep.py``.

Measured in one run and printed as ratios:
1. a 6 x 6 grid (within_cosine x cross_overlap) x 3 seeds: all 36 cells as one batched model vs cell by cell
   (the same ``train_cells`` code given one cell at a time), whole cost (worlds, training, evaluation), then
   each part alone: building (worlds, models, stacking), one training step, one evaluation (train and test
   prompt metrics and weight metrics, no OOD);
2. cost per cell as the grid grows (4, 16, 64, 256 cells, 1 seed each, batched);
3. FLOP/s of a training step (analytic count, as in bench_synthetic.py) as a share of a same-dtype matmul
   measured here, at 1, 8, 64 and 256 stacked instances;
4. threads: wall time of a training step and of an evaluation of the 108-instance grid batch on 1 and 2 threads
   (the rule ``train_cells`` follows);
5. the sweep's own path (``sweep_cells``: each cell to a stop rule, test error sequentially on fresh test blocks
   drawn at every evaluation, the final error on fresh blocks to the stated precision, OOD and mixed-concept
   prompts only at the stop) against ``train_cells`` (the rows of ``synthetic train``, what sweeps ran before): on
   the 6 x 6 x 3 grid at a fixed budget (stop error out of reach, so both train every step) the whole time over the
   time spent in training steps (goal <= 1.5x), then a 16-cell sweep over a 1-cell sweep (goal <= 4x), and the
   grid with the default stop rule (1% error);
6. only where torch sees a CUDA GPU: cells per second of the 6 x 6 x 3 grid's sweep on CUDA beside the CPU
   (wall time).

Times are CPU seconds of this process (``time.process_time``): training runs on one thread, so on an idle
machine they equal wall time, and on a shared machine they are not inflated by other people's work; per-step
and per-evaluation times are the best of a few runs. Part 4 compares thread counts, so it reports wall time.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
from bench_synthetic import step_flops

from mcicl.synthetic.cells import CellBatch, StopRule, SweepBatch, train_cells
from mcicl.synthetic.config import SyntheticConfig


def grid(base: SyntheticConfig, n: int) -> list[SyntheticConfig]:
    """n cells over (within_cosine, cross_overlap): a square grid when n is a square, else a 1-D row."""
    side = int(round(n**0.5))
    if side * side == n:
        pts = [(w, c) for w in np.linspace(0.1, 0.9, side) for c in np.linspace(0.0, 0.4, side)]
    else:
        pts = [(w, 0.0) for w in np.linspace(0.1, 0.9, n)]
    return [replace(base, within_cosine=float(w), cross_overlap=float(c)) for w, c in pts]


def timed(fn: Callable[[], object], clock: Callable[[], float] = time.process_time) -> float:
    """Seconds of ``fn()`` (CPU seconds unless another clock is given)."""
    start = clock()
    fn()
    return clock() - start


def matmul_flops_per_s(n: int = 1024, repeats: int = 10, best_of: int = 3) -> float:
    """FLOP/s of an n x n float32 matmul (CPU time, the threads set above; the best of ``best_of`` runs)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    return 2 * n**3 * repeats / min(timed(lambda: [a @ b for _ in range(repeats)]) for _ in range(best_of))


def step_seconds(batch: CellBatch, steps: int, clock: Callable[[], float] = time.process_time,
                 best_of: int = 3) -> float:
    """Seconds per SGD step of a built batch: the best of ``best_of`` runs of ``steps`` steps, after a warm-up
    step (on a shared machine the fastest run is the one least disturbed by other work)."""
    batch.step(0)
    return min(timed(lambda r=r: [batch.step(r * steps + s) for s in range(1, steps + 1)], clock)
               for r in range(best_of)) / steps


def eval_seconds(batch: CellBatch, clock: Callable[[], float] = time.process_time, best_of: int = 2) -> float:
    """Seconds per evaluation without OOD scenarios (what runs every eval_every steps): the best of ``best_of``,
    after a warm-up."""
    batch.evaluate(0, ood=False)
    return min(timed(lambda: batch.evaluate(0, ood=False), clock) for _ in range(best_of))


def parts(configs: list[SyntheticConfig], steps: int) -> tuple[float, float, float]:
    """(build, step, evaluation) CPU seconds of the cells as one batch."""
    batch: list[CellBatch] = []
    build = timed(lambda: batch.append(CellBatch(configs)))
    return build, step_seconds(batch[0], steps), eval_seconds(batch[0])


def main() -> None:
    """Print the benchmark figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps of the grid runs (default: 200)")
    parser.add_argument("--flop-steps", type=int, default=50, help="timed steps per FLOP/s point (default: 50)")
    parser.add_argument("--only-sweep", action="store_true", help="part 5 only")
    args = parser.parse_args()
    # test_prompts "fixed": train_cells (parts 1-4, the "before" of part 5) re-scores one test set, as these
    # figures always measured it (the sweep path draws fresh blocks whatever this says).
    base = SyntheticConfig(steps=args.steps, n_test=1000, n_test_ood=300, eval_every=10, ood_every=args.steps,
                           scenarios=["length_long", "flipped_labels", "polysemous_query", "noise_x5"],
                           test_prompts="fixed")
    torch.set_num_threads(base.threads)  # what train_cells uses
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, CPU seconds, {args.steps} steps, "
          f"batch {base.batch_size}, n_test {base.n_test}")

    cells = grid(replace(base, seeds=3), 36)
    if args.only_sweep:
        sweep_part(base, cells, args.steps)
        return
    batched = timed(lambda: train_cells(cells))
    single = timed(lambda: [train_cells([c]) for c in cells])
    print(f"1. 6x6 grid x 3 seeds: batched {batched:.1f} s, cell by cell {single:.1f} s, "
          f"speed-up {single / batched:.1f}x (target >= 5x)")
    b_build, b_step, b_eval = parts(cells, args.flop_steps)
    s_build, s_step, s_eval = (sum(v) for v in zip(*(parts([c], args.flop_steps) for c in cells), strict=True))
    evals = args.steps // base.eval_every + 1
    print(f"   building (worlds, models, stacking): batched {b_build:.1f} s, cell by cell {s_build:.1f} s, "
          f"{s_build / b_build:.1f}x\n"
          f"   training steps alone: batched {1e3 * b_step:.1f} ms/step, cell by cell {1e3 * s_step:.1f} ms/step, "
          f"{s_step / b_step:.1f}x ({args.steps} steps: {args.steps * b_step:.1f} vs {args.steps * s_step:.1f} s)\n"
          f"   one evaluation (train + test prompt metrics, weight metrics): batched {1e3 * b_eval:.0f} ms, "
          f"cell by cell {1e3 * s_eval:.0f} ms, {s_eval / b_eval:.1f}x ({evals} evaluations: "
          f"{evals * b_eval:.1f} vs {evals * s_eval:.1f} s)")

    per_cell = {}
    for n in (4, 16, 64, 256):
        per_cell[n] = timed(lambda n=n: train_cells(grid(replace(base, seeds=1), n))) / n
    print("2. cost per cell (1 seed, batched): " + ", ".join(f"{n} cells {s:.3f} s" for n, s in per_cell.items())
          + f"; 256 vs 4 cells per-cell cost ratio {per_cell[256] / per_cell[4]:.2f}")

    peak = matmul_flops_per_s()
    shares = []
    for s in (1, 8, 64, 256):
        sec = step_seconds(CellBatch(grid(replace(base, seeds=1), s)), args.flop_steps)
        flops = step_flops(replace(base, seeds=s))
        shares.append(f"{s} instances {1e3 * sec:.1f} ms/step {flops / sec / 1e9:.2f} GFLOP/s = "
                      f"{100 * flops / sec / peak:.1f}%")
    print(f"3. training step FLOP/s as a share of a float32 1024^2 matmul ({peak / 1e9:.1f} GFLOP/s): "
          + ", ".join(shares) + " (target >= 20% at 256)")

    batch = CellBatch(cells)
    walls = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        walls.append((step_seconds(batch, 5, time.perf_counter), eval_seconds(batch, time.perf_counter)))
    torch.set_num_threads(base.threads)
    (s1, e1), (s2, e2) = walls
    print(f"4. threads, {batch.instances} instances, wall time: 1 thread {1e3 * s1:.1f} ms/step and {1e3 * e1:.0f} ms "
          f"per evaluation, 2 threads {1e3 * s2:.1f} ms/step and {1e3 * e2:.0f} ms (2 vs 1: {s1 / s2:.2f}x, "
          f"{e1 / e2:.2f}x)")

    sweep_part(base, cells, args.steps)


def sweep_part(base: SyntheticConfig, cells: list[SyntheticConfig], steps: int) -> None:
    """Part 5: the sweep path against train_cells, one run."""
    fixed = StopRule(max_steps=steps, error=1e-9)  # out of reach: every cell trains all steps

    def sweep(configs: list[SyntheticConfig], rule: StopRule) -> tuple[float, dict]:
        holder: list[SweepBatch] = []
        total = timed(lambda: holder.append(SweepBatch(configs, rule)) or holder[0].run())
        return total, holder[0].timings

    old_total = timed(lambda: train_cells(cells))
    old_step = step_seconds(CellBatch(cells), 20)
    new_total, t = sweep(cells, fixed)
    print(f"5. 6x6 grid x 3 seeds, {steps} steps: before (train_cells) {old_total:.1f} s = "
          f"{old_total / (steps * old_step):.1f}x its training steps ({steps * old_step:.1f} s); "
          f"sweep path {new_total:.1f} s = {new_total / t['train']:.2f}x its training steps ({t['train']:.1f} s; "
          f"build {t['build']:.1f} s, evaluations {t['evaluate']:.1f} s, final {t['final']:.1f} s) (goal <= 1.5x)")
    one_old = timed(lambda: train_cells(cells[:1]))
    sixteen_old = timed(lambda: train_cells(grid(replace(base, seeds=3), 16)))
    one_new, t1 = sweep(cells[:1], fixed)
    sixteen_new, t16 = sweep(grid(replace(base, seeds=3), 16), fixed)
    print(f"   16-cell vs 1-cell sweep (3 seeds): before {sixteen_old:.1f} / {one_old:.2f} s = "
          f"{sixteen_old / one_old:.1f}x; sweep path {sixteen_new:.1f} / {one_new:.2f} s = "
          f"{sixteen_new / one_new:.1f}x (goal <= 4x); their training steps alone {t16['train']:.2f} / "
          f"{t1['train']:.2f} s = {t16['train'] / t1['train']:.1f}x")
    rule_total, t = sweep(cells, StopRule(max_steps=steps))
    print(f"   with the default stop rule (1% error, at most {steps} steps): {rule_total:.1f} s "
          f"({rule_total / t['train']:.2f}x its training steps)")
    if torch.cuda.is_available():
        walls = {}
        for device in ("cpu", "cuda"):
            start = time.perf_counter()
            SweepBatch(cells, fixed, device).run()
            walls[device] = time.perf_counter() - start
        print(f"6. {len(cells)} cells x 3 seeds, {steps} steps, wall time: CPU {len(cells) / walls['cpu']:.2f} "
              f"cells/s, CUDA ({torch.cuda.get_device_name()}) {len(cells) / walls['cuda']:.2f} cells/s")


if __name__ == "__main__":
    main()
