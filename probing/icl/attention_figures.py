"""Attention-probe figures, made from the rows of a saved ``attention.csv`` (re-plot without re-running)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from mcicl.core.plotting import DIVERGING_CMAP, Caption, palette, save_figure, styled, subplots

KIND_TITLES = {"demo": "word + label tokens", "word": "word tokens", "label": "label tokens"}


def _num(row: Mapping[str, Any], key: str) -> float:
    return float(row[key])


def _select(rows: Sequence[Mapping[str, Any]], **where: Any) -> list[Mapping[str, Any]]:
    return [r for r in rows if all(str(r[k]) == str(v) for k, v in where.items())]


def head_grid(rows: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    """(layers, heads) array of ``key`` from the rows of one (condition, shots, kind) cell."""
    n_layers = max(int(r["layer"]) for r in rows) + 1
    n_heads = max(int(r["head"]) for r in rows) + 1
    grid = np.full((n_layers, n_heads), np.nan)
    for r in rows:
        grid[int(r["layer"]), int(r["head"])] = _num(r, key)
    return grid


@styled
def plot_head_heatmap(rows: Sequence[Mapping[str, Any]], condition: str, shots: int, kind: str = "demo", *,
                      alpha: float = 0.05, limit: float | None = None, ax: Axes | None = None,
                      colorbar: bool = True) -> Figure:
    """Layer x head heatmap of value minus the largest null; a dot marks heads significant at ``alpha``."""
    cell = _select(rows, condition=condition, shots=shots, kind=kind)
    if not cell:
        raise ValueError(f"no attention rows for condition={condition!r}, shots={shots}, kind={kind!r}")
    diff = head_grid(cell, "value") - head_grid(cell, "null_max")
    p = head_grid(cell, "p_corrected")
    if ax is None:
        fig, ax = subplots(figsize=(0.35 * diff.shape[1] + 2.4, 0.35 * diff.shape[0] + 1.6))
    else:
        fig = ax.figure
    lim = limit if limit is not None else max(0.05, float(np.nanmax(np.abs(diff))))
    im = ax.imshow(diff, cmap=DIVERGING_CMAP, vmin=-lim, vmax=lim, aspect="auto", origin="lower")
    ys, xs = np.nonzero(p < alpha)
    ax.scatter(xs, ys, s=10, c="black", marker="o", label=f"max-T corrected p < {alpha:g}")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(diff.shape[1]))
    ax.set_yticks(range(diff.shape[0]))
    ax.tick_params(labelsize=7)
    ax.grid(False)
    ax.set_title(f"{condition.replace('_', ' ')}, {shots} shots: {KIND_TITLES.get(kind, kind)}", fontsize=9)
    if colorbar:
        fig.colorbar(im, ax=ax, label="correct attention - null")
    return fig


@styled
def heatmap_figure(rows: Sequence[Mapping[str, Any]], shots: int, conditions: Sequence[str],
                   kinds: Sequence[str] = ("demo", "word", "label"), *, alpha: float = 0.05, title: str = "") -> Figure:
    """A grid of :func:`plot_head_heatmap` panels (rows: conditions, columns: token kinds) on one colour scale."""
    cells = [r for r in rows if int(r["shots"]) == shots and r["condition"] in conditions and r["kind"] in kinds]
    diffs = [_num(r, "value") - _num(r, "null_max") for r in cells]
    lim = max(0.05, max(abs(d) for d in diffs))
    n_layers = max(int(r["layer"]) for r in cells) + 1
    n_heads = max(int(r["head"]) for r in cells) + 1
    # The last, narrow column holds the shared colour bar (tight_layout in save_figure keeps it in place).
    fig, axes = subplots(len(conditions), len(kinds) + 1, squeeze=False,
                         gridspec_kw={"width_ratios": [1.0] * len(kinds) + [0.05]},
                         figsize=(len(kinds) * (0.3 * n_heads + 1.6) + 1.2, len(conditions) * (0.3 * n_layers + 1.2)))
    for i, cond in enumerate(conditions):
        for j, kind in enumerate(kinds):
            plot_head_heatmap(rows, cond, shots, kind, alpha=alpha, limit=lim, ax=axes[i, j], colorbar=False)
    for ax in axes[:, -1]:
        ax.set_axis_off()
    cax = axes[len(conditions) // 2, -1]
    cax.set_axis_on()
    fig.colorbar(axes[0, 0].images[0], cax=cax, label="correct attention minus the largest null")
    fig.suptitle((title + "\n" if title else "") + f"dots: heads with max-T corrected p < {alpha:g}", fontsize=10)
    return fig


@styled
def plot_top_heads_over_shots(rows: Sequence[Mapping[str, Any]], heads: Sequence[tuple[int, int]], *,
                              condition: str = "in_distribution", kind: str = "demo", ax: Axes | None = None,
                              title: str = "") -> Figure:
    """Correct attention of the chosen heads against shots (95% CI bands), with chance and each head's null."""
    if ax is None:
        fig, ax = subplots(figsize=(6.4, 4.0))
    else:
        fig = ax.figure
    colours = [c for c in palette(len(heads) + 1) if c != "#F0E442"]
    chance: dict[int, float] = {}
    for (layer, head), colour in zip(heads, colours, strict=False):
        pts = sorted(_select(rows, condition=condition, kind=kind, layer=layer, head=head),
                     key=lambda r: int(r["shots"]))
        if not pts:
            continue
        x = [int(r["shots"]) for r in pts]
        ax.plot(x, [_num(r, "value") for r in pts], marker="o", color=colour, label=f"layer {layer}, head {head}")
        ax.fill_between(x, [_num(r, "ci_low") for r in pts], [_num(r, "ci_high") for r in pts], color=colour,
                        alpha=0.2, lw=0)
        ax.plot(x, [_num(r, "null_max") for r in pts], color=colour, ls=":", lw=1)
        chance.update({int(r["shots"]): _num(r, "chance") for r in pts})
    if chance:
        xs = sorted(chance)
        ax.plot(xs, [chance[s] for s in xs], color="0.3", ls="--", lw=1, label="chance (uniform over demo tokens)")
    ax.plot([], [], color="0.4", ls=":", lw=1, label="null (dotted, per head)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(chance) or [1])
    ax.set_xticklabels([str(s) for s in sorted(chance)] or ["1"])
    ax.set_xlabel("demonstrations in the prompt (shots)")
    ax.set_ylabel("correct attention (share on same-concept demos)")
    ax.set_ylim(0, 1)
    ax.set_title(title or f"top heads: {condition.replace('_', ' ')}, {KIND_TITLES.get(kind, kind)}", fontsize=10)
    ax.legend(fontsize=8)
    return fig


HEATMAP_CAPTION = Caption(
    "Correct attention per layer and head",
    "Each cell a head: the share of the query's attention on demonstrations of the query's concept, minus the "
    "largest of its nulls (concepts permuted within the prompt; the same slots in other episodes; queries of "
    "one episode trading concepts). Rows: conditions; columns: word + label tokens, word tokens, label tokens. "
    "Dots: max-T corrected p < alpha over all heads. Red is attention the concept match explains.")
TOP_HEADS_CAPTION = Caption(
    "Top heads over shots",
    "The heads chosen on held-out in-distribution episodes: correct attention against shots with episode-"
    "bootstrap 95% bands; dotted: each head's null, dashed: chance (uniform over demonstration tokens).")


def attention_figures(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> dict[str, Any]:
    """{"attention_heatmap": Figure, "attention_top_heads": Figure} from attention.csv rows and summary.json."""
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    shots = max(int(r["shots"]) for r in rows)
    heads = [(int(h["layer"]), int(h["head"])) for h in summary["top_heads"]]
    who = summary.get("model", "?") + (" (random weights)" if summary.get("random_weights") else "")
    cond = "in_distribution" if "in_distribution" in conditions else conditions[0]
    return {"attention_heatmap": heatmap_figure(rows, shots, conditions, alpha=float(summary.get("alpha", 0.05)),
                                                title=f"{who}: correct attention minus null, query position "
                                                      f"{summary.get('query_position', '?')}"),
            "attention_top_heads": plot_top_heads_over_shots(rows, heads, condition=cond,
                                                             title=f"{who}: top heads (chosen on held-out "
                                                                   "episodes)")}


CAPTIONS = {"attention_heatmap": HEATMAP_CAPTION, "attention_top_heads": TOP_HEADS_CAPTION}


def save_attention_figures(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any],
                           folder: str | Path) -> list[Path]:
    """attention_heatmap.png and attention_top_heads.png from attention.csv rows and summary.json."""
    return [save_figure(fig, folder, name, caption=CAPTIONS[name])
            for name, fig in attention_figures(rows, summary).items()]
