"""Sweeps: grid points trained as batched blocks of cells, a table of errors and learning speed, a figure.

Every grid point is a cell (one config, ``seeds`` instances). Cells that share tensor shapes train together as
one batched model (``synthetic/cells.py``), in blocks of at most ``cells_per_block`` cells, on this machine or
on a Ray cluster (``synthetic/launchers.py``). Each finished cell is written at once to ``points/NNN``
(config.yaml, metrics.jsonl, summary.json last), so an interrupted sweep resumes without retraining them.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from mcicl.core.configuration import from_dict, load_config, read_mapping, to_dict
from mcicl.core.io import read_json
from mcicl.core.jobs import JobContext
from mcicl.core.logs import progress
from mcicl.core.plotting import SEQUENTIAL_CMAP, Caption, save_figure, styled, subplots
from mcicl.core.runs import RunFolder
from mcicl.core.seeding import seed_everything
from mcicl.synthetic.cells import CellResult, group_cells
from mcicl.synthetic.config import CELLS_PER_BLOCK, SyntheticConfig
from mcicl.synthetic.launchers import check_launcher, run_blocks
from mcicl.synthetic.train import METRICS, training_device

log = logging.getLogger("mcicl")
SWEEP_CSV = "sweep.csv"


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
        if key.strip() in grid:
            raise ValueError(f"--grid field {key.strip()!r} is given twice; accepted: each field once, with all "
                             "its values (FIELD=V1,V2,...)")
        grid[key.strip()] = vals
    if not grid:
        raise ValueError(f"--grid {text!r} is empty; accepted: e.g. 'within_cosine=0.1,0.4,0.7;cross_overlap=0,0.1'")
    return grid


def grid_points(base: SyntheticConfig, grid: dict[str, list]) -> list[tuple[dict[str, Any], SyntheticConfig]]:
    """Every combination of the grid values as (point, validated config); bad fields or values raise ConfigError."""
    fields = list(grid)
    out = []
    for values in itertools.product(*(grid[f] for f in fields)):
        config = from_dict(SyntheticConfig, {**to_dict(base), **dict(zip(fields, values, strict=True))})
        out.append(({f: getattr(config, f) for f in fields}, config))
    return out


def sweep_row(point: dict[str, Any], summary: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """One sweep.csv row: the grid point, final errors, learning speed, correct attention and OOD errors."""
    final, conv = summary["final"], summary["convergence"]
    row = {**point, "test_zero_one": final["test_zero_one"], "train_zero_one": final["train_zero_one"],
           "correct_attention": final["correct_attention"], "convergence_rate": conv["rate"],
           "steps_to_1pct": conv["steps_to_1pct"]}
    row.update({f"ood.{name}.test_zero_one": m["test_zero_one"] for name, m in summary["ood"].items()})
    row["run_dir"] = run_dir
    return row


def _cell_dir(i: int) -> str:
    return f"points/{i:03d}"


def _finished(run: RunFolder, i: int, config: SyntheticConfig) -> dict[str, Any] | None:
    """The summary of cell ``i`` if it was written completely with this config, else None."""
    path = run.path / _cell_dir(i) / "summary.json"
    if not path.is_file():
        return None
    summary = read_json(path)
    return summary if summary.get("config") == to_dict(config) else None


def _write_cell(run: RunFolder, i: int, result: CellResult) -> dict[str, Any]:
    sub = RunFolder.create(run.path / _cell_dir(i), "synthetic sweep cell", overwrite=True)
    sub.save_config(result.config)
    sub.append_jsonl(METRICS, result.rows)
    summary = {**result.summary, "config": to_dict(result.config)}
    sub.write_summary(summary)  # written last: its presence marks the cell finished
    return summary


def run_sweep(base_config: SyntheticConfig, grid: dict[str, list], run: RunFolder, *, resume: bool = False,
              launcher: str = "local", address: str | None = None, device: str = "cpu",
              cells_per_block: int = CELLS_PER_BLOCK, num_cpus: int | None = None,
              on_cell: Callable[[int, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Train every grid point (batched, in blocks) into run/points/NNN; write sweep.csv, summary, figure; rows.

    ``resume``: keep the cells already finished in ``run`` (same config) and train only the others.
    ``on_cell(index, row)`` is called after each newly trained cell is written.
    """
    if not grid:
        raise ValueError("the sweep grid is empty; accepted: {field: [values, ...]}, "
                         "e.g. {'within_cosine': [0.1, 0.7]}")
    if cells_per_block < 1:
        raise ValueError(f"cells_per_block {cells_per_block!r}; accepted: an integer >= 1")
    check_launcher(launcher, address)
    if address is None:
        training_device(device)  # fail before training; a remote cluster checks its own devices
    points = grid_points(base_config, grid)  # validate every point before training any
    run.save_config({"base": to_dict(base_config), "grid": {k: list(map(str, v)) for k, v in grid.items()}})
    summaries: dict[int, dict[str, Any]] = {}
    if resume:
        for i, (_, config) in enumerate(points):
            if (found := _finished(run, i, config)) is not None:
                summaries[i] = found
        log.info("resume: %d of %d cells already finished", len(summaries), len(points))
    todo = [i for i in range(len(points)) if i not in summaries]
    blocks = [[todo[j] for j in b] for b in group_cells([points[i][1] for i in todo], cells_per_block)]
    bar = progress(range(len(todo)), desc="synthetic sweep (cells)", total=len(todo))
    for b, results in run_blocks([[points[i][1] for i in block] for block in blocks], launcher, device=device,
                                 address=address, num_cpus=num_cpus):
        for i, result in zip(blocks[b], results, strict=True):
            summaries[i] = _write_cell(run, i, result)
            next(bar, None)
            row = sweep_row(points[i][0], summaries[i], _cell_dir(i))
            log.info("sweep cell %d/%d %s: test 0-1 %.4f", i + 1, len(points), points[i][0], row["test_zero_one"])
            if on_cell is not None:
                on_cell(i, row)
    rows = [sweep_row(point, summaries[i], _cell_dir(i)) for i, (point, _) in enumerate(points)]
    summary = {"grid": {k: [str(v) for v in vals] for k, vals in grid.items()}, "points": len(rows),
               "blocks": len(blocks), "trained_cells": len(todo), "launcher": launcher, "device": device,
               "rows": rows}
    SweepResult(base_config, grid, rows, summary).save(run)
    return rows


@dataclass
class SweepResult:
    """A finished sweep: its base config (``config``) and grid, one row per grid point (sweep.csv) and
    summary.json's content."""

    config: SyntheticConfig
    grid: dict[str, list]
    rows: list[dict[str, Any]]
    summary: dict[str, Any]

    def figures(self) -> dict[str, Figure]:
        """The sweep's figure by file name ("sweep": the heatmap or line plot of errors over the grid)."""
        return {"sweep": sweep_figure([dict(r) for r in self.rows], list(self.grid))}

    def save(self, run: RunFolder) -> None:
        """Write the sweep folder's config.yaml, sweep.csv, summary.json and figures/sweep.*; the cells'
        points/NNN folders are written by :func:`run_sweep` as each cell finishes."""
        run.save_config({"base": to_dict(self.config), "grid": {k: list(map(str, v)) for k, v in self.grid.items()}})
        run.write_csv(SWEEP_CSV, self.rows)
        run.write_summary(self.summary)
        for name, fig in self.figures().items():
            save_figure(fig, run.figures, name, caption=SWEEP_CAPTION)


def execute_sweep(config: SyntheticConfig, ctx: JobContext) -> int:
    """``mcicl synthetic sweep``: check the grid (or the sweep to resume), open the folder, train every cell, save,
    print where."""
    opts = ctx.options
    if ctx.resume:
        if not ctx.out:
            raise ValueError("--resume needs --out DIR, the sweep folder to continue")
        given = set(ctx.sources.values())
        ignored = [opt for opt, value in (("--grid", opts.get("grid") is not None), ("--set", "--set" in given),
                                          ("--seeds", "--seeds" in given), ("--steps", "--steps" in given),
                                          ("--seed", "--seed" in given), ("--config", ctx.config_file is not None))
                   if value]
        if ignored:
            raise ValueError(f"--resume continues the sweep's own config.yaml; {', '.join(ignored)} cannot change "
                             "it; start a new sweep with another --out instead")
        saved_file = Path(ctx.out) / "config.yaml"
        if not saved_file.is_file():
            raise FileNotFoundError(f"--resume: --out {ctx.out} holds no config.yaml; accepted: the --out folder of "
                                    "an earlier `mcicl synthetic sweep`")
        saved = read_mapping(saved_file)
        if not isinstance(saved.get("base"), dict) or not isinstance(saved.get("grid"), dict):
            raise ValueError(f"--resume: --out {ctx.out} is not a sweep folder (its config.yaml has no 'base' and "
                             "'grid'); accepted: the --out folder of an earlier `mcicl synthetic sweep`")
        config = load_config(SyntheticConfig, None, saved["base"])
        grid = saved["grid"]
    else:
        if opts.get("grid") is None:
            raise ValueError("--grid is required (unless --resume); accepted: FIELD=V1,V2,... joined by ';'")
        grid = parse_grid(opts["grid"])
    device = opts.get("device") or "cpu"
    training_device(device)  # a bad --device fails before the run folder is touched
    seed_everything(config.seed)
    run = ctx.create_run()
    run_sweep(config, grid, run, resume=ctx.resume, launcher=opts.get("launcher") or "local",
              address=opts.get("address"), device=device,
              cells_per_block=CELLS_PER_BLOCK if opts.get("cells_per_block") is None else opts["cells_per_block"])
    print(f"output is in {run.path}")
    return 0


SWEEP_CAPTION = Caption(
    "Synthetic sweep",
    "Error of the synthetic transformer over the sweep grid (in distribution, and the mean over OOD scenarios); "
    "see the sweep table for the numbers.")


@styled
def sweep_figure(rows: list[dict[str, Any]], fields: list[str]) -> Figure:
    """Heatmap (two or more fields: the first two, averaged over the rest) or line plot (one field) of errors.

    A panel per error, so it draws its own figure (no ``ax``)."""
    ood_cols = [k for k in rows[0] if k.startswith("ood.")]
    panels = [("test_zero_one", "in-distribution test 0-1 loss")]
    if ood_cols:
        for r in rows:
            r["_ood_mean"] = float(np.mean([r[c] for c in ood_cols if r[c] is not None]))
        panels.append(("_ood_mean", f"mean OOD test 0-1 loss ({len(ood_cols)} scenarios)"))
    if len(fields) == 1:
        f = fields[0]
        fig, ax = subplots(figsize=(6, 4))
        xs = [r[f] for r in rows]
        for key, label in panels:
            ax.plot(range(len(xs)), [r[key] for r in rows], "o-", label=label)
        ax.set_xticks(range(len(xs)), [str(x) for x in xs])
        ax.set(xlabel=f, ylabel="0-1 loss", title=f"Sweep over {f}")
        ax.legend()
        return fig
    fx, fy = fields[0], fields[1]
    xs = list(dict.fromkeys(r[fx] for r in rows))
    ys = list(dict.fromkeys(r[fy] for r in rows))
    fig, axes = subplots(1, len(panels), figsize=(5.2 * len(panels), 4.3), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels, strict=True):
        grid = np.full((len(ys), len(xs)), np.nan)
        for j, y in enumerate(ys):
            for i, x in enumerate(xs):
                vals = [r[key] for r in rows if r[fx] == x and r[fy] == y and r[key] is not None]
                grid[j, i] = np.mean(vals) if vals else np.nan
        vmax = max(0.05, float(np.nanmax(grid)))  # a floor so that tiny differences are not painted as large
        im = ax.imshow(grid, origin="lower", cmap=SEQUENTIAL_CMAP, aspect="auto", vmin=0, vmax=vmax)
        for j in range(len(ys)):
            for i in range(len(xs)):
                ax.text(i, j, f"{grid[j, i]:.3f}", ha="center", va="center", fontsize=8,
                        color="white" if grid[j, i] < 0.5 * vmax else "black")
        ax.set_xticks(range(len(xs)), [str(x) for x in xs])
        ax.set_yticks(range(len(ys)), [str(y) for y in ys])
        ax.set(xlabel=fx, ylabel=fy, title=label)
        ax.grid(False)
        fig.colorbar(im, ax=ax, label="0-1 loss")
    extra = f" (averaged over {', '.join(fields[2:])})" if len(fields) > 2 else ""
    fig.suptitle("Synthetic sweep: test error by config" + extra)
    return fig
