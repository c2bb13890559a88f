"""Sweeps: one train run per grid point, a table of in-distribution and OOD errors, and a heatmap."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import numpy as np
from mcicl.synthetic.config import SyntheticConfig
from mcicl.synthetic.train import train

from mcicl.core.config import from_dict, to_dict
from mcicl.core.plotting import SEQUENTIAL_CMAP, save_figure, styled, subplots
from mcicl.core.runs import RunFolder, progress

log = logging.getLogger("mcicl")
SWEEP_CSV = "sweep.csv"


def grid_points(base: SyntheticConfig, grid: dict[str, list]) -> list[tuple[dict[str, Any], SyntheticConfig]]:
    """Every combination of the grid values as (point, validated config); bad fields or values raise ConfigError."""
    fields = list(grid)
    out = []
    for values in itertools.product(*(grid[f] for f in fields)):
        config = from_dict(SyntheticConfig, {**to_dict(base), **dict(zip(fields, values, strict=True))})
        out.append(({f: getattr(config, f) for f in fields}, config))
    return out


def run_sweep(base_config: SyntheticConfig, grid: dict[str, list], run: RunFolder) -> list[dict[str, Any]]:
    """Train every grid point into run/points/NNN; write sweep.csv, summary.json and the heatmap; return rows."""

    if not grid:
        raise ValueError("the sweep grid is empty; accepted: {field: [values, ...]}, "
                         "e.g. {'within_cosine': [0.1, 0.7]}")
    points = grid_points(base_config, grid)  # validate every point before training any
    run.save_config({"base": to_dict(base_config), "grid": {k: list(map(str, v)) for k, v in grid.items()}})
    rows = []
    for i, (point, config) in enumerate(progress(points, desc="synthetic sweep")):
        sub = RunFolder.create(run.path / "points" / f"{i:03d}", "synthetic train", overwrite=True)
        summary = train(config, sub, figures=False).summary
        row = {**point, "test_zero_one": summary["final"]["test_zero_one"],
               "train_zero_one": summary["final"]["train_zero_one"],
               "correct_attention": summary["final"]["correct_attention"],
               "convergence_rate": summary["convergence"]["rate"]}
        row.update({f"ood.{name}.test_zero_one": m["test_zero_one"] for name, m in summary["ood"].items()})
        row["run_dir"] = str(sub.path.relative_to(run.path))
        rows.append(row)
        log.info("sweep point %d/%d %s: test 0-1 %.4f", i + 1, len(points), point, row["test_zero_one"])
    run.write_csv(SWEEP_CSV, rows)
    run.write_summary({"grid": {k: [str(v) for v in vals] for k, vals in grid.items()}, "points": len(rows),
                       "rows": rows})
    plot_sweep([dict(r) for r in rows], list(grid), run.figures)
    return rows


@styled
def plot_sweep(rows: list[dict[str, Any]], fields: list[str], folder) -> None:
    """Heatmap (two or more fields: the first two, averaged over the rest) or line plot (one field) of errors."""
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
        save_figure(fig, folder, "sweep")
        return
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
    save_figure(fig, folder, "sweep")
