"""Pictures of a labelled space: PCA and UMAP panels of concept words with polysemous words joined to senses.

UMAP runs with the cosine metric on the first <= 50 principal components (seeded; the seed is recorded in
the figure title and the returned info). Sense centroids are drawn at the mean 2-D position of the sense
concept's words in each panel (for PCA this equals the projected centroid, since PCA is linear).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from sklearn.decomposition import PCA

from mcicl.core.plotting import Caption, palette, styled, subplots
from mcicl.core.vectors import LabelledVectors

log = logging.getLogger("mcicl")


@dataclass
class EmbeddingLayout:
    """2-D coordinates of concept words (and polysemous words) in the PCA and UMAP panels."""

    pca: np.ndarray
    pca_variance: tuple[float, float]
    umap: np.ndarray | None
    n_words: int
    seed: int
    info: dict[str, Any] = field(default_factory=dict)


def select_concepts(words: LabelledVectors, polysemy: LabelledVectors | None, max_concepts: int) -> list[str]:
    """Up to ``max_concepts`` concept names, senses of the polysemous words first, then the largest concepts."""
    names, counts = np.unique(words.labels, return_counts=True)
    present = set(names)
    chosen: list[str] = []
    if polysemy is not None:
        for label in polysemy.labels:
            for sense in label.split("|"):
                if sense in present and sense not in chosen and len(chosen) < max_concepts:
                    chosen.append(sense)
    for name in names[np.argsort(-counts, kind="stable")]:
        if len(chosen) >= max_concepts:
            break
        if name not in chosen:
            chosen.append(str(name))
    return chosen


def layout(words: LabelledVectors, polysemy: LabelledVectors | None = None, *, seed: int = 0,
           use_umap: bool = True, n_pca: int = 50, n_neighbors: int = 15) -> EmbeddingLayout:
    """PCA (2 components) and UMAP (cosine metric on <= ``n_pca`` PCs, seeded) coordinates of all words."""

    x = np.asarray(words.vectors, dtype=np.float64)
    if polysemy is not None and len(polysemy.vectors):
        x = np.vstack([x, np.asarray(polysemy.vectors, dtype=np.float64)])
    if len(x) < 4:
        raise ValueError(f"an embedding plot needs at least 4 words; got {len(x)}")
    pca2 = PCA(n_components=2, random_state=seed).fit(x)
    coords = pca2.transform(x)
    umap_coords = None
    n_comp = int(min(n_pca, x.shape[1], len(x) - 1))
    if use_umap:
        import umap  # deferred: importing umap compiles numba code for seconds; only UMAP panels need it

        reduced = PCA(n_components=n_comp, random_state=seed).fit_transform(x)
        with warnings.catch_warnings():  # "n_jobs overridden by setting random_state": seeding is the point
            warnings.simplefilter("ignore", UserWarning)
            reducer = umap.UMAP(n_components=2, metric="cosine", random_state=seed,
                                n_neighbors=int(min(n_neighbors, len(x) - 1)), min_dist=0.1)
            umap_coords = reducer.fit_transform(reduced)
    return EmbeddingLayout(coords, tuple(float(v) for v in pca2.explained_variance_ratio_), umap_coords,
                           len(words.vectors), seed,
                           {"umap_metric": "cosine", "umap_pca_components": n_comp, "umap_seed": seed,
                            "umap_n_neighbors": int(min(n_neighbors, len(x) - 1)), "umap": use_umap})


EMBEDDING_CAPTION = Caption(
    "Concept words: UMAP and PCA",
    "Each dot is a concept word, coloured by concept. Left: PCA (first two components, with the share of "
    "variance each explains); right: UMAP (cosine metric after PCA; seed in the title). Black stars are "
    "polysemous words, joined by thin lines to the centroids of their senses: a word carrying two concepts "
    "sits between them. UMAP distances are only locally meaningful.")


@styled
def embedding_figure(words: LabelledVectors, *, polysemy: LabelledVectors | None = None, seed: int = 0,
                     use_umap: bool = True, max_concepts: int = 12, max_polysemous: int = 12, title: str = "",
                     axes: Sequence[Axes] | None = None) -> tuple[Figure, dict]:
    """The PCA | UMAP figure of concept words; returns (figure, info incl. the UMAP seed and words shown).

    ``axes``: one Axes per panel (PCA, then UMAP when ``use_umap``); new ones by default."""

    keep_concepts = select_concepts(words, polysemy, max_concepts)
    mask = np.isin(words.labels, keep_concepts)
    sub = LabelledVectors(words.vectors[mask], words.words[mask], words.labels[mask])
    poly = None
    if polysemy is not None and len(polysemy.vectors):
        ok_all = [i for i, lab in enumerate(polysemy.labels) if sum(s in keep_concepts for s in lab.split("|")) >= 2]
        # Round robin over sense combinations, so the words shown cover many concept pairs, not one.
        by_label: dict[str, list[int]] = {}
        for i in ok_all:
            by_label.setdefault(str(polysemy.labels[i]), []).append(i)
        ok = [grp[r] for r in range(max((len(g) for g in by_label.values()), default=0))
              for grp in by_label.values() if r < len(grp)][:max_polysemous]
        if ok:
            poly = LabelledVectors(polysemy.vectors[ok], polysemy.words[ok], polysemy.labels[ok])
    lay = layout(sub, poly, seed=seed, use_umap=use_umap)
    panels = [("PCA", lay.pca)] + ([("UMAP", lay.umap)] if lay.umap is not None else [])
    colours = dict(zip(keep_concepts, palette(len(keep_concepts)), strict=True))
    if axes is None:
        fig, grid = subplots(1, len(panels), figsize=(6.2 * len(panels) + 2.2, 5.6), squeeze=False)
        axes = list(grid[0])
    elif len(axes) != len(panels):
        raise ValueError(f"axes: {len(axes)} given; accepted: {len(panels)} Axes (PCA"
                         + (", UMAP)" if len(panels) == 2 else ")"))
    fig = axes[0].figure
    n = lay.n_words
    for ax, (panel, xy) in zip(axes, panels, strict=True):
        centroids = {}
        for concept in keep_concepts:
            pts = xy[:n][sub.labels == concept]
            ax.scatter(pts[:, 0], pts[:, 1], s=16, color=colours[concept], alpha=0.75, label=concept,
                       edgecolors="none")
            centroids[concept] = pts.mean(axis=0)
        if poly is not None:
            for (px, py), word, lab in zip(xy[n:], poly.words, poly.labels, strict=True):
                for sense in lab.split("|"):
                    if sense in centroids:
                        cx, cy = centroids[sense]
                        ax.plot([px, cx], [py, cy], color=colours[sense], lw=0.8, alpha=0.8, zorder=2)
                ax.annotate(word, (px, py), xytext=(3, 3), textcoords="offset points", fontsize=7)
            ax.scatter(xy[n:, 0], xy[n:, 1], marker="*", s=90, color="black", zorder=3,
                       label="polysemous word")
        for concept, (cx, cy) in centroids.items():
            ax.scatter([cx], [cy], marker="X", s=60, color=colours[concept], edgecolors="black", linewidths=0.6,
                       zorder=4)
        if panel == "PCA":
            ax.set_xlabel(f"PC 1 ({100 * lay.pca_variance[0]:.1f}% of variance)")
            ax.set_ylabel(f"PC 2 ({100 * lay.pca_variance[1]:.1f}% of variance)")
            ax.set_title("PCA of concept words")
        else:
            ax.set_xlabel("UMAP 1 (arbitrary units)")
            ax.set_ylabel("UMAP 2 (arbitrary units)")
            ax.set_title(f"UMAP (cosine, on {lay.info['umap_pca_components']} PCs, seed {seed})")
    handles, labels = axes[0].get_legend_handles_labels()
    handles.append(Line2D([], [], marker="X", ls="", color="grey", markeredgecolor="black"))
    labels.append("concept centroid")
    # Outside the last panel, so it never hides points.
    axes[-1].legend(handles, labels, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8,
                       title="concept", ncol=1 if len(labels) <= 16 else 2)
    fig.suptitle(title or f"Concept words ({len(sub.vectors)} words, {len(keep_concepts)} concepts"
                          + (f", {len(poly.vectors)} polysemous" if poly is not None else "") + ")")
    info = {**lay.info, "concepts": keep_concepts, "n_words": int(len(sub.vectors)),
            "n_polysemous": 0 if poly is None else int(len(poly.vectors))}
    return fig, info
