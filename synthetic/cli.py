"""``mcicl synthetic``: train, sweep and plot the synthetic world."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mcicl.core.cli import add_run_options, merge_config
from mcicl.core.configuration import load_config, read_mapping, to_dict
from mcicl.core.runs import RunFolder, require_run
from mcicl.core.seeding import seed_everything
from mcicl.synthetic.config import SyntheticConfig
from mcicl.synthetic.launchers import LAUNCHERS
from mcicl.synthetic.plots import plot_run
from mcicl.synthetic.sweep import CELLS_PER_BLOCK, run_sweep
from mcicl.synthetic.train import train, training_device

log = logging.getLogger("mcicl")


def parse_sets(items: list[str] | None) -> dict[str, str]:
    """``--set FIELD=VALUE`` pairs as a dict (values are coerced by the config loader)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set {item!r}; accepted: FIELD=VALUE, e.g. --set within_cosine=0.7")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def parse_grid(text: str) -> dict[str, list[str]]:
    """``"a=1,2;b=x,y"`` -> {"a": ["1", "2"], "b": ["x", "y"]}."""
    grid: dict[str, list[str]] = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        if "=" not in part:
            raise ValueError(f"--grid part {part!r}; accepted: FIELD=V1,V2,... joined by ';'")
        key, values = part.split("=", 1)
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not vals:
            raise ValueError(f"--grid field {key.strip()!r} has no values; accepted: FIELD=V1,V2,...")
        grid[key.strip()] = vals
    if not grid:
        raise ValueError(f"--grid {text!r} is empty; accepted: e.g. 'within_cosine=0.1,0.4,0.7;cross_overlap=0,0.1'")
    return grid


def _config(args: argparse.Namespace) -> SyntheticConfig:
    """Defaults, then --config FILE, then --set FIELD=VALUE pairs, then --seeds/--steps/--seed."""
    return merge_config(SyntheticConfig, args, ("seeds", "steps", "seed"), extra=parse_sets(args.set))


def _resume_config(args: argparse.Namespace) -> SyntheticConfig:
    """The config of the run in --out, with --steps applied; other options must repeat its values, not change them."""
    if not args.out:
        raise ValueError("--resume needs --out DIR, the run folder to continue")
    require_run(args.out, "--out", ["synthetic train"], finished=False)
    saved = Path(args.out) / "config.yaml"
    if not saved.is_file():
        raise FileNotFoundError(f"--resume: {args.out} holds no config.yaml; accepted: the --out folder of an "
                                "earlier `mcicl synthetic train` run")
    config = load_config(SyntheticConfig, saved, {"steps": args.steps})
    # The original command may be repeated as it was: an option that restates the saved value is fine.
    explicit = {*parse_sets(args.set), *(read_mapping(args.config) if args.config else {}),
                *(n for n in ("seeds", "seed") if getattr(args, n) is not None)}
    given, saved_values = to_dict(_config(args)), to_dict(config)
    changed = [n for n in saved_values if n in explicit and n != "steps" and given[n] != saved_values[n]]
    if changed:
        values = ", ".join(f"{n}={given[n]!r} (run: {saved_values[n]!r})" for n in changed)
        raise ValueError(f"--resume continues the run's own config.yaml; only --steps may change, but the command "
                         f"line or --config changes {values}; start a new run with another --out instead")
    return config


def run_train(args: argparse.Namespace) -> int:
    """Handler of ``mcicl synthetic train``."""

    if args.resume:
        config = _resume_config(args)
    else:
        config = _config(args)
    training_device(args.device)  # a bad --device fails before the run folder is touched
    seed_everything(config.seed)
    run = RunFolder.create(args.out, "synthetic train", overwrite=args.overwrite, resume=args.resume,
                           resumable=True, inputs={"--config": args.config})
    summary = train(config, run, resume=args.resume, device=args.device).summary
    final, conv = summary["final"], summary["convergence"]
    log.info("test 0-1 %.4f, correct attention %.3f, convergence rate %s/step (readout_init=%s)",
             final["test_zero_one"], final["correct_attention"],
             f"{conv['rate']:.3g}" if conv["rate"] is not None else "n/a", config.readout_init)
    print(f"output is in {run.path}")
    return 0


def run_sweep_cmd(args: argparse.Namespace) -> int:
    """Handler of ``mcicl synthetic sweep``."""

    if args.resume:
        if not args.out:
            raise ValueError("--resume needs --out DIR, the sweep folder to continue")
        ignored = [opt for opt, value in (("--grid", args.grid), ("--set", args.set), ("--seeds", args.seeds),
                                          ("--steps", args.steps), ("--seed", args.seed), ("--config", args.config))
                   if value is not None]
        if ignored:
            raise ValueError(f"--resume continues the sweep's own config.yaml; {', '.join(ignored)} cannot change "
                             "it; start a new sweep with another --out instead")
        saved = read_mapping(Path(args.out) / "config.yaml")
        config = load_config(SyntheticConfig, None, saved["base"])
        grid = saved["grid"]
    else:
        if args.grid is None:
            raise ValueError("--grid is required (unless --resume); accepted: FIELD=V1,V2,... joined by ';'")
        config = _config(args)
        grid = parse_grid(args.grid)
    training_device(args.device)  # a bad --device fails before the run folder is touched
    seed_everything(config.seed)
    run = RunFolder.create(args.out, "synthetic sweep", overwrite=args.overwrite, resume=args.resume)
    run_sweep(config, grid, run, resume=args.resume, launcher=args.launcher, address=args.address,
              device=args.device, cells_per_block=args.cells_per_block)
    print(f"output is in {run.path}")
    return 0


def run_plot(args: argparse.Namespace) -> int:
    """Handler of ``mcicl synthetic plot``."""

    paths = plot_run(args.run)
    log.info("wrote %s", ", ".join(p.name for p in paths))
    print(f"output is in {Path(args.run) / 'figures'}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:

    p.add_argument("--seeds", type=int, default=None,
                   help="independent models trained at once as a batch dimension (default: config, 1)")
    p.add_argument("--steps", type=int, default=None, help="SGD steps (default: config, 400)")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="override any config field, e.g. --set within_cosine=0.7 --set scenarios=noise_x2,"
                        "flipped_labels (repeatable)")
    p.add_argument("--device", default="cpu",
                   help="where the model trains: 'cpu' (default), 'cuda' or 'cuda:N' (data are sampled on the CPU)")
    add_run_options(p)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``mcicl synthetic`` with train, sweep and plot."""
    p = sub.add_parser("synthetic", help="the paper's synthetic world: train the one-layer transformer, sweep, plot",
                       description="Concept-based sparse-coding prompts and the one-layer transformer of Bu et "
                                   "al. (NeurIPS 2024): learning dynamics and OOD in-context learning.")
    s = p.add_subparsers(dest="synthetic_command", metavar="SYNTHETIC_COMMAND", required=True)
    t = s.add_parser("train", help="train S seeds, evaluate OOD scenarios, write metrics, checkpoints, figures",
                     description="Train the one-layer transformer; writes summary.json, metrics.jsonl, "
                                 "checkpoints/, features.npz, dictionary.npz and figures/.")
    _common(t)
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its latest checkpoint (same numbers as uninterrupted)")
    t.set_defaults(func=run_train)
    w = s.add_parser("sweep", help="train over a grid of config values; table of in-distribution and OOD errors",
                     description="Every grid point is a cell (--seeds seeds); cells of equal tensor shapes train "
                                 "as one batched model. Writes points/NNN per cell, sweep.csv (errors, steps to 1% "
                                 "test error, convergence rate, correct attention, OOD errors) and a heatmap.")
    w.add_argument("--grid", default=None,
                   help="FIELD=V1,V2,... joined by ';', e.g. \"within_cosine=0.1,0.4,0.7;cross_overlap=0,0.1,0.2\"")
    _common(w)
    w.add_argument("--resume", action="store_true",
                   help="continue the sweep in --out: finished cells are kept, the others are trained")
    w.add_argument("--launcher", default="local", choices=list(LAUNCHERS),
                   help="where blocks of cells train: 'local' (this process) or 'ray' (tasks on a Ray cluster; "
                        "needs mcicl[distributed]) (default: local)")
    w.add_argument("--address", default=None,
                   help="with --launcher ray: the cluster to join (e.g. ray://head:10001 or auto); default: start "
                        "a local Ray instance")
    w.add_argument("--cells-per-block", type=int, default=CELLS_PER_BLOCK,
                   help="cells trained as one batched model; also the unit of resume and of a Ray task "
                        f"(default: {CELLS_PER_BLOCK})")
    w.set_defaults(func=run_sweep_cmd)
    pl = s.add_parser("plot", help="re-draw a train run's figures from its saved metrics (no training)")
    pl.add_argument("run", help="a synthetic train run folder")
    pl.add_argument("--quiet", action="store_true", help="warnings and errors only")
    pl.add_argument("--verbose", action="store_true", help="debug logging")
    pl.set_defaults(func=run_plot)
