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

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from mcicl.core.configuration import require, to_dict
from mcicl.core.logs import progress
from mcicl.synthetic.config import SCENARIOS, SyntheticConfig
from mcicl.synthetic.convergence import crossing_step, finite_or_none, summarize
from mcicl.synthetic.data import (
    Prompts,
    build_dictionary,
    generator,
    sample_mixed_prompts,
    sample_prompts,
    scenario_spec,
    seed_configs,
    torch_dtype,
    train_spec,
)
from mcicl.synthetic.metrics import map_metrics, mixed_concept_metrics, prompt_metrics
from mcicl.synthetic.model import OneLayerTransformer, zero_one_loss
from mcicl.synthetic.train import (
    DIVERGENCE_FACTOR,
    World,
    batch_indices,
    build_model,
    build_world,
    diverged,
    fresh_test,
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
        # test_prompts: fresh draws each cell's own set for this step, as synthetic.train does for that cell.
        tests = self.test if self.configs[0].test_prompts == "fixed" else Prompts.cat(
            [fresh_test(c, w, step) for c, w in zip(self.configs, self.worlds, strict=True)]).to(self.device)
        test = _split(prompt_metrics(self.model, tests, K), self.slices)
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


# ------------------------------------------------------------------------------- sweep cells: train to a rule

@dataclass(frozen=True)
class StopRule:
    """When a sweep cell stops, and how precisely its test error is measured on the way.

    A cell trains until every seed's test error has been measured at or below ``error`` (the cell *reached*), or
    until ``max_steps`` (the cell is *censored*: some seed never got there), or until a seed diverges (the cell is
    *diverged* and reports no result). The test error is measured every ``eval_every`` steps sequentially, on
    fresh prompts: blocks of ``block`` prompts per seed, new at every evaluation (:func:`block_generator`), are
    added until the 95% Wilson interval of the error lies wholly above or below ``error``, or its half-width is at
    most ``precision``, or ``n_test`` prompts are used. The error reported at the stop is measured on further
    fresh blocks (doubling from ``block``) until the half-width is at most ``precision`` or ``n_test`` is used.
    """

    max_steps: int
    error: float = 0.01
    precision: float = 0.005
    block: int = 50
    growth: float = DIVERGENCE_FACTOR  # divergence (synthetic.train.diverged): a minibatch loss above growth x
    #   the larger of the instance's first loss and log 2, or non-finite

    def __post_init__(self) -> None:
        require(isinstance(self.max_steps, int) and self.max_steps >= 0, "steps", self.max_steps,
                "an integer >= 0 (a sweep cell's maximum of steps)")
        require(0.0 < self.error < 0.5, "stop_error", self.error, "a number in (0, 0.5)")
        require(0.0 < self.precision < 0.5, "precision", self.precision, "a number in (0, 0.5)")
        require(self.block >= 1, "block", self.block, "an integer >= 1")
        require(self.growth > 1.0, "growth", self.growth, "a number > 1")

    def as_dict(self) -> dict:
        """The rule as summary.json records it."""
        return {"max_steps": self.max_steps, "error": self.error, "precision": self.precision, "block": self.block,
                "growth": self.growth, "seeds_needed": "all"}


def wilson(errors: float, n: float, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion errors / n."""
    if n <= 0:
        return 0.0, 1.0
    p = errors / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def wilson_bounds(errors: torch.Tensor, n: torch.Tensor, z: float = 1.959964) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`wilson` of every entry of float64 tensors, (0, 1) where n is 0. Computed in numpy, whose elementwise
    float64 arithmetic rounds as Python's floats do, so the bounds (and the seeds the rule closes) are the
    scalar function's to the last bit."""
    e, m = errors.numpy(), n.numpy()
    safe = np.maximum(m, 1.0)
    p = e / safe
    centre = (p + z * z / (2 * safe)) / (1 + z * z / safe)
    half = z * np.sqrt(p * (1 - p) / safe + z * z / (4 * safe * safe)) / (1 + z * z / safe)
    lo, hi = np.maximum(0.0, centre - half), np.minimum(1.0, centre + half)
    return torch.from_numpy(np.where(m > 0, lo, 0.0)), torch.from_numpy(np.where(m > 0, hi, 1.0))


def km_steps(per_seed: Sequence[float | None]) -> dict:
    """Steps to the stop level across seeds, censored seeds (None: never reached) handled as Kaplan-Meier does with
    one common censoring time: the median is the smallest step by which at least half of the seeds had reached it
    (None when that never happened: report '>= max_steps'); the interval is the range over seeds, its upper end
    None when some seed is censored (it is then '>= max_steps')."""
    n = len(per_seed)
    reached = sorted(float(v) for v in per_seed if v is not None and math.isfinite(v))
    need = math.ceil(n / 2)
    return {"median": reached[need - 1] if len(reached) >= need else None,
            "low": reached[0] if reached else None,
            "high": reached[-1] if reached and len(reached) == n else None,
            "censored_seeds": n - len(reached), "seeds": n}


@dataclass
class _Cell:
    config: SyntheticConfig
    world: World
    index: int
    rows: list = field(default_factory=list)  # per evaluation: step, test zero_one and n per seed
    status: str = "running"
    groups: list = field(default_factory=list)  # (config, dictionary) per dictionary group of its seeds
    reason: str | None = None
    stop_step: int | None = None
    final: dict | None = None


def _subset(model, rows: torch.Tensor):
    """Instances ``rows`` (an index tensor) of a stacked model as a new trainable model (parameters copied)."""
    part = copy.copy(model)
    part._parameters = {}
    for name, p in model.named_parameters():
        part.register_parameter(name, torch.nn.Parameter(p.detach().index_select(0, rows).clone()))
    return part


class SweepBatch:
    """The cells of one shape group trained to a :class:`StopRule`, building and evaluating only what the map
    needs: per cell its dictionary, training prompts and model up front; at every evaluation *fresh* test prompts,
    drawn in blocks of ``rule.block`` per cell (block j of the evaluation at step t from a generator keyed by the
    cell's seed, t and j: :func:`block_generator`), only while some seed of the cell still needs them (the
    sequential rule of :meth:`sequential`), and scored by a forward pass that counts errors (no other metric);
    at the stop, the test error and correct attention on fresh blocks independent of those that triggered the
    stop (drawn until the interval is ``rule.precision`` narrow), every OOD scenario (the sets ``synthetic
    train`` draws) and the mixed-concept prompts, also forward pass only. A cell leaves the batch as soon as it
    stops. ``timings`` holds the CPU seconds spent building, training, evaluating and in final evaluations."""

    def __init__(self, configs: Sequence[SyntheticConfig], rule: StopRule, device: str | torch.device = "cpu"):
        if not configs:
            raise ValueError("configs is empty; accepted: one or more SyntheticConfig of the same shape key")
        if len({shape_key(c) for c in configs}) > 1:
            raise ValueError("configs differ in fields that change tensor shapes or the training loop; accepted: "
                             f"cells that differ only in {', '.join(sorted(BATCHED_FIELDS))} (group them first "
                             "with group_cells)")
        start = time.process_time()
        self.rule = rule
        self.device = training_device(str(device))
        self.cells: list[_Cell] = []
        models, trains = [], []
        for i, c in enumerate(configs):
            groups = [(sc, build_dictionary(sc)) for sc in (seed_configs(c) if c.dictionary == "per_seed" else [c])]
            train_sets = [sample_prompts(dic, train_spec(sc), sc.seeds, sc.n_train, generator(sc, 2))
                          for sc, dic in groups]
            world = World(groups[0][1], train_sets[0] if len(train_sets) == 1 else Prompts.cat(train_sets),
                          None, {},  # type: ignore[arg-type]
                          [dic for _, dic in groups] if c.dictionary == "per_seed" else None)
            self.cells.append(_Cell(c, world, i))
            self.cells[-1].groups = groups
            models.append(build_model(c, world))
            trains.append(world.train)
        self.model = stack_models(models).to(self.device)
        dt = torch_dtype(configs[0].dtype)
        self.lr = torch.cat([torch.full((c.seeds,), c.lr, dtype=dt) for c in configs]).to(self.device)
        # What a training step reads (the noise xi and the bookkeeping are never gathered: not kept).
        self.train = tuple(torch.cat([getattr(t, name) for t in trains]).to(self.device)
                           for name in ("x", "y", "xq", "target"))
        self.active = list(range(len(self.cells)))  # cells still training, in batch order
        self.first_loss: torch.Tensor | None = None
        self.timings = {"build": time.process_time() - start, "train": 0.0, "evaluate": 0.0, "final": 0.0}

    def _instances(self) -> list[slice]:
        out, start = [], 0
        for c in self.active:
            n = self.cells[c].config.seeds
            out.append(slice(start, start + n))
            start += n
        return out

    def _fresh_block(self, cell: _Cell, key: Sequence[int], j: int, size: int) -> Prompts:
        """Block j (``size`` prompts) of fresh test prompts of ``cell`` (all its seeds) for the evaluation keyed by
        ``key``."""
        parts = [sample_prompts(dic, train_spec(sc), sc.seeds, size, block_generator(sc.seed, key, j))
                 for sc, dic in cell.groups]
        return parts[0] if len(parts) == 1 else Prompts.cat(parts)

    def step(self, step: int) -> torch.Tensor:
        """One SGD step of every active instance (its own minibatch and learning rate); per-instance losses."""
        x, y, xq, target = self.train
        if self.cells[0].config.full_batch:
            return sgd_update(self.model, x, y, xq, target, self.lr)
        idx = torch.cat([batch_indices(self.cells[c].config, step) for c in self.active]).to(self.device)
        return sgd_update(self.model, *(Prompts.gather(v, idx) for v in (x, y, xq, target)), self.lr)

    @torch.no_grad()
    def sequential(self, positions: Sequence[int], key: Sequence[int], threshold: bool = True,
                   attention: bool = False) -> dict[str, torch.Tensor]:
        """Test errors of the active cells at ``positions`` (indices into ``self.active``), on fresh blocks of
        prompts keyed by ``key``: blocks are added, for the seeds still open, until the 95% Wilson interval of a
        seed's error lies wholly above or below ``rule.error`` (only if ``threshold``), or its half-width is at
        most ``rule.precision``, or ``n_test`` prompts are used. Per instance of those cells (in order):
        ``errors`` and ``prompts`` counts, and with ``attention`` the summed correct attention."""
        model, local = self._model_of(positions)  # local: each cell's instances within ``model``
        n_test = self.cells[self.active[positions[0]]].config.n_test
        sizes = block_sizes(self.rule.block, n_test, growth=1 if threshold else 2)
        S = local[-1].stop
        errors, counts, correct = (torch.zeros(S, dtype=torch.float64) for _ in range(3))
        open_ = torch.ones(S, dtype=torch.bool)
        for j, take in enumerate(sizes):
            if not bool(open_.any()):
                break
            need = [i for i, sl in enumerate(local) if bool(open_[sl].any())]
            blocks = [self._fresh_block(self.cells[self.active[positions[i]]], key, j, take) for i in need]
            # Only what the count reads is stacked over the cells (not the noise or the bookkeeping).
            names = ("x", "y", "xq", "target") + (("same",) if attention else ())
            xs = [torch.cat([getattr(b, name) for b in blocks]).to(self.device) for name in names]
            sub = torch.cat([torch.arange(local[i].start, local[i].stop) for i in need])
            part = model if len(need) == len(local) else _subset(model, sub.to(self.device))
            out = part(xs[0], xs[1], xs[2])
            live = open_[sub]
            wrong = zero_one_loss(out.f, xs[3]).sum(1).double().cpu()
            errors[sub] += torch.where(live, wrong, 0.0)
            counts[sub] += torch.where(live, float(take), 0.0)
            if attention:
                mass = (out.alpha * xs[4].to(out.alpha.dtype)).sum(-1).sum(1).double().cpu()
                correct[sub] += torch.where(live, mass, 0.0)
            lo, hi = wilson_bounds(errors, counts)
            done = (hi - lo) / 2 <= self.rule.precision
            if threshold:
                done |= (lo > self.rule.error) | (hi <= self.rule.error)
            open_ &= ~done
        out_ = {"errors": errors, "prompts": counts}
        if attention:
            out_["correct"] = correct
        return out_

    def _model_of(self, positions: Sequence[int]) -> tuple[OneLayerTransformer, list[slice]]:
        """The instances of the active cells at ``positions`` as one model (a view when they are contiguous), and
        each cell's instances within it."""
        slices = self._instances()
        sls = [slices[p] for p in positions]
        rows = torch.cat([torch.arange(sl.start, sl.stop) for sl in sls])
        model = self.model.instances(slice(sls[0].start, sls[-1].stop)) \
            if int(rows[-1] - rows[0]) + 1 == len(rows) else _subset(self.model, rows.to(self.device))
        local, start = [], 0
        for sl in sls:
            local.append(slice(start, start + sl.stop - sl.start))
            start = local[-1].stop
        return model, local

    @torch.no_grad()
    def _finals(self, positions: Sequence[int]) -> list[dict]:
        """The evaluation at their stop of the active cells at ``positions``, one forward pass per block or
        prompt set for all of them (each cell's prompts from its own generators, as alone): test error and
        correct attention on fresh blocks (drawn until the interval is ``rule.precision`` narrow), every OOD
        scenario and the mixed-concept prompts (error and attention only). Cells are taken in chunks whose
        largest prompt set (a test block or an OOD set) stays under FINAL_DEMOS demonstrations."""
        out: list[dict] = []
        chunk: list[int] = []
        for p in positions:
            c = self.cells[self.active[p]].config
            longest = max([*block_sizes(self.rule.block, c.n_test, growth=2),
                           *(c.n_test_ood * scenario_spec(c, n).L // c.L for n in c.scenarios)])
            size = c.seeds * longest * c.L
            if chunk and (len(chunk) + 1) * size > FINAL_DEMOS:
                out += self._finals_chunk(chunk)
                chunk = []
            chunk.append(p)
        return out + (self._finals_chunk(chunk) if chunk else [])

    def _finals_chunk(self, positions: list[int]) -> list[dict]:
        cells = [self.cells[self.active[p]] for p in positions]
        model, local = self._model_of(positions)
        seq = self.sequential(positions, (FINAL_TEST_PURPOSE,), threshold=False, attention=True)
        out = [{"test": {"zero_one": (seq["errors"][sl] / seq["prompts"][sl]).tolist(),
                         "correct_attention": (seq["correct"][sl] / seq["prompts"][sl]).tolist()},
                "ood": {}, "test_prompts": [int(v) for v in seq["prompts"][sl]]} for sl in local]
        c0 = cells[0].config
        for name in c0.scenarios:
            sets = [sample_prompts(dic, scenario_spec(sc, name), sc.seeds, sc.n_test_ood,
                                   generator(sc, 10 + SCENARIOS.index(name)))
                    for cell in cells for sc, dic in cell.groups]
            metrics = map_metrics(model, _counted(sets, self.device))
            for final, sl in zip(out, local, strict=True):
                final["ood"][name] = {k: v[sl] for k, v in metrics.items()}
        if c0.K >= 2 and c0.L >= 4:
            sets = [mixed_set(cell.config, cell.world) for cell in cells]
            prompts = _counted([p for p, _ in sets], self.device, concept=True)
            metrics = mixed_concept_metrics(model, prompts, torch.cat([d for _, d in sets]).to(self.device))
            for final, sl in zip(out, local, strict=True):
                final["mixed_concepts"] = {k: v[sl] for k, v in metrics.items()}
        return out

    def _drop(self, leaving: list[int]) -> None:
        """Remove the cells at positions ``leaving`` of ``self.active`` from the stacked batch."""
        slices = self._instances()
        keep = [c for j, c in enumerate(self.active) if j not in leaving]
        rows = torch.cat([torch.arange(sl.start, sl.stop) for j, sl in enumerate(slices) if j not in leaving]) \
            if keep else torch.zeros(0, dtype=torch.long)
        dev_rows = rows.to(self.device)
        self.model = _subset(self.model, dev_rows)
        self.lr = self.lr.index_select(0, dev_rows)

        self.train = tuple(t.index_select(0, dev_rows) for t in self.train)
        self.first_loss = None if self.first_loss is None else self.first_loss.index_select(0, rows)
        self.active = keep

    def run(self) -> list[_Cell]:
        """Train until every cell has stopped; the cells with their rows, status and final evaluation."""
        rule = self.rule
        eval_every = self.cells[0].config.eval_every
        clock = time.process_time  # CPU seconds, as bench_sweep.py measures
        for step in range(rule.max_steps + 1):
            if step % eval_every == 0 or step == rule.max_steps:
                t0 = clock()
                seq = self.sequential(range(len(self.active)), (TEST_BLOCK_PURPOSE, step))
                self.timings["evaluate"] += clock() - t0
                leaving = []
                for j, (c, sl) in enumerate(zip(self.active, self._instances(), strict=True)):
                    cell = self.cells[c]
                    err = (seq["errors"][sl] / seq["prompts"][sl]).tolist()
                    cell.rows.append({"step": step, "test": {"zero_one": err, "n": seq["prompts"][sl].tolist()}})
                    if all(e <= rule.error for e in err) or step == rule.max_steps:
                        cell.status = "reached" if all(e <= rule.error for e in err) else "censored"
                        cell.stop_step = step
                        leaving.append(j)
                if leaving:
                    t1 = clock()
                    for j, final in zip(leaving, self._finals(leaving), strict=True):
                        self.cells[self.active[j]].final = final
                    self.timings["final"] += clock() - t1
                    self._drop(leaving)
            if step == rule.max_steps or not self.active:
                break
            t0 = clock()
            losses = self.step(step).double().cpu()
            self.timings["train"] += clock() - t0
            if self.first_loss is None:
                self.first_loss = losses.clone()
            # synthetic.train.diverged's rule, checked at every step on the losses at hand.
            bad = ~torch.isfinite(losses) | (losses > rule.growth * self.first_loss.clamp(min=math.log(2)))
            if bool(bad.any()):
                leaving = []
                for j, (c, sl) in enumerate(zip(self.active, self._instances(), strict=True)):
                    if bool(bad[sl].any()):
                        s = int(torch.nonzero(bad[sl]).flatten()[0])
                        cell = self.cells[c]
                        cell.status, cell.stop_step = "diverged", step
                        why = diverged([float(self.first_loss[sl][s]), float(losses[sl][s])], factor=rule.growth)
                        cell.reason = f"seed {s} at step {step}: {why}"
                        leaving.append(j)
                self._drop(leaving)
        return self.cells


def _counted(sets: Sequence[Prompts], device: torch.device, concept: bool = False) -> Prompts:
    """Prompt sets of several cells joined along the seed axis, only the fields a count or an attention statistic
    reads (words, labels, query, target, same; with ``concept`` the query's concept), on ``device``."""
    names = ("x", "y", "xq", "target", "same") + (("concept",) if concept else ())
    parts = {name: torch.cat([getattr(p, name) for p in sets]).to(device) for name in names}
    empty = parts["x"].new_zeros(0)
    return Prompts(parts["x"], parts["y"], parts["xq"], parts["target"], parts["same"],
                   parts.get("concept", empty), empty)


FINAL_DEMOS = 2**20  # demonstrations per forward pass of the final evaluations (x and y: 0.4 GB at d 48, float32)
TEST_BLOCK_PURPOSE = 100  # key of a sweep cell's fresh test blocks at an evaluation: (TEST_BLOCK_PURPOSE, step)
FINAL_TEST_PURPOSE = 101  # key of the fresh test blocks of a cell's final evaluation, at its stop


def block_sizes(block: int, n_test: int, growth: int = 1) -> list[int]:
    """Prompts per seed of each sequential test block: ``block``, then each block ``growth`` times the one before
    (1: equal blocks, as evaluations draw them; 2: doubling, as the final evaluation draws them, where the
    precision rule alone decides and few, larger blocks cost less), the last one cut so the total is ``n_test``."""
    sizes, total, size = [], 0, max(1, block)
    while total < n_test:
        sizes.append(min(size, n_test - total))
        total += sizes[-1]
        size *= growth
    return sizes


def block_generator(seed: int, key: Sequence[int], j: int) -> torch.Generator:
    """The generator of fresh test block ``j`` of the evaluation keyed by ``key`` (e.g. (TEST_BLOCK_PURPOSE,
    step)) for a cell of seed ``seed``: numpy's SeedSequence of (seed, *key, j), so blocks of different
    evaluations, of different j and of different cells never share a stream, and a cell draws the same blocks
    in any batch."""
    state = int(np.random.SeedSequence([seed, *key, j]).generate_state(1)[0])
    return torch.Generator().manual_seed(state)


def mixed_set(config: SyntheticConfig, world: World, concepts: int = 2) -> tuple[Prompts, torch.Tensor]:
    """The cell's mixed-concept test prompts (``n_test_ood`` per seed; demonstrations from ``concepts`` concepts,
    :func:`synthetic.data.sample_mixed_prompts`), from the cell's own seed (generator purpose MIXED_PURPOSE)."""
    spec = train_spec(config)
    if config.dictionary == "per_seed":
        parts = [sample_mixed_prompts(dic, spec, 1, config.n_test_ood, generator(c, MIXED_PURPOSE), concepts)
                 for c, dic in zip(seed_configs(config), world.seed_dictionaries, strict=True)]
        return Prompts.cat([p for p, _ in parts]), torch.cat([d for _, d in parts])
    return sample_mixed_prompts(world.dictionary, spec, config.seeds, config.n_test_ood,
                                generator(config, MIXED_PURPOSE), concepts)


MIXED_PURPOSE = 50  # generator purpose of the mixed-concept prompts (1 init, 2 train, 3 test, 10+ scenarios)


def _cell_summary(cell: _Cell, rule: StopRule) -> dict:
    """A sweep cell's summary.json: status, per-seed steps to the stop level and their KM median and range, and
    (unless diverged) the final errors and attention at the stop."""
    summary: dict = {"status": cell.status, "stop_rule": rule.as_dict(), "stop_step": cell.stop_step,
                     "seeds": cell.config.seeds}
    if cell.status == "diverged":
        summary["diverged_reason"] = cell.reason
        return summary
    steps = np.asarray([r["step"] for r in cell.rows])
    err = np.asarray([r["test"]["zero_one"] for r in cell.rows])  # (T, S)
    floor = 0.5 / cell.config.n_test
    per_seed = [crossing_step(steps, err[:, s], rule.error, floor) for s in range(err.shape[1])]
    per_seed = [v if math.isfinite(v) else None for v in per_seed]
    final = cell.final
    summary["test_prompts"] = final["test_prompts"]
    summary["per_seed"] = {"steps_to_stop_error": per_seed, "test_zero_one": final["test"]["zero_one"],
                           "correct_attention": final["test"]["correct_attention"]}
    summary["steps_to_stop_error"] = km_steps(per_seed)
    summary["final"] = {"test_zero_one": float(np.mean(final["test"]["zero_one"])),
                        "correct_attention": float(np.mean(final["test"]["correct_attention"])),
                        "step": cell.stop_step}
    summary["ood"] = {name: {"test_zero_one": float(np.mean(m["zero_one"])),
                             "correct_attention": float(np.mean(m["correct_attention"]))}
                      for name, m in final["ood"].items()}
    if "mixed_concepts" in final:
        m = final["mixed_concepts"]
        summary["mixed_concepts"] = {key: float(np.mean(v)) for key, v in m.items()}
        summary["per_seed"]["same_concept_attention"] = m["same_concept_attention"]
    return finite_or_none(summary)


def sweep_cells(configs: Sequence[SyntheticConfig], rule: StopRule | None = None,
                device: str = "cpu") -> list[CellResult]:
    """Train cells of one shape group as one batched model, each until ``rule`` stops it (default: 1% test error
    or the configs' ``steps``); per cell its evaluation rows (step, sequential test error and prompts per seed) and
    its summary (:func:`_cell_summary`). A cell's numbers do not depend on the cells it is batched with."""
    rule = rule or StopRule(max_steps=configs[0].steps)
    threads = torch.get_num_threads()
    if configs[0].threads:
        torch.set_num_threads(configs[0].threads)
    try:
        torch.set_grad_enabled(True)
        start = time.perf_counter()
        cells = SweepBatch(configs, rule, device).run()
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    out = []
    for cell in cells:
        summary = _cell_summary(cell, rule)
        summary["seconds"] = round(seconds, 2)
        summary["batch_cells"] = len(configs)
        out.append(CellResult(cell.config, cell.rows, summary))
    return out
