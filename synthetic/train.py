"""SGD training of S seeds at once, with evaluation on train, test and every OOD scenario along the way.

Randomness is derived from ``config.seed`` per purpose (dictionary, init, training set, test sets) and per
step (the minibatch), so a run resumed from a checkpoint gives the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from mcicl.core.configuration import from_dict, load_config, to_dict
from mcicl.core.devices import check_device
from mcicl.core.io import read_json, read_jsonl
from mcicl.core.jobs import DemoContext, JobContext
from mcicl.core.logs import progress
from mcicl.core.runs import RunFolder, require_run
from mcicl.core.seeding import seed_everything
from mcicl.synthetic.baselines import BASELINES, QueryOnly, baseline_scores
from mcicl.synthetic.checkpoints import latest_checkpoint, load_weights, save_checkpoint
from mcicl.synthetic.config import SCENARIOS, SyntheticConfig
from mcicl.synthetic.convergence import finite_or_none, summarize
from mcicl.synthetic.data import (
    Dictionary,
    Prompts,
    build_dictionary,
    derived_seeds,
    generator,
    sample_prompts,
    scenario_spec,
    seed_configs,
    train_spec,
)
from mcicl.synthetic.export import FEATURES, export_features
from mcicl.synthetic.metrics import prompt_metrics, weight_metrics
from mcicl.synthetic.model import OneLayerTransformer, logistic_loss, zero_one_loss
from mcicl.synthetic.plots import plot_run, run_figures

log = logging.getLogger("mcicl")
METRICS = "metrics.jsonl"


@dataclass
class World:
    """Everything a run samples before training: dictionary, training prompts and the test sets.

    With ``dictionary: per_seed`` every seed has its own dictionary (``seed_dictionaries``); ``dictionary`` is
    then seed 0's, which has the same geometry (what exports and comparisons read).
    """

    dictionary: Dictionary
    train: Prompts
    test: Prompts
    ood: dict[str, Prompts]
    seed_dictionaries: list[Dictionary] | None = None

    def to(self, device: torch.device | str) -> World:
        """The world with its prompts on ``device`` (dictionaries stay on the CPU, where the weight metrics run)."""
        return World(self.dictionary, self.train.to(device), self.test.to(device),
                     {name: p.to(device) for name, p in self.ood.items()}, self.seed_dictionaries)

    def dictionary_groups(self) -> list[tuple[slice, Dictionary]]:
        """(seeds, dictionary) pairs covering every seed: one pair when the dictionary is shared, else one per seed."""
        if self.seed_dictionaries is None:
            return [(slice(0, self.train.x.shape[0]), self.dictionary)]
        return [(slice(i, i + 1), dic) for i, dic in enumerate(self.seed_dictionaries)]


def build_world(config: SyntheticConfig) -> World:
    """The dictionary and all prompt sets of a run (deterministic in ``config``)."""
    if config.dictionary == "per_seed":
        parts = [build_world(c) for c in seed_configs(config)]
        return World(parts[0].dictionary, Prompts.cat([w.train for w in parts]), Prompts.cat([w.test for w in parts]),
                     {name: Prompts.cat([w.ood[name] for w in parts]) for name in config.scenarios},
                     [w.dictionary for w in parts])
    dic = build_dictionary(config)
    S = config.seeds
    train = sample_prompts(dic, train_spec(config), S, config.n_train, generator(config, 2))
    test = sample_prompts(dic, train_spec(config), S, config.n_test, generator(config, 3))
    # Each scenario's test set is seeded by its name, so evaluating fewer scenarios changes no other numbers.
    ood = {name: sample_prompts(dic, scenario_spec(config, name), S, config.n_test_ood,
                                generator(config, 10 + SCENARIOS.index(name)))
           for name in config.scenarios}
    return World(dic, train, test, ood)


def stack_models(models: list[OneLayerTransformer]) -> OneLayerTransformer:
    """Models concatenated along the seed axis S into one model (parameters copied)."""
    stacked = copy.deepcopy(models[0])
    for name, _ in models[0].named_parameters():
        setattr(stacked, name, torch.nn.Parameter(torch.cat([getattr(m, name).detach() for m in models]).clone()))
    return stacked


def build_model(config: SyntheticConfig, world: World) -> OneLayerTransformer:
    """A freshly initialised model (S seeds); with ``dictionary: per_seed`` each seed is initialised as the
    single-seed run of its own config and dictionary."""
    if config.dictionary == "per_seed":
        return stack_models([OneLayerTransformer(c, dic, generator(c, 1))
                             for c, dic in zip(seed_configs(config), world.seed_dictionaries, strict=True)])
    return OneLayerTransformer(config, world.dictionary, generator(config, 1))


def _concat(parts: list[dict]) -> dict:
    """Per-seed metric dicts of consecutive seed groups joined into one (lists concatenated, dicts recursively)."""
    return {k: _concat([p[k] for p in parts]) if isinstance(v, dict) else [x for p in parts for x in p[k]]
            for k, v in parts[0].items()}


def world_weight_metrics(model: OneLayerTransformer, world: World, offset: int = 0) -> dict:
    """``weight_metrics`` of every seed against its own dictionary; the world's seeds are the model's seeds
    ``offset`` onwards (a cell in a stacked batch)."""
    return _concat([weight_metrics(model, dic, world.train.seeds(sl), seeds=slice(offset + sl.start, offset + sl.stop))
                    for sl, dic in world.dictionary_groups()])


def evaluate(model: OneLayerTransformer, world: World, step: int, ood: bool = True) -> dict:
    """One metrics row: train and test prompt metrics, weight metrics and (if ``ood``) every scenario's."""
    K = world.dictionary.K
    row = {
        "step": step,
        "train": prompt_metrics(model, world.train, K),
        "test": prompt_metrics(model, world.test, K),
        "weights": world_weight_metrics(model, world),
    }
    if ood:
        row["ood"] = {name: prompt_metrics(model, prompts, K) for name, prompts in world.ood.items()}
    return row


def training_device(spec: str) -> torch.device:
    """The torch device of a ``--device`` value for synthetic training: 'cpu' (default), 'cuda' or 'cuda:N'."""
    return torch.device(check_device(spec, "'cpu', 'cuda' or 'cuda:N'", kinds=("cpu", "cuda")))


def batch_indices(config: SyntheticConfig, step: int) -> torch.Tensor:
    """The minibatch of ``step`` for every seed (S, B): a pure function of (seed, step), for exact resume."""
    if config.dictionary == "per_seed":  # each seed's own single-seed stream (no config built per step)
        return torch.cat([_minibatch(seed, 1, config, step) for seed in derived_seeds(config.seed, config.seeds)])
    return _minibatch(config.seed, config.seeds, config, step)


def _minibatch(seed: int, S: int, config: SyntheticConfig, step: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed((seed * 10_000_019 + step * 7919 + 5) % 2**62)
    return torch.randint(config.n_train, (S, config.batch_size), generator=gen)


def sgd_step(model: OneLayerTransformer, config: SyntheticConfig, train: Prompts, step: int) -> torch.Tensor:
    """One SGD step on every seed at once; returns each seed's minibatch loss (S,) on the CPU."""
    batch = train if config.full_batch else train.index(batch_indices(config, step).to(train.x.device))
    return sgd_update(model, batch.x, batch.y, batch.xq, batch.target, config.lr).cpu()


def sgd_update(model: OneLayerTransformer, x: torch.Tensor, y: torch.Tensor, xq: torch.Tensor, target: torch.Tensor,
               lr: float | torch.Tensor) -> torch.Tensor:
    """One SGD step of every instance on its own minibatch (x, y (S, B, L, d), xq (S, B, d), target (S, B));
    ``lr`` is a number or one per instance (S,). Returns each instance's mean minibatch loss (S,)."""
    out = model(x, y, xq)
    # Sum over instances of each one's mean loss: instances share no parameters, so each gets its own gradient.
    losses = logistic_loss(out.f, target).mean(1)
    params = [p for p in model.parameters()]
    grads = torch.autograd.grad(losses.sum(), params)
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            p -= (lr.view(-1, *[1] * (g.dim() - 1)) if isinstance(lr, torch.Tensor) else lr) * g
    return losses.detach()


class TrainingDiverged(ValueError):
    """A non-finite or exploding loss, or a non-finite weight, during training: the run stops rather than report
    numbers it did not measure."""


DIVERGENCE_FACTOR = 100.0  # a loss this many times its start (at least log 2) has diverged


def diverged(losses, first_step: int = 0, factor: float = DIVERGENCE_FACTOR) -> str | None:
    """Why a loss history diverged, or None: a pure function of the losses (also what sweeps call).

    ``losses`` is one value per step (T,) or one per step and instance (T, S). A history diverges at the first
    step where a loss is not finite or exceeds ``factor`` times its reference, the larger of its first value
    and log 2 (the logistic loss of a zero readout; so a run resumed near 0 loss is not flagged for small
    rises). A loss that grows by orders of magnitude without overflowing (lr=1e12 reaching 3e7) is caught as
    well as NaN. ``first_step`` is the step of ``losses[0]`` (for the message)."""
    arr = np.asarray(losses, dtype=float)
    if arr.size == 0:
        return None
    table = arr.reshape(len(arr), -1)  # (T, S)
    ref = np.maximum(np.where(np.isfinite(table[0]), table[0], 0.0), math.log(2))  # (S,)
    bad = ~np.isfinite(table) | (table > factor * ref)
    if not bad.any():
        return None
    t, s = (int(v) for v in np.argwhere(bad)[0])  # the first step, then the first instance at that step
    who = f" (instance {s})" if table.shape[1] > 1 else ""
    value = table[t, s]
    if not math.isfinite(value):
        return f"the logistic loss is {value} at step {first_step + t}{who}"
    return (f"the logistic loss grew to {value:.3g} at step {first_step + t}{who}, more than {factor:g}x its "
            f"start {table[0, s]:.3g}")


@dataclass
class TrainResult:
    """What ``train`` returns: the config, the summary (summary.json), the metrics rows, the trained model and
    its world."""

    config: SyntheticConfig
    summary: dict
    metrics: list[dict]
    model: OneLayerTransformer
    world: World

    def figures(self) -> dict[str, Figure]:
        """The run's figures by file name (dynamics, decomposition, convergence, ood, ood_overview)."""
        return run_figures(self.metrics, self.config, self.summary)

    def save(self, run: RunFolder) -> None:
        """Write a train run folder: config.yaml, metrics.jsonl, the final checkpoint, features.npz,
        features.polysemy.npz, dictionary.npz, summary.json and figures/.

        Training into a folder streams metrics, checkpoints and exports there as it goes (so an interrupted run
        can resume); what is already there is kept, so saving after that writes only the rest (idempotent)."""
        self._save(run, figures=True)

    def _save(self, run: RunFolder, *, figures: bool) -> None:
        run.save_config(self.config)
        if not (run.path / METRICS).is_file():
            run.append_jsonl(METRICS, self.metrics)
        ckpt_dir = run.path / "checkpoints"
        if (found := latest_checkpoint(ckpt_dir)) is None or found[0] != self.config.steps:
            save_checkpoint(self.model, ckpt_dir, self.config.steps, self.config)
        if not (run.path / FEATURES).is_file():
            # Per-seed dictionaries share one geometry: seed 0's words stand for the run.
            export_features(seed_configs(self.config)[0] if self.config.dictionary == "per_seed" else self.config,
                            self.world.dictionary, run.path)
        run.write_summary(self.summary)
        if figures:
            plot_run(run.path)  # from the saved files, as `mcicl synthetic plot` re-draws them


def evaluate_baselines(config: SyntheticConfig, world: World) -> dict:
    """0-1 error per seed of every baseline (synthetic/baselines.py) on the test set and every OOD scenario."""

    def group(sl: slice, dic: Dictionary) -> dict:
        query_only = QueryOnly.fit(world.train.seeds(sl))

        def errors(spec, prompts: Prompts) -> dict:
            scores = baseline_scores(dic, spec, prompts, query_only)
            return {name: [float(v) for v in zero_one_loss(scores[name], prompts.target).mean(1)]
                    for name in BASELINES}

        return {"test": errors(train_spec(config), world.test.seeds(sl)),
                "ood": {name: errors(scenario_spec(config, name), prompts.seeds(sl))
                        for name, prompts in world.ood.items()}}

    return _concat([group(sl, dic) for sl, dic in world.dictionary_groups()])


def train(config: SyntheticConfig, run: RunFolder | None = None, *, resume: bool = False,
          figures: bool = True, device: str = "cpu") -> TrainResult:
    """Train and evaluate along the way; return a TrainResult. With a RunFolder ``run``, also write metrics,
    checkpoints, exports, summary and (if ``figures``) figures there; ``resume`` continues ``run``.
    ``device``: 'cpu' (default), 'cuda' or 'cuda:N' for the model and prompts (the world is sampled on the CPU,
    so a seed gives the same data on every device; the trained numbers agree to float rounding)."""
    dev = training_device(device)
    if resume and run is None:
        raise ValueError("resume=True needs run=RunFolder(...), the run folder to continue")
    threads = torch.get_num_threads()
    if config.threads:
        # Small tensors: thread start-up and barriers cost more than they save, badly so on a loaded machine.
        torch.set_num_threads(config.threads)
    try:
        return _train(config, run, resume, figures, dev)
    finally:
        torch.set_num_threads(threads)


def _check_finite(model: OneLayerTransformer, config: SyntheticConfig, step: int, why: str | None = None) -> None:
    """Raise TrainingDiverged when ``why`` (a ``diverged`` message of the loss history) is given or any weight is
    not finite."""
    if why is not None:
        what = why
    elif bad := [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]:
        what = f"weights {', '.join(bad)} are not finite at step {step}"
    else:
        return
    raise TrainingDiverged(f"training diverged: {what}; lower lr (now {config.lr:g}, e.g. "
                           "lr=2.0) or sigma0")


def _train(config: SyntheticConfig, run: RunFolder | None, resume: bool, figures: bool,
           device: torch.device) -> TrainResult:

    torch.set_grad_enabled(True)
    start = time.perf_counter()
    world = build_world(config)
    model = build_model(config, world).to(device)
    on_device = world.to(device)  # what training and the prompt metrics read
    rows: list[dict] = []
    first = 0
    if run is not None:
        ckpt_dir = run.path / "checkpoints"
        if resume and (found := latest_checkpoint(ckpt_dir)) is not None:
            first, path = found
            if first > config.steps:
                raise ValueError(f"resume with steps={config.steps} is below the checkpointed step {first} in "
                                 f"{ckpt_dir}; pass steps >= {first} (a run is never rewound)")
            saved = from_dict(SyntheticConfig, read_json(path.with_suffix(".json"))["config"])
            if {**to_dict(saved), "steps": 0} != {**to_dict(config), "steps": 0}:
                raise ValueError(f"resume: the config differs from the one checkpointed in {path}; "
                                 "resume with the run's own config.yaml (only steps may change)")
            load_weights(model, path)
            rows = [r for r in read_jsonl(run.path / METRICS) if r["step"] < first] \
                if (run.path / METRICS).is_file() else []
            (run.path / METRICS).unlink(missing_ok=True)
            run.append_jsonl(METRICS, rows)
            log.info("resuming %s from step %d", run.path, first)
        else:
            (run.path / METRICS).unlink(missing_ok=True)
        run.save_config(config)
        if not resume or first == 0:
            # Per-seed dictionaries share one geometry: seed 0's words stand for the run.
            export_features(seed_configs(config)[0] if config.dictionary == "per_seed" else config,
                            world.dictionary, run.path)

    def record(row: dict) -> None:
        rows.append(row)
        if run is not None:
            run.append_jsonl(METRICS, [row])

    history = np.zeros((max(config.steps - first, 1), config.seeds))  # per-step, per-seed minibatch losses
    for step in progress(range(first, config.steps), desc="synthetic train", total=config.steps - first):
        if step % config.eval_every == 0:
            _check_finite(model, config, step)
            record(evaluate(model, on_device, step, ood=step % config.ood_every == 0))
        if run is not None and step % config.checkpoint_every == 0 and step > first:
            save_checkpoint(model, run.path / "checkpoints", step, config)
        history[step - first] = sgd_step(model, config, on_device.train, step).numpy()
        if (why := diverged(history[:step - first + 1], first_step=first)) is not None:
            _check_finite(model, config, step, why)
    _check_finite(model, config, config.steps)
    record(evaluate(model, on_device, config.steps))
    summary = summarize(rows, config)
    summary["baselines"] = finite_or_none(evaluate_baselines(config, world))
    summary["seconds"] = round(time.perf_counter() - start, 2)
    summary["device"] = str(device)
    result = TrainResult(config, summary, rows, model, world)
    if run is not None:
        result._save(run, figures=figures)  # the final checkpoint, summary and figures beside what was streamed
    return result


# ----------------------------------------------------------------------------------------- the job

def _resume_config(config: SyntheticConfig, ctx: JobContext) -> SyntheticConfig:
    """The config of the run in --out, with ``steps`` applied where the user set it; every other field the user
    set (by option, --set or --config) must restate the saved value, not change it."""
    if not ctx.out:
        raise ValueError("--resume needs --out DIR, the run folder to continue")
    require_run(ctx.out, "--out", ["synthetic train"], finished=False)
    saved_file = Path(ctx.out) / "config.yaml"
    if not saved_file.is_file():
        raise FileNotFoundError(f"--resume: {ctx.out} holds no config.yaml; accepted: the --out folder of an "
                                "earlier `mcicl synthetic train` run")
    saved = load_config(SyntheticConfig, saved_file, {"steps": config.steps} if "steps" in ctx.sources else {})
    # The original command may be repeated as it was: an option that restates the saved value is fine.
    given, saved_values = to_dict(config), to_dict(saved)
    changed = [n for n in saved_values if n in ctx.sources and n != "steps" and given[n] != saved_values[n]]
    if changed:
        values = ", ".join(f"{n}={given[n]!r} (run: {saved_values[n]!r})" for n in changed)
        raise ValueError(f"--resume continues the run's own config.yaml; only --steps may change, but the command "
                         f"line or --config changes {values}; start a new run with another --out instead")
    return saved


def execute_train(config: SyntheticConfig, ctx: JobContext) -> int:
    """``mcicl synthetic train``: check the inputs, open (or resume) the run folder, train, save, print where."""
    device = ctx.options.get("device") or "cpu"
    if ctx.resume:
        config = _resume_config(config, ctx)
    training_device(device)  # a bad --device fails before the run folder is touched
    seed_everything(config.seed)
    run = ctx.create_run(inputs={"--config": ctx.config_file}, resumable=True)
    summary = train(config, run, resume=ctx.resume, device=device).summary
    final, conv = summary["final"], summary["convergence"]
    log.info("test 0-1 %.4f, correct attention %.3f, convergence rate %s/step (readout_init=%s)",
             final["test_zero_one"], final["correct_attention"],
             f"{conv['rate']:.3g}" if conv["rate"] is not None else "n/a", config.readout_init)
    print(f"output is in {run.path}")
    return 0


def demo_config(small: bool, seed: int = 0) -> SyntheticConfig:
    """The demo's config: the default one (3 seeds); ``small``: 1 seed and smaller test sets for the test suite."""
    if small:
        return SyntheticConfig(seeds=1, n_test=2000, n_test_ood=500, eval_every=10, ood_every=50, n_features=40,
                               seed=seed)
    return SyntheticConfig(seeds=3, seed=seed)


def demo_stage(ctx: DemoContext) -> dict:
    """Demo stage "synthetic training + OOD": train the demo config into <demo>/synthetic; return its headline
    numbers (final test error, correct attention, convergence rate, OOD errors) and the subfolder."""
    config = demo_config(ctx.small, ctx.seed)
    sub = ctx.stage_run("synthetic", "synthetic train")
    summary = train(config, sub).summary
    return {
        "run_dir": str(sub.path),
        "seeds": config.seeds,
        "readout_init": config.readout_init,
        "test_zero_one": summary["final"]["test_zero_one"],
        "correct_attention": summary["final"]["correct_attention"],
        "convergence_rate": summary["convergence"]["rate"],
        "ood_test_zero_one": {name: m["test_zero_one"] for name, m in summary["ood"].items()},
    }
