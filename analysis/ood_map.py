"""The geometry-to-OOD map: a synthetic sweep over (within-concept cosine x cross-concept overlap) as heatmaps
with contour lines, with real model spaces placed at the generator parameters estimated from their geometry.

The sweep table is ``sweep.csv`` from ``mcicl synthetic sweep`` (one row per grid point: the grid fields,
``test_zero_one``, ``ood.<scenario>.test_zero_one``, and the learning speed: ``steps_to_1pct`` (steps until the
test error first reaches 1%, empty if never), ``convergence_rate`` (the exponential rate of the test error)
and ``correct_attention`` at the end). Panels: in-distribution error, each scenario's OOD error, and those
three. Real points come from
:func:`analysis.matched.estimate_parameters` (the same inversion the geometry-matched world uses), so a
point sits where the synthetic generator reproduces that space's measured geometry.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import matplotlib.patches
import numpy as np
from matplotlib.figure import Figure

from mcicl.core.plotting import SEQUENTIAL_CMAP, Caption, palette, styled, subplots

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
    x_err: tuple[float, float] | None = None  # (below, above) the estimate, e.g. a bootstrap interval
    y_err: tuple[float, float] | None = None


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
    "Panels over within-concept cosine (x) and cross-concept overlap (y), with contour lines: the synthetic "
    "transformer's in-distribution and per-scenario OOD 0-1 error at each cell's stop (every seed at 1% test "
    "error, or the maximum of steps), the steps until the test error first reaches 1% (Kaplan-Meier median over "
    "seeds; grey: not reached by half of them), the correct attention and the same-concept attention on "
    "two-concept prompts. Hatched: censored cells (a seed hit the maximum, so its errors are a budget's); "
    "cross-hatched grey: diverged cells (no result). "
    "Markers: real model spaces placed at their measured geometry (bars: uncertainty, where estimated), so "
    "one can read which error and learning-speed regime a real model's geometry sits in.")


@dataclass(frozen=True)
class Panel:
    """One panel of the map: a sweep column, its title, and its colour scale ('error' panels share one)."""

    column: str
    title: str
    scale: str  # "error" (0 to the largest error), or "own" (this panel's range)
    cmap: str = SEQUENTIAL_CMAP


def map_panels(rows: Sequence[Mapping[str, str]]) -> list[Panel]:
    """The panels a sweep table supports: in-distribution error, each OOD scenario, learning speed, attention."""
    have = set(rows[0])
    panels = [Panel("test_zero_one", "in-distribution test error", "error")] if "test_zero_one" in have else []
    panels += [Panel(c, f"OOD {c[len('ood.'):-len('.test_zero_one')]}: test error", "error") for c in ood_columns(rows)]
    speed = [("steps_to_1pct", "steps to 1% test error (KM median over seeds; grey: not reached)", "viridis_r"),
             ("convergence_rate", "exponential rate of the test error (/step)", SEQUENTIAL_CMAP),
             ("correct_attention", "correct attention at the end", SEQUENTIAL_CMAP),
             ("same_concept_attention", "same-concept attention (2-concept prompts)", SEQUENTIAL_CMAP)]
    panels += [Panel(c, t, "own", cmap) for c, t, cmap in speed if c in have]
    return panels


def status_grid(rows: Sequence[Mapping[str, str]], *, x: str = X_FIELD, y: str = Y_FIELD) -> np.ndarray | None:
    """Per map cell: 'diverged' if a row there diverged, else 'censored' if one was censored (a seed hit the
    maximum of steps), else 'reached'; None for a sweep table without a status column."""
    if "status" not in rows[0]:
        return None
    xs = sorted({float(r[x]) for r in rows})
    ys = sorted({float(r[y]) for r in rows})
    out = np.full((len(ys), len(xs)), "", dtype=object)
    rank = {"": 0, "reached": 1, "censored": 2, "diverged": 3}
    for r in rows:
        i, j = ys.index(float(r[y])), xs.index(float(r[x]))
        if rank.get(r["status"], 0) > rank[out[i, j]]:
            out[i, j] = r["status"]
    return out


def _masked(values: np.ndarray) -> np.ma.MaskedArray:
    return np.ma.masked_invalid(values)


@styled
def ood_map_figure(rows: Sequence[Mapping[str, str]], points: Sequence[MapPoint] = (), *, title: str = "",
                   panels: Sequence[Panel] | None = None) -> Figure:
    """Heatmaps with contour lines over (within cosine x cross overlap), one per panel (default:
    :func:`map_panels`), with real spaces as markers (and error bars where known). A grid of panels, so it draws
    its own figure (no ``ax``)."""

    panels = list(panels) if panels is not None else map_panels(rows)
    if not panels:
        raise ValueError(f"sweep table has none of the map's columns; columns: {', '.join(rows[0])}")
    grids = [ood_grid(rows, p.column) for p in panels]
    errors = [g.values for g, p in zip(grids, panels, strict=True) if p.scale == "error"]
    vmax_error = max([0.05] + [float(np.nanmax(v)) for v in errors if np.isfinite(v).any()])
    ncols = min(4, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axs = subplots(nrows, ncols, figsize=(4.3 * ncols, 3.8 * nrows + (0.7 if points else 0)), squeeze=False)
    colours = palette(len(points) + 3)[3:]  # skip the first three, which look like the map's ends
    status = status_grid(rows)
    text = grids[0].values.size <= 25  # numbers in the cells of small grids; contour lines carry large ones
    for ax, grid, panel in zip(axs.flat, grids, panels, strict=False):
        values = _masked(grid.values)
        finite = grid.values[np.isfinite(grid.values)]
        if panel.scale == "error":
            vmin, vmax = 0.0, vmax_error
        else:
            vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
            if vmax <= vmin:
                vmin, vmax = vmin - 0.5 * abs(vmin) - 1e-9, vmax + 0.5 * abs(vmax) + 1e-9
        cmap = matplotlib.colormaps[panel.cmap].with_extremes(bad="0.85")
        mesh = ax.pcolormesh(_edges(grid.xs), _edges(grid.ys), values, cmap=cmap, vmin=vmin, vmax=vmax,
                             shading="flat")
        if len(grid.xs) > 1 and len(grid.ys) > 1 and finite.size and float(finite.max()) > float(finite.min()):
            levels = np.linspace(vmin, vmax, 6)[1:-1]
            lines = ax.contour(grid.xs, grid.ys, values, levels=levels, colors="white", linewidths=0.9)
            ax.clabel(lines, fontsize=7, fmt="%.3g")
        if text:
            for i, yv in enumerate(grid.ys):
                for j, xv in enumerate(grid.xs):
                    v = grid.values[i, j]
                    if not math.isnan(v):
                        r, g, b, _ = cmap((v - vmin) / (vmax - vmin))
                        ax.text(xv, yv, f"{v:.3g}", ha="center", va="center", fontsize=8,
                                color="black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white")
        if status is not None:
            xe, ye = _edges(grid.xs), _edges(grid.ys)
            for i in range(len(grid.ys)):
                for j in range(len(grid.xs)):
                    if status[i, j] in ("censored", "diverged"):
                        ax.add_patch(matplotlib.patches.Rectangle(
                            (xe[j], ye[i]), xe[j + 1] - xe[j], ye[i + 1] - ye[i], fill=status[i, j] == "diverged",
                            facecolor="0.85", hatch="///" if status[i, j] == "censored" else "xx", edgecolor="0.3",
                            lw=0, zorder=2))
        for point, colour in zip(points, colours, strict=False):
            xerr, yerr = (None if e is None else [[e[0]], [e[1]]] for e in (point.x_err, point.y_err))
            ax.errorbar([point.x], [point.y], xerr=xerr, yerr=yerr, fmt="o",
                        markersize=8, markerfacecolor=colour, markeredgecolor="white", ecolor=colour, elinewidth=1.5,
                        capsize=3, zorder=3, label=point.name)
        ax.set_xlabel("within-concept cosine cos(mu_k^+, mu_k^-)")
        ax.set_ylabel("cross-concept overlap (cosine)")
        ax.set_title(panel.title, fontsize=10)
        ax.grid(False)
        label = "0-1 error" if panel.scale == "error" else {"steps_to_1pct": "steps", "convergence_rate": "1/step",
                                                            "correct_attention": "attention mass"}.get(panel.column, "")
        fig.colorbar(mesh, ax=ax, label=label, shrink=0.9)
    for ax in list(axs.flat)[len(panels):]:
        ax.set_visible(False)
    if points:  # below the panels, so markers and cells stay visible
        handles, labels = axs[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(4, len(points)), fontsize=8,
                   title="real model spaces at their estimated generator parameters (bars: uncertainty, where known)")
    if status is not None:
        cens = [r for r in rows if r["status"] == "censored"]
        most = max((int(float(r["max_steps"])) for r in rows if r.get("max_steps")), default=None)
        marks = [matplotlib.patches.Patch(facecolor="white", edgecolor="0.3", hatch="///",
                                          label=f"censored: a seed never reached 1% in {most} steps "
                                                f"({len(cens)} of {len(rows)} cells)"),
                 matplotlib.patches.Patch(facecolor="0.85", edgecolor="0.3", hatch="xx",
                                          label="diverged: no result")]
        fig.legend(handles=marks, loc="upper left", fontsize=8, ncol=1, bbox_to_anchor=(0.0, 0.0))
    fig.suptitle(title or "Geometry-to-OOD map: the synthetic transformer's error and learning speed vs concept "
                          "geometry")
    return fig
