"""Figures of a dictionary run (``mcicl probe dictionary``): held-out error per size, atoms x concepts, sense
recall per layer. Each draws from saved numbers and returns a pyplot-free Figure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from mcicl.core.plotting import palette, styled, subplots


@styled
def sizes_figure(rows_by_layer: Mapping[str, Sequence[Mapping[str, Any]]]) -> Figure:
    """One panel per layer: held-out relative error against atoms, a line per nonzeros, the chosen size ringed."""
    layers = list(rows_by_layer)
    fig, axes = subplots(1, len(layers), figsize=(4.2 * len(layers), 3.6), squeeze=False)
    for ax, layer in zip(axes[0], layers, strict=True):
        rows = rows_by_layer[layer]
        ks = sorted({r["nonzeros"] for r in rows})
        for colour, k in zip(palette(len(ks)), ks, strict=True):
            pts = sorted((r for r in rows if r["nonzeros"] == k), key=lambda r: r["atoms"])
            ax.errorbar([r["atoms"] for r in pts], [r["heldout_error"] for r in pts],
                        yerr=[r["heldout_se"] for r in pts], marker="o", color=colour, label=f"{k} per word",
                        capsize=2)
        chosen = next(r for r in rows if r["chosen"])
        ax.scatter([chosen["atoms"]], [chosen["heldout_error"]], s=220, facecolors="none", edgecolors="black",
                   linewidths=1.5, label=f"chosen: {chosen['atoms']} atoms, {chosen['nonzeros']} per word", zorder=5)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("atoms")
        ax.set_ylabel("held-out relative error")
        ax.set_title(f"layer {layer}")
        ax.legend(fontsize=7)
    return fig


@styled
def atoms_figure(cos_matrix: np.ndarray, concepts: Sequence[str], *, null_mean: float, title: str,
                 label_null: float | None = None, max_atoms: int = 40) -> Figure:
    """|cos| of concept directions (rows) with atoms (columns): each concept's best atom first, in concept order,
    then the others by use, at most ``max_atoms`` columns."""
    best = list(dict.fromkeys(int(j) for j in cos_matrix.argmax(axis=1)))
    rest = [j for j in range(cos_matrix.shape[1]) if j not in best]
    cols = (best + rest)[:max_atoms]
    m = cos_matrix[:, cols]
    fig, ax = subplots(figsize=(min(14, 3 + 0.28 * len(cols)), min(10, 2 + 0.3 * len(concepts))))
    im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_yticks(range(len(concepts)), list(concepts), fontsize=7)
    ax.set_xticks(range(len(cols)), [str(j) for j in cols], fontsize=6, rotation=90)
    ax.set_xlabel("atom (best match of some concept first)")
    label = f", shuffled-label null {label_null:.2f}" if label_null is not None else ""
    ax.set_title(f"{title}: |cos| concept direction x atom\n(mean best {cos_matrix.max(axis=1).mean():.2f}; "
                 f"rotation null {null_mean:.2f}{label})", fontsize=9)
    fig.colorbar(im, ax=ax, label="|cos|")
    return fig


@styled
def recall_figure(per_layer: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Sense recall per layer: polysemous words, chance (random senses), monosemous words, with intervals."""
    layers = list(per_layer)
    fig, ax = subplots(figsize=(max(4.5, 1.2 * len(layers) + 2), 3.6))
    series = [("polysemous_recall", "polysemous words"), ("polysemous_recall_chance", "same words, random senses"),
              ("monosemous_recall", "monosemous words (1 sense)")]
    x = np.arange(len(layers))
    for i, (colour, (key, label)) in enumerate(zip(palette(3), series, strict=True)):
        vals = [per_layer[lay].get(key) for lay in layers]
        if not any(vals):
            continue
        y = np.array([v["value"] if v else np.nan for v in vals], dtype=float)
        lo = np.array([v["ci"][0] if v and v["ci"][0] is not None else np.nan for v in vals], dtype=float)
        hi = np.array([v["ci"][1] if v and v["ci"][1] is not None else np.nan for v in vals], dtype=float)
        ax.errorbar(x + (i - 1) * 0.12, y, yerr=[y - lo, hi - y], marker="o", linestyle="", color=colour,
                    label=label, capsize=3)
    ax.set_xticks(x, [str(lay) for lay in layers])
    ax.set_xlabel("layer")
    ax.set_ylabel("senses found among top atoms")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    return fig


@styled
def recovery_figure(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Recovery of a known dictionary against noise (x) and sparsity (one line per features-per-word): the share
    of true atoms matched with |cos| >= 0.9 and the Amari distance, at the size the procedure chose."""
    rates = sorted({r["polysemy_rate"] for r in rows})
    fig, axes = subplots(1, 2, figsize=(8.4, 3.4))
    for colour, rate in zip(palette(len(rates)), rates, strict=True):
        pts = sorted((r for r in rows if r["polysemy_rate"] == rate), key=lambda r: r["sigma"])
        label = f"{pts[0]['features_per_word']:.2f} features per word"
        for ax, key in zip(axes, ("share_matched_0_9", "amari"), strict=True):
            ax.plot([r["sigma"] for r in pts], [r[key] for r in pts], marker="o", color=colour, label=label)
    axes[0].axhline(0.9, color="grey", linestyle=":", linewidth=1)
    axes[0].set_ylabel("true atoms matched, |cos| >= 0.9")
    axes[0].set_ylim(-0.02, 1.02)
    axes[1].set_ylabel("Amari distance (0: recovered)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("noise sigma per coordinate")
    axes[0].legend(fontsize=7)
    return fig
