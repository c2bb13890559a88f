"""Figures of a geometry run, each made from saved metrics (layers.csv, direction_abs_cos.csv) so a run re-plots.

Each function draws on optional Axes and returns the Figure; its caption stands beside it.

- :func:`layer_curves_figure`: per-layer within/cross-concept cosine, concept-direction |cos| and probe
  accuracy, each with its permutation-null band (2.5-97.5%) and bootstrap 95% intervals.
- :func:`direction_heatmap_figure`: the |cos| matrix of concept directions, rows and columns in the leaf order
  of an average-linkage clustering (scipy.cluster.hierarchy) on 1 - |cos|.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.spatial.distance import squareform

from mcicl.core.io import cell_float
from mcicl.core.plotting import Caption, on_axes, palette, save_figure, styled, subplots


def read_layers_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of layers.csv with numbers parsed (empty cells become nan)."""
    rows = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            parsed: dict[str, Any] = {}
            for key, value in row.items():
                try:
                    parsed[key] = float(value) if value != "" else float("nan")
                except ValueError:
                    parsed[key] = value
            parsed["layer"] = row["layer"]
            rows.append(parsed)
    return rows


def _col(rows: Sequence[dict[str, Any]], key: str) -> np.ndarray:
    return np.array([float(r.get(key, np.nan)) if r.get(key, "") != "" else np.nan for r in rows], dtype=float)


def _span(x: np.ndarray, *ys: np.ndarray) -> tuple[np.ndarray, ...]:
    """With a single layer a band over one x is invisible: widen it to x +/- 0.3."""
    if len(x) != 1:
        return (x, *ys)
    return (np.array([x[0] - 0.3, x[0] + 0.3]), *(np.repeat(y, 2) for y in ys))


def _stat_curve(ax: Any, x: np.ndarray, rows: Sequence[dict[str, Any]], stat: str, label: str, colour: str,
                marker: str = "o", dodge: float = 0.0) -> None:
    value = _col(rows, stat)
    lo, hi = _col(rows, f"{stat}_ci_low"), _col(rows, f"{stat}_ci_high")
    yerr = np.vstack([value - lo, hi - value])
    yerr = np.where(np.isfinite(yerr), np.maximum(yerr, 0), 0)
    ax.errorbar(x + dodge, value, yerr=yerr, color=colour, marker=marker, ms=4, lw=1.5, capsize=2, label=label)
    nlo, nhi = _col(rows, f"{stat}_null_low"), _col(rows, f"{stat}_null_high")
    if np.isfinite(nlo).any():
        ax.fill_between(*_span(x, nlo, nhi), color=colour, alpha=0.15, lw=0,
                        label=f"{label}: permutation null 95%")


LAYERS_CAPTION = Caption(
    "Geometry across layers",
    "Each statistic per layer (0 = input embeddings) with its permutation-null band: the distance between a "
    "curve and its band is the effect; within-concept above cross-concept is the paper's premise.")


@styled
def layer_curves_figure(rows: Sequence[dict[str, Any]], *, title: str = "",
                        axes: Sequence[Axes] | None = None) -> Figure:
    """Per-layer curves (cosines, direction |cos|, probes) with null bands, on three Axes (new ones by default)."""
    layers = [str(r["layer"]) for r in rows]
    x = np.arange(len(rows))
    c = palette(6)
    if axes is None:
        fig, axes = subplots(1, 3, figsize=(15, 5.2))
    else:
        if len(axes) != 3:
            raise ValueError(f"axes: {len(axes)} given; accepted: three matplotlib Axes")
        fig = axes[0].figure

    ax = axes[0]
    _stat_curve(ax, x, rows, "within_concept_cosine", "within-concept", c[0])
    _stat_curve(ax, x, rows, "cross_concept_cosine", "cross-concept", c[1], marker="s", dodge=0.08)
    ax.axhline(0, color="0.4", lw=0.8)
    ax.set_title("Mean pairwise cosine of words")
    ax.set_ylabel("cosine (bootstrap 95% CI over concepts)")

    ax = axes[1]
    _stat_curve(ax, x, rows, "concept_direction_abs_cos", "diff-of-means directions", c[2])
    if "lda_direction_abs_cos" in rows[0]:
        _stat_curve(ax, x, rows, "lda_direction_abs_cos", "LDA directions", c[4], marker="^", dodge=0.08)
    iso = _col(rows, "concept_direction_abs_cos_isotropic")
    if np.isfinite(iso).any():
        ax.plot(*_span(x, iso), color="0.3", ls="--", lw=1.2, label=r"isotropic $\sqrt{2/(\pi d)}$")
    ax.set_title("Concept directions: mean |cos| between concepts")
    ax.set_ylabel("|cos|")
    ax.set_ylim(bottom=0)

    ax = axes[2]
    if np.isfinite(_col(rows, "probe_accuracy")).any():
        ax.plot(x, _col(rows, "probe_accuracy"), color=c[0], marker="o", label="probe accuracy (held-out 30%)")
        ax.plot(x, _col(rows, "probe_control_accuracy"), color=c[3], marker="s", ls="--",
                label="control task accuracy")
        ax.plot(*_span(x, _col(rows, "probe_chance")), color="0.4", ls=":", label="majority-class chance")
    _stat_curve(ax, x, rows, "heldout_projection_auc", "held-out projection AUC", c[5], marker="D")
    ax.set_ylim(0, 1.05)
    ax.set_title("Linear readout of concepts")
    ax.set_ylabel("accuracy / AUC")

    for ax in axes:
        ax.set_xticks(x, layers)
        ax.set_xlabel("layer (0 = embedding output)" if layers[0] == "0" else "space / layer")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)  # below: never over data
        if len(x) == 1:
            ax.set_xlim(-0.5, 0.5)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


BASELINES_CAPTION = Caption(
    "Trained minus baselines",
    "Each statistic of the trained model minus the same statistic of a baseline (random weights; input embeddings "
    "alone; trained embeddings through random blocks), per layer, with 95% cluster-bootstrap intervals over "
    "concepts: a difference whose interval covers 0 is geometry the baseline already has.")
BASELINE_PANELS = (("within_concept_cosine", "within-concept cosine"), ("within_minus_cross", "within minus cross"),
                   ("concept_direction_abs_cos", "concept-direction |cos|"),
                   ("heldout_projection_auc", "held-out projection AUC"))


@styled
def baseline_differences_figure(rows: Sequence[dict[str, Any]], *, title: str = "",
                                axes: Sequence[Axes] | None = None) -> Figure:
    """Trained minus each baseline per layer (rows of baselines.csv), one panel per statistic, on four Axes."""
    layers = list(dict.fromkeys(str(r["layer"]) for r in rows))
    kinds = list(dict.fromkeys(str(r["baseline"]) for r in rows))
    x = np.arange(len(layers))
    c = palette(max(len(kinds), 3))
    if axes is None:
        fig, axes = subplots(1, len(BASELINE_PANELS), figsize=(18, 4.8))
    else:
        if len(axes) != len(BASELINE_PANELS):
            raise ValueError(f"axes: {len(axes)} given; accepted: {len(BASELINE_PANELS)} matplotlib Axes")
        fig = axes[0].figure
    for ax, (stat, label) in zip(axes, BASELINE_PANELS, strict=True):
        for i, kind in enumerate(kinds):
            sel = {str(r["layer"]): r for r in rows if r["baseline"] == kind and r["statistic"] == stat}
            value = np.array([cell_float(sel.get(layer, {}).get("difference")) for layer in layers])
            lo = np.array([cell_float(sel.get(layer, {}).get("ci_low")) for layer in layers])
            hi = np.array([cell_float(sel.get(layer, {}).get("ci_high")) for layer in layers])
            yerr = np.where(np.isfinite([value - lo, hi - value]), np.maximum([value - lo, hi - value], 0), 0)
            ax.errorbar(x + 0.08 * (i - 1), value, yerr=yerr, color=c[i], marker="o", ms=4, capsize=2,
                        label=f"trained - {kind}")
        ax.axhline(0, color="0.4", lw=0.8)
        ax.set_title(label)
        ax.set_xticks(x, layers)
        ax.set_xlabel("layer (0 = embedding output)")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1)
    axes[0].set_ylabel("trained minus baseline (95% CI over concepts)")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig



def cluster_order(matrix: np.ndarray) -> np.ndarray:
    """Leaf order of an average-linkage clustering on 1 - matrix (a similarity in [0, 1])."""

    m = np.asarray(matrix, dtype=float)
    if len(m) < 3:
        return np.arange(len(m))
    dist = np.clip(1.0 - m, 0, None)
    dist = (dist + dist.T) / 2
    np.fill_diagonal(dist, 0.0)
    return leaves_list(linkage(squareform(dist, checks=False), method="average"))


def read_matrix_csv(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """(matrix, names) from a square CSV whose first row and column hold the names."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    names = rows[0][1:]
    return np.array([[float(v) for v in r[1:]] for r in rows[1:]]), names


HEATMAP_CAPTION = Caption(
    "Concept-direction |cos| heatmap",
    "Absolute cosine between concept directions, rows and columns ordered by hierarchical clustering; a "
    "near-orthogonal geometry is a dark off-diagonal. Blocks are families of related concepts.")


@styled
def direction_heatmap_figure(matrix: np.ndarray, names: Sequence[str], *, title: str = "",
                             ax: Axes | None = None) -> Figure:
    """Clustered heatmap of the concept-direction |cos| matrix (diagonal masked)."""
    m = np.asarray(matrix, dtype=float)
    order = cluster_order(m)
    m = m[np.ix_(order, order)].copy()
    np.fill_diagonal(m, np.nan)
    labels = [str(names[i]) for i in order]
    size = min(max(5.0, 0.18 * len(labels) + 2.5), 14.0)
    fig, ax = on_axes(ax, figsize=(size + 1.2, size))
    vmax = float(np.nanmax(m)) if np.isfinite(m).any() else 1.0
    im = ax.imshow(m, cmap="viridis", vmin=0, vmax=max(vmax, 1e-6), interpolation="nearest")
    fs = 8 if len(labels) <= 25 else 6
    if len(labels) <= 70:
        ax.set_xticks(np.arange(len(labels)), labels, rotation=90, fontsize=fs)
        ax.set_yticks(np.arange(len(labels)), labels, fontsize=fs)
    else:  # names would overlap; the order is saved with the matrix in direction_abs_cos.csv
        ax.set_xlabel(f"{len(labels)} concepts (clustered order; names omitted)")
        ax.set_ylabel(f"{len(labels)} concepts")
    ax.grid(False)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label="|cos| between concept directions (diagonal blank)")
    ax.set_title(title or "Concept-direction |cos| (clustered order)")
    return fig


def replot(run_folder: str | Path) -> list[Path]:
    """Re-draw a geometry run's figures from its saved metrics."""
    run_folder = Path(run_folder)
    rows = read_layers_csv(run_folder / "layers.csv")
    out = [save_figure(layer_curves_figure(rows), run_folder / "figures", "geometry_layers", caption=LAYERS_CAPTION)]
    if (run_folder / "baselines.csv").is_file():
        with open(run_folder / "baselines.csv", newline="") as fh:
            out.append(save_figure(baseline_differences_figure(list(csv.DictReader(fh))), run_folder / "figures",
                                   "baseline_differences", caption=BASELINES_CAPTION))
    if (run_folder / "direction_abs_cos.csv").is_file():
        matrix, names = read_matrix_csv(run_folder / "direction_abs_cos.csv")
        out.append(save_figure(direction_heatmap_figure(matrix, names), run_folder / "figures", "direction_heatmap",
                               caption=HEATMAP_CAPTION))
    return out
