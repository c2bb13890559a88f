"""The geometry-to-OOD map: a synthetic sweep's error over (within-concept cosine x cross-concept overlap),
as a heatmap, with real model spaces placed at the generator parameters estimated from their geometry.

The sweep table is ``sweep.csv`` from ``mcicl synthetic sweep`` (one row per grid point: the grid fields,
``test_zero_one`` and ``ood.<scenario>.test_zero_one``). Real points come from
:func:`analysis.matched.estimate_parameters` (the same inversion the geometry-matched world uses), so a
point sits where the synthetic generator reproduces that space's measured geometry.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mcicl.core.plotting import SEQUENTIAL_CMAP, Caption, palette, save_figure, styled, subplots

X_FIELD, Y_FIELD = "within_cosine", "cross_overlap"


@dataclass
class OODGrid:
    """Errors on a regular grid: ``values[i, j]`` at (xs[j], ys[i]); NaN where the sweep has no point."""

    xs: np.ndarray
    ys: np.ndarray
    values: np.ndarray
    column: str


@dataclass
class MapPoint:
    """A real model space placed on the map at its estimated generator parameters."""

    name: str
    x: float
    y: float


def read_sweep(path: str | Path) -> list[dict[str, str]]:
    """Rows of a sweep.csv."""
    path = Path(path)
    if path.is_dir():
        path = path / "sweep.csv"
    if not path.is_file():
        raise FileNotFoundError(f"sweep table not found: {path} (run `mcicl synthetic sweep` first)")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"sweep table {path} has no rows")
    return rows


def ood_columns(rows: Sequence[Mapping[str, str]]) -> list[str]:
    """The ``ood.<scenario>.test_zero_one`` columns of a sweep table."""
    return [c for c in rows[0] if c.startswith("ood.") and c.endswith(".test_zero_one")]


def _value(row: Mapping[str, str], column: str | None, ood: Sequence[str]) -> float:
    """The error of one row: a named column, or the mean over the OOD columns (None)."""
    cols = [column] if column else list(ood)
    vals = [float(row[c]) for c in cols if row.get(c) not in (None, "", "nan")]
    return float(np.mean(vals)) if vals else math.nan


def ood_grid(rows: Sequence[Mapping[str, str]], column: str | None = None, *, x: str = X_FIELD,
             y: str = Y_FIELD) -> OODGrid:
    """Mean error per (x, y) grid cell (rows at the same cell, e.g. other grid fields, are averaged).

    ``column``: a sweep column (e.g. ``test_zero_one`` or ``ood.flipped_labels.test_zero_one``) or None for
    the mean over every OOD scenario column.
    """
    if not rows:
        raise ValueError("empty sweep table")
    for field in (x, y):
        if field not in rows[0]:
            raise ValueError(f"sweep table has no column {field!r}; columns: {', '.join(rows[0])}. Sweep over "
                             f"{X_FIELD} x {Y_FIELD} for the geometry-to-OOD map")
    ood = ood_columns(rows)
    if column is None and not ood:
        raise ValueError("sweep table has no ood.<scenario>.test_zero_one columns; give a column")
    if column is not None and column not in rows[0]:
        raise ValueError(f"sweep table has no column {column!r}; accepted: {', '.join(rows[0])}")
    xs = np.array(sorted({float(r[x]) for r in rows}))
    ys = np.array(sorted({float(r[y]) for r in rows}))
    sums = np.zeros((len(ys), len(xs)))
    counts = np.zeros_like(sums)
    for r in rows:
        v = _value(r, column, ood)
        if not math.isnan(v):
            i, j = int(np.searchsorted(ys, float(r[y]))), int(np.searchsorted(xs, float(r[x])))
            sums[i, j] += v
            counts[i, j] += 1
    with np.errstate(invalid="ignore"):
        values = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return OODGrid(xs, ys, values, column or "mean OOD")


def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres (a single centre gets a unit-free +-0.05 cell)."""
    if len(centres) == 1:
        return np.array([centres[0] - 0.05, centres[0] + 0.05])
    mid = (centres[1:] + centres[:-1]) / 2
    return np.concatenate([[centres[0] - (mid[0] - centres[0])], mid, [centres[-1] + (centres[-1] - mid[-1])]])


OOD_MAP_CAPTION = Caption(
    "Geometry-to-OOD map",
    "Colour: the synthetic transformer's OOD 0-1 error (mean over the sweep's OOD scenarios, or one "
    "scenario) at each within-concept cosine (x) and cross-concept overlap (y). Markers: real model spaces "
    "placed at their measured geometry, so one can read which error regime a real model's geometry sits in.")


@styled
def ood_map_figure(rows: Sequence[Mapping[str, str]], folder: str | Path, points: Sequence[MapPoint] = (), *,
                   name: str = "ood_map", title: str = "") -> Path:
    """Two heatmaps (in-distribution error; mean OOD error) with real spaces as markers; return the PNG."""

    panels = [("test_zero_one", "in-distribution test 0-1 error")] if "test_zero_one" in rows[0] else []
    panels.append((None, f"mean OOD 0-1 error ({len(ood_columns(rows))} scenarios)"))
    grids = [ood_grid(rows, col) for col, _ in panels]
    vmax = max(0.05, float(np.nanmax([np.nanmax(g.values) for g in grids])))
    fig, axs = subplots(1, len(panels) + 1, figsize=(5.6 * len(panels) + 0.8, 4.8), squeeze=False,
                            gridspec_kw={"width_ratios": [1] * len(panels) + [0.05]})
    axes, cax = axs[:, :-1], axs[0, -1]  # a dedicated colour-bar axis keeps tight_layout exact
    colours = palette(len(points) + 3)[3:]  # skip the first three, which look like the map's ends
    mesh = None
    for ax, grid, (_, panel_title) in zip(axes[0], grids, panels, strict=True):
        mesh = ax.pcolormesh(_edges(grid.xs), _edges(grid.ys), grid.values, cmap=SEQUENTIAL_CMAP, vmin=0,
                             vmax=vmax, shading="flat")
        for i, yv in enumerate(grid.ys):
            for j, xv in enumerate(grid.xs):
                v = grid.values[i, j]
                if not math.isnan(v):
                    ax.text(xv, yv, f"{v:.2f}", ha="center", va="center", fontsize=8,
                            color="white" if v < 0.6 * vmax else "black")
        for point, colour in zip(points, colours, strict=False):
            ax.scatter([point.x], [point.y], marker="o", s=70, facecolor=colour, edgecolor="white",
                       linewidths=1.5, zorder=3, label=point.name)
        ax.set_xlabel("within-concept cosine cos(mu_k^+, mu_k^-)")
        ax.set_ylabel("cross-concept overlap (cosine)")
        ax.set_title(panel_title)
        ax.grid(False)
    fig.colorbar(mesh, cax=cax, label="0-1 error (fraction of test prompts)")
    if points:  # below the panels, so markers and cells stay visible
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(4, len(points)),
                   fontsize=8, title="real model spaces, placed at their estimated generator parameters")
    fig.suptitle(title or "Geometry-to-OOD map: synthetic transformer error vs concept geometry")
    return save_figure(fig, folder, name, caption=OOD_MAP_CAPTION)
