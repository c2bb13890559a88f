"""The figure and per-layer table of an extraction (``mcicl probe extract``'s overview), apart from the extraction
code: plain numpy and matplotlib, no model code."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from mcicl.core.plotting import Caption, palette, styled, subplots


def layer_stats(extraction: Any) -> list[dict[str, Any]]:
    """Per layer: mean vector norm and anisotropy (mean cosine between distinct words; 0 when isotropic)."""
    rows = []
    for layer in extraction.layers:
        x = extraction.vectors[layer].astype(np.float64)
        norms = np.linalg.norm(x, axis=1)
        n = len(x)
        unit = x / np.maximum(norms, 1e-12)[:, None]
        # Mean off-diagonal cosine in O(n d): (|sum of unit vectors|^2 - n) / (n (n - 1)).
        aniso = float((np.sum(unit.sum(0) ** 2) - n) / (n * (n - 1))) if n > 1 else float("nan")
        rows.append({"layer": layer, "n_words": n, "dim": x.shape[1], "mean_norm": float(norms.mean()) if n else 0.0,
                     "mean_pairwise_cosine": aniso})
    return rows


def overview_title(meta: dict[str, Any]) -> str:
    """The overview figure's title: model (random weights tagged), space, template, pooling."""
    tag = " (random weights)" if meta.get("random_weights") else ""
    name = meta.get("model_name", meta["model"])
    return f"{name}{tag}: {meta['space']} space, template {meta['template']!r}, {meta['pooling']} pooling"


OVERVIEW_CAPTION = Caption(
    "Extracted vectors per layer",
    "Anisotropy (mean cosine between distinct words; 0 = isotropic) and mean vector norm per layer, and how many "
    "of the word's own tokens each word has (multi-token words are mean- or last-pooled).")


@styled
def overview_figure(rows: list[dict[str, Any]], n_tokens: list[int], *, title: str = "",
                    axes: Sequence[Axes] | None = None) -> Figure:
    """Anisotropy and mean norm per layer, and the number of tokens per word, on three Axes (new by default)."""
    colours = palette(3)
    if axes is None:
        fig, axes = subplots(1, 3, figsize=(12, 3.8))
    elif len(axes) != 3:
        raise ValueError(f"axes: {len(axes)} given; accepted: three matplotlib Axes")
    ax1, ax2, ax3 = axes
    fig = ax1.figure
    layers = [str(r["layer"]) for r in rows]
    xs = np.arange(len(rows))
    xlabel = "layer (0 = embedding output)" if layers[0].isdigit() else "space"
    ax1.plot(xs, [r["mean_pairwise_cosine"] for r in rows], "o-", color=colours[0])
    ax1.axhline(0, color="0.5", lw=0.8)
    ax1.set(xticks=xs, xticklabels=layers, xlabel=xlabel, ylabel="mean cosine between distinct words",
            title="Anisotropy per layer (0 = isotropic)")
    ax2.plot(xs, [r["mean_norm"] for r in rows], "s-", color=colours[1])
    ax2.set(xticks=xs, xticklabels=layers, xlabel=xlabel, ylabel="mean L2 norm of word vectors",
            title="Vector norm per layer")
    counts = np.bincount(np.asarray(n_tokens, dtype=int)) if n_tokens else np.zeros(2, dtype=int)
    ks = np.arange(len(counts))[1:]
    bars = ax3.bar(ks, counts[1:], color=colours[2])
    ax3.bar_label(bars, fontsize=8)
    ax3.set(xticks=ks, xlabel="tokens per word (the word's own tokens)", ylabel="number of words",
            title=f"Tokenization of {len(n_tokens)} words")
    ax3.margins(y=0.12)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
