"""The steering dose-response figure, drawn from steering.csv's rows (a run can be re-plotted without the model)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

from mcicl.core.io import cell_float
from mcicl.core.plotting import palette, styled, subplots

KIND_STYLE = {"sense": ("sense A - sense B", 0, "-"), "random": ("random (same norm)", 1, "--"),
              "unrelated": ("unrelated concept pair", 2, ":")}


@styled
def dose_response_figure(table: Sequence[dict[str, Any]], title: str = "") -> Figure:
    """Rate toward the target sense against alpha, one panel per layer, one line (with its 95% band) per direction
    kind; the dashed grey line is 0.5 (no effect)."""
    layers = sorted({int(cell_float(r["layer"])) for r in table})
    cols = min(4, len(layers))
    rows = math.ceil(len(layers) / cols)
    fig, axes = subplots(rows, cols, figsize=(3.1 * cols, 2.7 * rows), squeeze=False, sharey=True)
    colours = palette(3)
    alphas = sorted({cell_float(r["alpha"]) for r in table})
    for i, layer in enumerate(layers):
        ax = axes[i // cols][i % cols]
        for kind, (label, c, ls) in KIND_STYLE.items():
            rs = sorted((r for r in table if int(cell_float(r["layer"])) == layer and r["kind"] == kind),
                        key=lambda r: cell_float(r["alpha"]))
            if not rs:
                continue
            x = [cell_float(r["alpha"]) for r in rs]
            ax.plot(x, [cell_float(r["rate_toward_target"]) for r in rs], ls, marker="o", ms=3, color=colours[c],
                    label=label)
            ax.fill_between(x, [cell_float(r["ci_low"]) for r in rs], [cell_float(r["ci_high"]) for r in rs],
                            color=colours[c], alpha=0.18, lw=0)
        ax.axhline(0.5, color="grey", ls="--", lw=0.8)
        ax.set_xscale("symlog", linthresh=max(min((a for a in alphas if a > 0), default=1.0), 1e-3))
        ax.set_xticks(alphas)
        ax.set_xticklabels([f"{a:g}" for a in alphas], fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"layer {layer}")
        if i % cols == 0:
            ax.set_ylabel("rate toward target sense")
        if i // cols == rows - 1:
            ax.set_xlabel("alpha (x median query-state norm)")
    for j in range(len(layers), rows * cols):
        axes[j // cols][j % cols].set_visible(False)
    axes[0][0].legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
