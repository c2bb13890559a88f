"""Shared figure conventions: a colour-blind-safe palette, one style, PNG + PDF saving.

Every figure in mcicl is made by a function of saved results that calls :func:`save_figure`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files
import matplotlib.pyplot as plt  # noqa: E402

# Okabe & Ito (2008) colour-blind-safe palette, then Paul Tol's muted scheme for more categories.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
TOL_MUTED = ("#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255",
             "#AA4499", "#DDDDDD")
SEQUENTIAL_CMAP = "viridis"
DIVERGING_CMAP = "RdBu_r"

plt.rcParams.update({
    "figure.dpi": 110, "savefig.dpi": 150, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
    "axes.spines.right": False, "legend.frameon": False, "font.size": 10, "axes.titlesize": 11,
})


def palette(n: int) -> list[str]:
    """``n`` distinguishable colour-blind-safe colours (cycling past 18)."""
    base = list(OKABE_ITO) + list(TOL_MUTED)
    return [base[i % len(base)] for i in range(n)]


def save_figure(fig: plt.Figure, folder: str | Path, name: str, formats: Sequence[str] = ("png", "pdf")) -> Path:
    """Save ``fig`` as ``folder/name.png`` (and .pdf), close it, and return the PNG path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    for fmt in formats:
        fig.savefig(folder / f"{name}.{fmt}", bbox_inches="tight")
    plt.close(fig)
    return folder / f"{name}.{formats[0]}"
