"""Sweep cells as one batched model: cells whose tensors have the same shapes train as one tensor program.

A cell is one ``SyntheticConfig``. Each cell's world (dictionary, training, test and OOD prompts) and its
model are built with the ordinary functions of ``synthetic/train.py``, then stacked along the seed axis S that
the model already has: cell c owns instances ``slices[c]``. What differs between cells of one batch
(geometry, noise, polysemy, label noise, init, learning rate, seed, seed count) only changes tensor *values*:
it lives in the stacked data, the stacked parameters and a per-instance learning-rate tensor. Fields that
change shapes or the training program (``K``, ``d``, ``L``, ``steps``, ``n_test`` ...) split cells into groups.

Instances share no parameters and the loss is a sum of per-instance losses, so each instance receives
exactly the gradient it gets when its cell trains alone; the metrics rows of a cell are the ones
``synthetic.train`` writes for that config (tested, in float64 and float32).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mcicl.core.configuration import to_dict
from mcicl.core.logs import progress
from mcicl.synthetic.config import SyntheticConfig
from mcicl.synthetic.convergence import summarize
from mcicl.synthetic.data import Prompts, torch_dtype
from mcicl.synthetic.metrics import prompt_metrics
from mcicl.synthetic.train import (
    World,
    batch_indices,
    build_model,
    build_world,
    sgd_update,
    stack_models,
    training_device,
    world_weight_metrics,
)

# Fields that may differ between the cells of one batch: they change values, never shapes or the loop.
BATCHED_FIELDS = frozenset({
    "K_irr", "within_cosine", "cross_overlap", "label_cosine", "shared_labels", "polysemy_rate", "cooccurrence",
    "sigma", "both_signs", "label_noise", "demo_label_noise", "train_skew", "sigma0", "readout_init",
    "readout_align", "seeds", "lr", "seed", "n_features",
})


def shape_key(config: SyntheticConfig) -> tuple:
    """The fields that must agree for two cells to train as one batch (everything but BATCHED_FIELDS)."""
    return tuple((k, str(v)) for k, v in to_dict(config).items() if k not in BATCHED_FIELDS)


def group_cells(configs: Sequence[SyntheticConfig], max_cells: int | None = None) -> list[list[int]]:
    """Indices of ``configs`` in batches: same shape key, at most ``max_cells`` cells each, in first-seen order."""
    if max_cells is not None and max_cells < 1:
        raise ValueError(f"max_cells {max_cells!r}; accepted: an integer >= 1 or None (no limit)")
    groups: dict[tuple, list[int]] = {}
    for i, config in enumerate(configs):
        groups.setdefault(shape_key(config), []).append(i)
    out = []
    for members in groups.values():
        step = max_cells or len(members)
        out += [members[j:j + step] for j in range(0, len(members), step)]
    return out


def _split(values: dict, slices: Sequence[slice]) -> list[dict]:
    """Per-instance metric lists (a prompt_metrics dict) cut into one dict per cell."""
    return [{k: v[sl] for k, v in values.items()} for sl in slices]


@dataclass
class CellResult:
    """One trained cell: its config, the metrics rows ``synthetic.train`` would write, and their summary."""

    config: SyntheticConfig
    rows: list[dict]
    summary: dict


class CellBatch:
    """Cells of one shape group stacked into one model: per-instance data, parameters and learning rates."""

    def __init__(self, configs: Sequence[SyntheticConfig], device: str | torch.device = "cpu"):
        if not configs:
            raise ValueError("configs is empty; accepted: one or more SyntheticConfig of the same shape key")
        keys = {shape_key(c) for c in configs}
        if len(keys) > 1:
            raise ValueError("configs differ in fields that change tensor shapes or the training loop; accepted: "
                             f"cells that differ only in {', '.join(sorted(BATCHED_FIELDS))} (group them first "
                             "with group_cells)")
        self.configs = list(configs)
        self.device = training_device(str(device))
        # Per cell, on the CPU: its world (dictionaries and prompts, kept for the weight metrics) and a model built
        # by the ordinary initialiser; the models are stacked into one and the prompts moved to the device.
        self.worlds: list[World] = [build_world(c) for c in self.configs]
        bounds = [0]
        for c in self.configs:
            bounds.append(bounds[-1] + c.seeds)
        self.slices = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        self.model = stack_models([build_model(c, w) for c, w in zip(self.configs, self.worlds, strict=True)])
        self.model = self.model.to(self.device)
        dt = torch_dtype(self.configs[0].dtype)
        self.lr = torch.cat([torch.full((c.seeds,), c.lr, dtype=dt) for c in self.configs]).to(self.device)
        self.train = Prompts.cat([w.train for w in self.worlds]).to(self.device)
        self.test = Prompts.cat([w.test for w in self.worlds]).to(self.device)
        self.ood = {name: Prompts.cat([w.ood[name] for w in self.worlds]).to(self.device)
                    for name in self.configs[0].scenarios}

    @property
    def instances(self) -> int:
        """Total instances S over all cells."""
        return self.slices[-1].stop

    def step(self, step: int) -> torch.Tensor:
        """One SGD step of every instance (its own minibatch and learning rate); per-instance losses (S,)."""
        t = self.train
        if self.configs[0].full_batch:
            return sgd_update(self.model, t.x, t.y, t.xq, t.target, self.lr)
        idx = torch.cat([batch_indices(c, step) for c in self.configs]).to(self.device)  # (S, B)
        # Only what the loss reads is gathered (Prompts.index would also copy the noise and bookkeeping).
        x, y, xq, target = (Prompts.gather(v, idx) for v in (t.x, t.y, t.xq, t.target))
        return sgd_update(self.model, x, y, xq, target, self.lr)

    def evaluate(self, step: int, ood: bool = True) -> list[dict]:
        """One metrics row per cell, as ``synthetic.train.evaluate`` computes it for that cell alone."""
        K = self.configs[0].K
        train = _split(prompt_metrics(self.model, self.train, K), self.slices)
        test = _split(prompt_metrics(self.model, self.test, K), self.slices)
        scenarios = {name: _split(prompt_metrics(self.model, p, K), self.slices)
                     for name, p in self.ood.items()} if ood else {}
        rows = []
        for c, (world, sl) in enumerate(zip(self.worlds, self.slices, strict=True)):
            row = {"step": step, "train": train[c], "test": test[c],
                   "weights": world_weight_metrics(self.model, world, offset=sl.start)}
            if ood:
                row["ood"] = {name: scenarios[name][c] for name in self.ood}
            rows.append(row)
        return rows


def train_cells(configs: Sequence[SyntheticConfig], device: str = "cpu") -> list[CellResult]:
    """Train cells of one shape group as one batched model; per cell the metrics rows and summary.

    The rows follow ``synthetic.train``'s schedule (evaluation every ``eval_every`` steps, OOD every
    ``ood_every``, a final evaluation at ``steps``).
    """
    config = configs[0]
    threads = torch.get_num_threads()
    # config.threads (1 by default) whatever the batch size: on the shared 2-core machine (bench_sweep.py part 4)
    # 2 threads made a 108-instance batch's step 14-20x and its evaluation 6-18x slower (each op torch splits
    # over threads waited ~8 ms); threads: 0 leaves torch's own setting, for machines where more threads pay.
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        torch.set_grad_enabled(True)
        start = time.perf_counter()
        batch = CellBatch(configs, device)
        rows: list[list[dict]] = [[] for _ in configs]
        for step in progress(range(config.steps), desc=f"{len(configs)} cells as one model"):
            if step % config.eval_every == 0:
                for cell_rows, row in zip(rows, batch.evaluate(step, ood=step % config.ood_every == 0), strict=True):
                    cell_rows.append(row)
            batch.step(step)
        for cell_rows, row in zip(rows, batch.evaluate(config.steps), strict=True):
            cell_rows.append(row)
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    out = []
    for c, cell_rows in zip(configs, rows, strict=True):
        summary = summarize(cell_rows, c)
        # The batch's wall time, shared by its cells (a cell alone is not timed separately).
        summary["seconds"] = round(seconds, 2)
        summary["batch_cells"] = len(configs)
        out.append(CellResult(c, cell_rows, summary))
    return out
