"""Shared figure conventions: a colour-blind-safe palette, one style, PNG + PDF saving.

Figures are ``matplotlib.figure.Figure`` objects made without pyplot, so mcicl never chooses a backend,
never leaves figures open in pyplot's registry and never changes the caller's ``rcParams``: its style is
applied inside :func:`styled` only. In Jupyter a returned figure displays inline as usual.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image, UnidentifiedImageError

F = TypeVar("F", bound=Callable[..., Any])

# Okabe & Ito (2008) colour-blind-safe palette, then Paul Tol's muted scheme for more categories.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
TOL_MUTED = ("#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255",
             "#AA4499", "#DDDDDD")
SEQUENTIAL_CMAP = "viridis"
DIVERGING_CMAP = "RdBu_r"

STYLE = {
    "figure.dpi": 110, "savefig.dpi": 150, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
    "axes.spines.right": False, "legend.frameon": False, "font.size": 10, "axes.titlesize": 11,
}


def styled(func: F) -> F:
    """Run a figure-making function under mcicl's style, restoring the caller's rcParams afterwards."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with matplotlib.rc_context(STYLE):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def subplots(nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Figure, Any]:
    """``(figure, axes)`` like ``plt.subplots``, on a pyplot-free Figure (no backend, no global state)."""
    fig_kw = {k: kwargs.pop(k) for k in ("figsize", "dpi", "layout") if k in kwargs}
    with matplotlib.rc_context(STYLE):
        fig = Figure(**fig_kw)
        axes = fig.subplots(nrows, ncols, **kwargs)
    return fig, axes


def on_axes(ax: Axes | None, **subplots_kw: Any) -> tuple[Figure, Axes]:
    """``(figure, ax)``: the caller's Axes and its figure, or a new single-Axes figure made with ``subplots_kw``."""
    if ax is not None:
        return ax.figure, ax
    return subplots(**subplots_kw)


@dataclass(frozen=True)
class Caption:
    """What a figure shows and how to read it; saved inside the PNG/PDF so a report needs nothing else."""

    title: str
    text: str


def palette(n: int) -> list[str]:
    """``n`` distinguishable colour-blind-safe colours (cycling past 18)."""
    base = list(OKABE_ITO) + list(TOL_MUTED)
    return [base[i % len(base)] for i in range(n)]


def save_figure(fig: Figure, folder: str | Path, name: str, formats: Sequence[str] = ("png", "pdf"), *,
                caption: Caption | None = None) -> Path:
    """Save ``fig`` as ``folder/name.png`` (and .pdf), its caption in the files' metadata; return the PNG path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(STYLE):
        fig.tight_layout()
        for fmt in formats:
            meta = None
            if caption is not None and fmt == "png":
                meta = {"Title": caption.title, "Description": caption.text}
            elif caption is not None and fmt == "pdf":
                meta = {"Title": caption.title, "Subject": caption.text}
            fig.savefig(folder / f"{name}.{fmt}", bbox_inches="tight", metadata=meta)
    return folder / f"{name}.{formats[0]}"


def read_caption(png: str | Path) -> Caption | None:
    """The caption :func:`save_figure` stored in a PNG, or None when it has none."""
    try:
        with Image.open(png) as image:
            text = getattr(image, "text", {}) or {}
    except (OSError, UnidentifiedImageError):  # not a readable PNG: the report shows it with a generic caption
        return None
    if "Title" in text and "Description" in text:
        return Caption(text["Title"], text["Description"])
    return None
