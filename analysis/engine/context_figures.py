"""Figures of the contextual geometry, made from saved metrics (``context_layers.csv``, context vectors .npz).

- :func:`context_layers_figure`: per layer, sense accuracy in context vs out of context with the null band,
  the shift toward the tagged sense, and the same-sense pair AUC; controls beside the polysemous words.
- :func:`word_contexts_figure`: PCA of one word's contextual vectors at one layer, coloured by sense.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from sklearn.decomposition import PCA

from mcicl.core.plotting import Caption, palette, save_figure, styled, subplots

LAYERS_CAPTION = Caption(
    "Polysemous words in context, per layer",
    "Left: sense accuracy (is a word's hidden state in a sense-tagged sentence nearer its tagged sense's concept "
    "centroid than its other senses'?) in context, out of context (one prediction per word: at most its "
    "majority sense), and for monosemous controls (nearest of all concepts); bands: null with senses shuffled "
    "within each word. Middle: how far the context moves the word toward its tagged sense. Right: whether "
    "same-sense contexts of a word are more alike than different-sense ones (AUC; 0.5 = no).")
WORDS_CAPTION = Caption(
    "Contextual vectors of single words",
    "PCA of one word's hidden states across its sense-tagged sentences at the best layer, coloured by sense: "
    "sentences of one sense should sit together. The words shown are those with the highest pair AUC, so the "
    "panel is a best case; the per-layer figure has the averages.")

PANELS = (("sense_accuracy", "Sense accuracy", "accuracy (bootstrap 95% CI over words)"),
          ("shift", "Shift toward the tagged sense", "margin in context - margin out of context"),
          ("pair_auc", "Same- vs different-sense pairs (WiC-style)", "AUC of pair cosine"))


def read_context_layers(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``context_layers.csv`` (layer, group, stat, value, null bands, CI), numbers as floats."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        for key, value in row.items():
            if key not in ("layer", "group", "stat"):
                row[key] = float(value) if value not in ("", None) else np.nan
    return rows


def _series(rows: Sequence[dict[str, Any]], group: str, stat: str, layers: list[str]) -> dict[str, np.ndarray]:
    by_layer = {r["layer"]: r for r in rows if r["group"] == group and r["stat"] == stat}
    keys = ("value", "ci_low", "ci_high", "null_low", "null_high", "null")
    return {k: np.array([float(by_layer[la][k]) if la in by_layer else np.nan for la in layers]) for k in keys}


@styled
def plot_context_stat(rows: Sequence[dict[str, Any]], stat: str, *, ax: Any = None) -> Figure:
    """One statistic per layer: polysemous words in context (and out of context for accuracy), controls."""
    if ax is None:
        fig, ax = subplots(figsize=(5.5, 4.2))
    fig = ax.figure
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    x = np.arange(len(layers))
    c = palette(4)
    curves = [("polysemous", stat, "polysemous words in context", c[0], "o")]
    if stat == "sense_accuracy":
        curves.append(("polysemous", "baseline_accuracy", "polysemous words out of context", c[1], "s"))
    controls = ("monosemous controls in context (nearest of all concepts)" if stat == "sense_accuracy"
                else "monosemous controls in context (own concept vs all others)")
    curves.append(("controls", stat, controls, c[2], "^"))
    for k, (group, name, label, colour, marker) in enumerate(curves):
        s = _series(rows, group, name, layers)
        if not np.isfinite(s["value"]).any():
            continue
        yerr = np.vstack([s["value"] - s["ci_low"], s["ci_high"] - s["value"]])
        yerr = np.where(np.isfinite(yerr), np.maximum(yerr, 0), 0)
        ax.errorbar(x + 0.06 * k, s["value"], yerr=yerr, color=colour, marker=marker, ms=4, lw=1.5, capsize=2,
                    label=label)
        if name != "baseline_accuracy" and np.isfinite(s["null_low"]).any():
            ax.fill_between(x, s["null_low"], s["null_high"], color=colour, alpha=0.15, lw=0,
                            label=f"{label}: null 95% (senses shuffled)")
    ax.set_xticks(x, layers)
    ax.set_xlabel("layer (0 = embedding output)")
    return fig


@styled
def context_layers_figure(rows: Sequence[dict[str, Any]], folder: str | Path | None = None, *, title: str = "",
                          name: str = "context_layers") -> Figure:
    """The three per-layer panels (accuracy, shift, pair AUC); saved as ``folder/name.png`` when a folder is given."""
    fig, axes = subplots(1, 3, figsize=(15, 5.4))
    for ax, (stat, heading, ylabel) in zip(axes, PANELS, strict=True):
        plot_context_stat(rows, stat, ax=ax)
        ax.set_title(heading)
        ax.set_ylabel(ylabel)
        if stat == "shift":
            ax.axhline(0, color="0.4", lw=0.8)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=1)
    if title:
        fig.suptitle(title, fontsize=11)
    if folder is not None:
        save_figure(fig, folder, name, caption=LAYERS_CAPTION)
    return fig


@styled
def plot_word_contexts(vectors: np.ndarray, senses: Sequence[str], *, word: str = "", layer: str = "",
                       ax: Any = None) -> Figure:
    """PCA (2 components, fitted on these rows) of one word's contextual vectors, coloured by sense."""
    if ax is None:
        fig, ax = subplots(figsize=(4.5, 4))
    fig = ax.figure
    v = np.asarray(vectors, dtype=np.float64)
    xy = PCA(n_components=2).fit_transform(v - v.mean(axis=0)) if len(v) >= 3 else np.zeros((len(v), 2))
    names = list(dict.fromkeys(senses))
    colours = palette(len(names))
    for name, colour in zip(names, colours, strict=True):
        rows = [i for i, s in enumerate(senses) if s == name]
        ax.scatter(xy[rows, 0], xy[rows, 1], color=colour, s=36, label=name, edgecolor="white", lw=0.5)
    ax.set_title(f"'{word}' in context, layer {layer}" if word else f"layer {layer}", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(fontsize=7, loc="best")
    return fig


@styled
def word_contexts_figure(vectors: np.ndarray, words: Sequence[str], senses: Sequence[str], chosen: Sequence[str],
                         folder: str | Path | None = None, *, layer: str = "", title: str = "",
                         name: str = "context_pca") -> Figure:
    """A PCA panel per chosen word (its contextual vectors at ``layer``, coloured by sense)."""
    n = len(chosen)
    cols = min(n, 3)
    rows_n = (n + cols - 1) // cols
    fig, axes = subplots(rows_n, cols, figsize=(4.3 * cols, 3.9 * rows_n), squeeze=False)
    words = np.asarray(words)
    senses = np.asarray(senses)
    for ax, word in zip(axes.ravel(), chosen, strict=False):
        keep = words == word
        plot_word_contexts(np.asarray(vectors)[keep], list(senses[keep]), word=word, layer=layer, ax=ax)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    if folder is not None:
        save_figure(fig, folder, name, caption=WORDS_CAPTION)
    return fig
