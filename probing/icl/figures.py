"""ICL figures, made from a saved summary.json alone (re-plot a run without re-scoring it).

Each function draws on an optional Axes and returns the Figure; its caption stands beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from mcicl.core.plotting import Caption, on_axes, palette, styled
from mcicl.probing.icl.tasks import CONDITIONS


def _colours(n: int) -> list[str]:
    """The house palette without its yellow, which is too pale for thin lines on white."""
    return [c for c in palette(n + 1) if c != "#F0E442"][:n]


ACCURACY_CAPTION = Caption(
    "ICL accuracy vs number of demonstrations",
    "ICL accuracy of the run's readout (in-prompt, attention vote, static kernel or LM-scored) against shots, one "
    "line per condition, with cluster-bootstrap 95% intervals (episodes, query words, query concepts); the dashed "
    "line is chance. Polysemous queries next to in-distribution queries show whether "
    "the right sense is picked from context.")


@styled
def accuracy_figure(summary: Mapping[str, Any], *, ax: Axes | None = None) -> Figure:
    """Accuracy against shots, one line per condition with bootstrap 95% intervals, chance and majority baseline."""

    acc = summary["accuracy"]
    shots = sorted({int(s) for cells in acc.values() for s in cells})
    xpos = {s: i for i, s in enumerate(shots)}  # shots are spaced evenly (0, 1, 2, 4, 8, ...)
    conditions = [c for c in CONDITIONS if c in acc]
    colours = dict(zip(conditions, _colours(len(conditions)), strict=True))
    markers = dict(zip(conditions, "osD^vP*Xph", strict=False))
    fig, ax = on_axes(ax, figsize=(7.8, 4.4))
    width = 0.3  # spread of the per-condition offsets, so intervals do not hide each other
    for k, cond in enumerate(conditions):
        cells = sorted(acc[cond].items(), key=lambda kv: int(kv[0]))
        offset = (k - (len(conditions) - 1) / 2) * width / max(1, len(conditions) - 1)
        x = [xpos[int(s)] + offset for s, _ in cells]
        y = [c["mean"] for _, c in cells]
        err = [[c["mean"] - c["ci_low"] for _, c in cells], [c["ci_high"] - c["mean"] for _, c in cells]]
        ax.errorbar(x, y, yerr=err, color=colours[cond], marker=markers[cond], ms=8 if len(cells) == 1 else 5,
                    lw=1.5, capsize=2.5, label=cond.replace("_", " "))
    ax.axhline(summary["chance"], color="0.3", ls="--", lw=1, label=f"chance ({summary['chance']:.2f})")
    majority = summary.get("majority_label", {}).get("in_distribution")
    if majority:
        cells = sorted(majority.items(), key=lambda kv: int(kv[0]))
        ax.plot([xpos[int(s)] for s, _ in cells], [c["mean"] for _, c in cells], color="0.55", ls=":", lw=1.5,
                label="majority-label baseline")
    ax.set_xticks(range(len(shots)), [str(s) for s in shots])
    ax.set_xlabel("demonstrations in the prompt (shots)")
    ax.set_ylabel("accuracy (fraction correct)")
    ax.set_ylim(-0.02, 1.02)
    readout = summary.get("readout", "?")
    how = {"lm": "label log-prob (causal LM)", "attention_vote": "attention vote of the chosen heads"}.get(
        readout, f"{readout} readout" + (f", beta={summary['beta']['best']:g}" if "beta" in summary else ""))
    weights = " [RANDOM WEIGHTS]" if summary.get("random_weights") else ""
    ax.set_title(f"ICL accuracy vs shots: {summary.get('model', '?')}{weights}\n{how}, "
                 f"{summary.get('ways', 2)}-way, set '{summary.get('concept_set', '?')}';"
                 " bars: cluster-bootstrap 95% CI")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9)
    return fig


BETA_CAPTION = Caption(
    "Kernel-readout temperature",
    "ICL accuracy of the kernel readout softmax(beta * cos(query, demonstration)) against beta on the evaluated "
    "episodes, per condition at its largest shots; the marked beta was chosen on held-out episodes (the median of "
    "the betas within one standard error of the best) and is used for every condition.")


@styled
def beta_sweep_figure(rows: list[Mapping[str, Any]], *, best: float | None = None, ax: Axes | None = None) -> Figure:
    """Kernel-readout accuracy against beta, one line per condition, at the largest shots of each condition."""

    conditions = [c for c in CONDITIONS if any(r["condition"] == c for r in rows)]
    colours = dict(zip(conditions, _colours(len(conditions)), strict=True))
    fig, ax = on_axes(ax, figsize=(7.2, 4.2))
    for cond in conditions:
        top = max(int(r["shots"]) for r in rows if r["condition"] == cond)
        cells = sorted((float(r["beta"]), float(r["accuracy"])) for r in rows
                       if r["condition"] == cond and int(r["shots"]) == top)
        ax.plot([b for b, _ in cells], [a for _, a in cells], marker="o", ms=4, color=colours[cond],
                label=f"{cond.replace('_', ' ')} ({top} shots)")
    if best is not None:
        ax.axvline(best, color="0.3", ls="--", lw=1, label=f"beta chosen on held-out episodes ({best:g})")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(0, max(float(r["beta"]) for r in rows) * 1.15 or 1.0)
    ax.set_xlabel("beta (inverse temperature of softmax(beta * cos))")
    ax.set_ylabel("accuracy (fraction correct)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{rows[0].get('readout', 'kernel')} readout: accuracy vs beta, per condition")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9)
    return fig
