"""Figures of ``probe circuits``, drawn from heads.csv rows and the summary (a run can be re-plotted from its files)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from mcicl.core.io import cell_float
from mcicl.core.plotting import DIVERGING_CMAP, SEQUENTIAL_CMAP, Caption, palette, styled, subplots

CAPTIONS = {
    "weight_vs_attention": Caption(
        "Weight score against behavioural same-concept attention, per head",
        "Each point is one head. x: its weight score from W_Q and W_K (concept product minus complement product, "
        "mean over concepts, directions from the direction episodes); y: its same-concept attention minus the "
        "largest null on the disjoint behaviour episodes. Filled: the weight score passes the max-T corrected "
        "test against both nulls. Title: Spearman's rho with its permutation p."),
    "head_roles": Caption(
        "Head roles beside concept attention",
        "Per layer (rows) and head (columns): previous-token, duplicate-token and induction scores on repeated "
        "random token sequences (attention on the target position), and same-concept attention minus its largest "
        "null on the ICL prompts. A concept head that is also an induction head lights up in both panels."),
    "causal_ranking": Caption(
        "Heads ranked by causal effect on the ICL readout",
        "Left: the heads with the largest patching effect (clean readout margin minus the margin with the head's "
        "query-position output taken from label-rotated prompts), with 95% episode-bootstrap intervals, beside "
        "the zero- and mean-ablation effects. Right: each head's rank by patching effect against its rank by "
        "same-concept attention (1 = largest); title: Spearman's rho with its permutation p."),
}


def _grid(rows: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    n_layers = max(int(r["layer"]) for r in rows) + 1
    n_heads = max(int(r["head"]) for r in rows) + 1
    out = np.full((n_layers, n_heads), np.nan)
    for r in rows:
        out[int(r["layer"]), int(r["head"])] = cell_float(r[key])
    return out


def _corr_title(summary: Mapping[str, Any], key: str, what: str) -> str:
    c = summary.get("correlations", {}).get(key, {})
    rho, p = c.get("rho"), c.get("p_text", "")
    return f"{what}: Spearman rho = {rho:.2f} ({p})" if isinstance(rho, float) and np.isfinite(rho) else what


@styled
def weight_attention_figure(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> Figure:
    """Scatter of each head's weight score against its same-concept attention excess."""
    fig, ax = subplots(figsize=(5.2, 4.2))
    x = np.array([cell_float(r["weight_score"]) for r in rows])
    y = np.array([cell_float(r["attention_excess"]) for r in rows])
    passed = np.array([cell_float(r["product_p_corrected"]) < summary.get("alpha", 0.05) for r in rows])
    colours = palette(2)
    ax.scatter(x[~passed], y[~passed], s=22, facecolors="none", edgecolors=colours[0], label="not significant")
    ax.scatter(x[passed], y[passed], s=22, color=colours[1], label="passes the product test (max-T)")
    top = np.argsort(-y)[:3]
    for i in top:
        ax.annotate(f"L{rows[i]['layer']}H{rows[i]['head']}", (x[i], y[i]), fontsize=8, xytext=(3, 3),
                    textcoords="offset points")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("weight score: concept - complement product")
    ax.set_ylabel("same-concept attention - largest null")
    ax.set_title(_corr_title(summary, "weight_vs_attention", "weights vs attention"), fontsize=9)
    ax.legend(fontsize=8)
    return fig


@styled
def roles_figure(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Heatmaps (layer x head) of the three role scores and of the concept-attention excess."""
    panels = [("previous_token", "previous-token"), ("duplicate_token", "duplicate-token"), ("induction", "induction"),
              ("attention_excess", "same-concept attention - null")]
    grids = [_grid(rows, k) for k, _ in panels]
    n_layers, n_heads = grids[0].shape
    fig, axes = subplots(1, 4, figsize=(4 * (0.28 * n_heads + 1.4), 0.35 * n_layers + 1.6))
    for ax, (key, title), g in zip(axes, panels, grids, strict=True):
        if key == "attention_excess":
            lim = max(float(np.nanmax(np.abs(g))), 1e-6)
            im = ax.imshow(g, cmap=DIVERGING_CMAP, vmin=-lim, vmax=lim, aspect="auto")
        else:
            im = ax.imshow(g, cmap=SEQUENTIAL_CMAP, vmin=0, vmax=max(float(np.nanmax(g)), 1e-6), aspect="auto")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(n_heads))
        ax.set_yticks(range(n_layers))
        ax.tick_params(labelsize=7)
        ax.grid(False)
        fig.colorbar(im, ax=ax, fraction=0.05)
    return fig


@styled
def causal_figure(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], top: int = 15) -> Figure:
    """The heads of largest patching effect with intervals and ablation effects; causal rank against attention."""
    fig, (ax, bx) = subplots(1, 2, figsize=(10, 4.2))
    patch = np.array([cell_float(r["patch_effect"]) for r in rows])
    order = np.argsort(-patch)[:top]
    colours = palette(3)
    y = np.arange(len(order))[::-1]
    for k, (name, c) in enumerate(zip(("patch", "zero", "mean"), colours, strict=True)):
        v = np.array([cell_float(rows[i][f"{name}_effect"]) for i in order])
        lo = np.array([cell_float(rows[i][f"{name}_low"]) for i in order])
        hi = np.array([cell_float(rows[i][f"{name}_high"]) for i in order])
        ax.errorbar(v, y + (k - 1) * 0.25, xerr=[v - lo, hi - v], fmt="o", ms=4, color=c,
                    label={"patch": "patching (label-rotated source)", "zero": "zero-ablation",
                           "mean": "mean-ablation"}[name])
    ax.set_yticks(y)
    ax.set_yticklabels([f"L{rows[i]['layer']}H{rows[i]['head']}" for i in order], fontsize=8)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("readout margin drop (clean - intervened)")
    ax.set_title(f"top {len(order)} heads by patching effect", fontsize=9)
    ax.legend(fontsize=7)
    att = np.array([cell_float(r["attention_excess"]) for r in rows])
    rank_p = np.argsort(np.argsort(-patch)) + 1
    rank_a = np.argsort(np.argsort(-att)) + 1
    bx.scatter(rank_a, rank_p, s=16, color=colours[0])
    bx.set_xlabel("rank by same-concept attention")
    bx.set_ylabel("rank by patching effect")
    bx.set_title(_corr_title(summary, "patch_vs_attention", "causal vs attention rank"), fontsize=9)
    return fig


def circuits_figures(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> dict[str, Figure]:
    """Every figure of a circuits run, by name (the keys of :data:`CAPTIONS`)."""
    return {"weight_vs_attention": weight_attention_figure(rows, summary), "head_roles": roles_figure(rows),
            "causal_ranking": causal_figure(rows, summary)}
