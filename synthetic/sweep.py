"""Sweeps: grid points trained as batched blocks of cells, a table of errors and learning speed, a figure.

Every grid point is a cell (one config, ``seeds`` instances). Cells that share tensor shapes train together as
one batched model (``synthetic/cells.py``), in blocks of at most ``cells_per_block`` cells, on this machine or
on a Ray cluster (``synthetic/launchers.py``). Each finished cell is written at once to ``points/NNN``
(config.yaml, metrics.jsonl, summary.json last), so an interrupted sweep resumes without retraining them.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.patches
import numpy as np
from matplotlib.figure import Figure

from mcicl.core.configuration import from_dict, load_config, read_mapping, to_dict
from mcicl.core.io import cell_float, read_json
from mcicl.core.jobs import JobContext
from mcicl.core.logs import progress
from mcicl.core.plotting import SEQUENTIAL_CMAP, Caption, save_figure, styled, subplots
from mcicl.core.runs import RunFolder
from mcicl.core.seeding import seed_everything
from mcicl.synthetic.cells import CellResult, StopRule, group_cells
from mcicl.synthetic.config import CELLS_PER_BLOCK, SWEEP_MAX_STEPS, SWEEP_SEEDS, SyntheticConfig
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


def steps_column(error: float) -> str:
    """The sweep.csv column of steps to the stop level: ``steps_to_1pct`` for 0.01."""
    return f"steps_to_{100 * error:g}pct".replace(".", "_")


def sweep_row(point: dict[str, Any], summary: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """One sweep.csv row: the grid point, the cell's status (reached, censored or diverged), the steps to the stop
    level (Kaplan-Meier median over seeds, range over seeds; the upper end empty and ``..._high_censored`` true
    when some seed never reached it: '>= stop_rule max_steps'), then at the stop: test error, correct attention,
    same-concept attention on mixed-concept prompts, OOD errors. A diverged cell has no results."""
    rule = summary["stop_rule"]
    col = steps_column(rule["error"])
    row: dict[str, Any] = {**point, "status": summary["status"], "seeds": summary["seeds"],
                           "max_steps": rule["max_steps"], "stop_error": rule["error"],
                           "stop_step": summary["stop_step"]}
    steps = summary.get("steps_to_stop_error") or {}
    final, mixed = summary.get("final") or {}, summary.get("mixed_concepts") or {}
    row.update({"censored_seeds": steps.get("censored_seeds"), col: steps.get("median"),
                f"{col}_low": steps.get("low"), f"{col}_high": steps.get("high"),
                f"{col}_high_censored": None if not steps else bool(steps.get("censored_seeds")),
                "test_zero_one": final.get("test_zero_one"), "correct_attention": final.get("correct_attention"),
                "same_concept_attention": mixed.get("same_concept_attention"),
                "same_concept_chance": mixed.get("same_concept_chance"),
                "mixed_concepts_zero_one": mixed.get("zero_one")})
    ood = summary.get("ood") or {}
    names = list(ood) or list((summary.get("config") or {}).get("scenarios") or [])  # a diverged cell: empty
    row.update({f"ood.{name}.test_zero_one": (ood.get(name) or {}).get("test_zero_one") for name in names})
    row["diverged_reason"] = summary.get("diverged_reason")
    row["run_dir"] = run_dir
    return row


def _cell_dir(i: int) -> str:
    return f"points/{i:03d}"


def _finished(run: RunFolder, i: int, config: SyntheticConfig, stop: StopRule) -> dict[str, Any] | None:
    """The summary of cell ``i`` if it was written completely with this config and stop rule, else None."""
    path = run.path / _cell_dir(i) / "summary.json"
    if not path.is_file():
        return None
    summary = read_json(path)
    same = summary.get("config") == to_dict(config) and summary.get("stop_rule") == stop.as_dict()
    return summary if same else None


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
              on_cell: Callable[[int, dict[str, Any]], None] | None = None,
              stop: StopRule | None = None) -> list[dict[str, Any]]:
    """Train every grid point (batched, in blocks) into run/points/NNN; write sweep.csv, summary, figure; rows.

    Each cell trains to ``stop`` (default: 1% test error for every seed, or the base config's ``steps``;
    :class:`synthetic.cells.StopRule`): cells that hit the maximum are ``censored``, cells with a diverging seed
    ``diverged`` (no results).

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
    stop = stop or StopRule(max_steps=base_config.steps)
    if "steps" in grid:
        raise ValueError("--grid field 'steps': a sweep cell trains to its stop rule, with --steps the maximum; "
                         "accepted: any other field")
    run.save_config({"base": to_dict(base_config), "grid": {k: list(map(str, v)) for k, v in grid.items()},
                     "stop_rule": stop.as_dict()})
    summaries: dict[int, dict[str, Any]] = {}
    if resume:
        for i, (_, config) in enumerate(points):
            if (found := _finished(run, i, config, stop)) is not None:
                summaries[i] = found
        log.info("resume: %d of %d cells already finished", len(summaries), len(points))
    todo = [i for i in range(len(points)) if i not in summaries]
    blocks = [[todo[j] for j in b] for b in group_cells([points[i][1] for i in todo], cells_per_block)]
    bar = progress(range(len(todo)), desc="synthetic sweep (cells)", total=len(todo))
    for b, results in run_blocks([[points[i][1] for i in block] for block in blocks], launcher, device=device,
                                 address=address, num_cpus=num_cpus, stop=stop):
        for i, result in zip(blocks[b], results, strict=True):
            summaries[i] = _write_cell(run, i, result)
            next(bar, None)
            row = sweep_row(points[i][0], summaries[i], _cell_dir(i))
            log.info("sweep cell %d/%d %s: %s at step %s, test 0-1 %s", i + 1, len(points), points[i][0],
                     row["status"], row["stop_step"], row["test_zero_one"])
            if on_cell is not None:
                on_cell(i, row)
    rows = [sweep_row(point, summaries[i], _cell_dir(i)) for i, (point, _) in enumerate(points)]
    statuses = [r["status"] for r in rows]
    summary = {"grid": {k: [str(v) for v in vals] for k, vals in grid.items()}, "points": len(rows),
               "blocks": len(blocks), "trained_cells": len(todo), "launcher": launcher, "device": device,
               "stop_rule": stop.as_dict(),
               "cells": {s: statuses.count(s) for s in ("reached", "censored", "diverged")},
               "censored_share": statuses.count("censored") / len(rows), "rows": rows}
    SweepResult(base_config, grid, rows, summary, stop).save(run)
    return rows


@dataclass
class SweepResult:
    """A finished sweep: its base config (``config``) and grid, one row per grid point (sweep.csv) and
    summary.json's content."""

    config: SyntheticConfig
    grid: dict[str, list]
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    stop: StopRule | None = None

    def figures(self) -> dict[str, Figure]:
        """The sweep's figure by file name ("sweep": the heatmap or line plot of errors over the grid)."""
        return {"sweep": sweep_figure([dict(r) for r in self.rows], list(self.grid))}

    def save(self, run: RunFolder) -> None:
        """Write the sweep folder's config.yaml, sweep.csv, summary.json and figures/sweep.*; the cells'
        points/NNN folders are written by :func:`run_sweep` as each cell finishes."""
        run.save_config({"base": to_dict(self.config), "grid": {k: list(map(str, v)) for k, v in self.grid.items()},
                         **({"stop_rule": self.stop.as_dict()} if self.stop else {})})
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
        stop = StopRule(**{k: v for k, v in (saved.get("stop_rule") or {"max_steps": config.steps}).items()
                           if k != "seeds_needed"})
    else:
        if opts.get("grid") is None:
            raise ValueError("--grid is required (unless --resume); accepted: FIELD=V1,V2,... joined by ';'")
        grid = parse_grid(opts["grid"])
        # A sweep's own defaults where the user set none: SWEEP_SEEDS seeds per cell, SWEEP_MAX_STEPS at most.
        config = replace(config, seeds=config.seeds if "seeds" in ctx.sources else max(config.seeds, SWEEP_SEEDS),
                         steps=config.steps if "steps" in ctx.sources else SWEEP_MAX_STEPS)
        stop = StopRule(max_steps=config.steps, error=opts.get("stop_error") or 0.01,
                        precision=opts.get("precision") or 0.005)
    device = opts.get("device") or "cpu"
    training_device(device)  # a bad --device fails before the run folder is touched
    seed_everything(config.seed)
    run = ctx.create_run()
    run_sweep(config, grid, run, resume=ctx.resume, launcher=opts.get("launcher") or "local",
              address=opts.get("address"), device=device,
              cells_per_block=CELLS_PER_BLOCK if opts.get("cells_per_block") is None else opts["cells_per_block"],
              stop=stop)
    print(f"output is in {run.path}")
    return 0


SWEEP_CAPTION = Caption(
    "Synthetic sweep",
    "Each cell trains until every seed's test error is at most the stop error, or the maximum of steps. Left: steps "
    "to the stop error (Kaplan-Meier median over seeds; brackets: range over seeds, '>=max' where a seed never got "
    "there); hatched: censored cells (some seed hit the maximum); 'diverged': a seed's loss blew up, no result. "
    "Middle and right: test error and mean OOD error at the cell's stop (hatched cells stopped at the maximum).")



def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


@styled
def sweep_figure(rows: list[dict[str, Any]], fields: list[str]) -> Figure:
    """Heatmaps over the first two grid fields (the rest averaged) or, for one field, a line plot: steps to the stop
    error with its range over seeds, test error and mean OOD error at the stop; censored cells hatched and
    diverged cells marked, with a legend. A panel per quantity, so it draws its own figure (no ``ax``)."""
    col = next((c for c in rows[0] if c.startswith("steps_to_") and c.endswith("pct")), "steps_to_1pct")
    ood_cols = [k for k in rows[0] if k.startswith("ood.")]
    for r in rows:
        vals = [cell_float(r.get(c)) for c in ood_cols if math.isfinite(cell_float(r.get(c)))]
        r["_ood_mean"] = float(np.mean(vals)) if vals else math.nan
    max_steps = max(int(cell_float(r.get("max_steps"))) for r in rows) if "max_steps" in rows[0] else None
    panels = [(col, f"steps to {100 * cell_float(rows[0].get('stop_error', 0.01)):g}% test error (KM median)"),
              ("test_zero_one", "test 0-1 error at the stop")]
    if ood_cols:
        panels.append(("_ood_mean", f"mean OOD 0-1 error at the stop ({len(ood_cols)} scenarios)"))
    hatch = matplotlib.patches.Patch(facecolor="white", edgecolor="0.3", hatch="///",
                                     label=f"censored: a seed hit the maximum ({max_steps} steps)")
    div = matplotlib.patches.Patch(facecolor="0.85", edgecolor="0.3", label="diverged: no result")
    unreached = matplotlib.patches.Patch(facecolor="0.6", edgecolor="0.3",
                                         label="steps: median not reached (>= maximum)")
    if len(fields) == 1:
        f = fields[0]
        fig, axes = subplots(1, len(panels), figsize=(4.6 * len(panels), 4), squeeze=False)
        xs = np.arange(len(rows))
        for ax, (key, label) in zip(axes[0], panels, strict=True):
            y = np.array([cell_float(r[key]) for r in rows])
            if key == col:
                lo = np.array([cell_float(r.get(f"{col}_low")) for r in rows])
                hi = np.array([cell_float(r.get(f"{col}_high")) if not _truthy(r.get(f"{col}_high_censored"))
                               else max_steps for r in rows])
                ax.errorbar(xs, y, yerr=[y - lo, hi - y], fmt="o-", capsize=3)
            else:
                ax.plot(xs, y, "o-")
            for x, r in zip(xs, rows, strict=True):
                if r["status"] == "censored":
                    ax.axvspan(x - 0.4, x + 0.4, facecolor="none", edgecolor="0.3", hatch="///", lw=0)
                elif r["status"] == "diverged":
                    ax.axvspan(x - 0.4, x + 0.4, color="0.85", lw=0)
            ax.set_xticks(xs, [str(r[f]) for r in rows])
            ax.set(xlabel=f, title=label, ylabel="steps" if key == col else "0-1 error")
        axes[0][0].legend(handles=[hatch, div], fontsize=8, loc="best")
        return fig
    fx, fy = fields[0], fields[1]
    xs = list(dict.fromkeys(r[fx] for r in rows))
    ys = list(dict.fromkeys(r[fy] for r in rows))
    fig, axes = subplots(1, len(panels), figsize=(5.4 * len(panels), 4.6), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels, strict=True):
        grid = np.full((len(ys), len(xs)), np.nan)
        text = [["" for _ in xs] for _ in ys]
        status = [["" for _ in xs] for _ in ys]
        for j, y in enumerate(ys):
            for i, x in enumerate(xs):
                cell = [r for r in rows if r[fx] == x and r[fy] == y]
                ok = [r for r in cell if r["status"] != "diverged"]
                vals = [cell_float(r[key]) for r in ok if math.isfinite(cell_float(r[key]))]
                grid[j, i] = np.mean(vals) if vals else np.nan
                status[j][i] = ("diverged" if any(r["status"] == "diverged" for r in cell) else
                                "censored" if any(r["status"] == "censored" for r in cell) else "reached")
                if key == col and ok:
                    lo = min(cell_float(r.get(f"{col}_low")) for r in ok)
                    cens = any(_truthy(r.get(f"{col}_high_censored")) for r in ok)
                    hi = max(cell_float(r.get(f"{col}_high")) for r in ok)
                    med = f"{grid[j, i]:.0f}" if vals else f">={max_steps}"
                    low = f"{lo:.0f}" if math.isfinite(lo) else f">={max_steps}"
                    high = f">={max_steps}" if cens else f"{hi:.0f}"
                    text[j][i] = med + (f"\n[{low}, {high}]" if low != high or vals else "")
                elif vals:
                    text[j][i] = f"{grid[j, i]:.3f}"
        if key == col:
            vmin, vmax = (0.0, float(max_steps or 1))
            cmap = matplotlib.colormaps["viridis_r"].with_extremes(bad="0.6")
        else:
            vmin, vmax = 0.0, max(0.05, float(np.nanmax(grid)) if np.isfinite(grid).any() else 0.05)
            cmap = matplotlib.colormaps[SEQUENTIAL_CMAP].with_extremes(bad="0.6")
        im = ax.imshow(grid, origin="lower", cmap=cmap, aspect="auto", vmin=vmin, vmax=vmax)
        for j in range(len(ys)):
            for i in range(len(xs)):
                if status[j][i] == "censored":
                    ax.add_patch(matplotlib.patches.Rectangle((i - 0.5, j - 0.5), 1, 1, fill=False, hatch="///",
                                                              edgecolor="0.3", lw=0))
                if status[j][i] == "diverged":
                    ax.add_patch(matplotlib.patches.Rectangle((i - 0.5, j - 0.5), 1, 1, color="0.85", lw=0))
                    text[j][i] = "diverged"
                v = grid[j, i]
                dark = math.isfinite(v) and (v - vmin) / (vmax - vmin or 1) > 0.5
                if key != col:
                    dark = not dark
                ax.text(i, j, text[j][i], ha="center", va="center", fontsize=7,
                        color="white" if dark and status[j][i] == "reached" else "black",
                        bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.7)
                        if status[j][i] == "censored" else None)
        ax.set_xticks(range(len(xs)), [str(x) for x in xs])
        ax.set_yticks(range(len(ys)), [str(y) for y in ys])
        ax.set(xlabel=fx, ylabel=fy, title=label)
        ax.grid(False)
        fig.colorbar(im, ax=ax, label="steps" if key == col else "0-1 error")
    fig.legend(handles=[hatch, div, unreached], loc="lower center", ncol=3, fontsize=8, bbox_to_anchor=(0.5, -0.02))
    extra = f" (averaged over {', '.join(fields[2:])})" if len(fields) > 2 else ""
    fig.suptitle("Synthetic sweep: each cell trained to its stop rule" + extra)
    return fig
