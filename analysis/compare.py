"""Synthetic vs real geometry: the same statistics, by the same engine, on every space of both worlds.

Spaces: the synthetic dictionary (ground truth: one row per mu_k^+ and mu_k^-; its polysemous words are the
noiseless sums mu_k^s + mu_j^t), the synthetic sampled words (``features.npz``), the synthetic model's learned
spaces (the sampled words through the trained W_Q and W_K), and each real model space saved by
``mcicl probe geometry`` (``vectors/<layer>.npz``: input embeddings, each layer). Each space is measured twice:
``raw`` (cosines as they are, the synthetic generator's own geometry, so the dictionary's values equal the
configured ``within_cosine`` and ``cross_overlap``) and ``centred`` (the space's mean removed, which takes
out the common offset of anisotropic real spaces).

Statistics (all from :mod:`analysis.geometry` and :mod:`analysis.polysemy`): within-concept cosine,
cross-concept cosine, concept-direction |cos|, principal angles between concept subspaces (cosine of the
smallest angle) and polysemous-word sense cosines, each with its null.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from mcicl.analysis.compare_config import CompareConfig
from mcicl.analysis.engine.embedding_plots import EMBEDDING_CAPTION, embedding_figure
from mcicl.analysis.engine.geometry_figures import HEATMAP_CAPTION, direction_heatmap_figure
from mcicl.analysis.engine.measures import concept_directions, direction_abs_cos, geometry_summary, prepare
from mcicl.analysis.engine.polysemy import polysemy_analysis
from mcicl.analysis.matched import estimate_parameters, load_icl_summary, run_matched
from mcicl.analysis.ood_map import OOD_MAP_CAPTION, MapPoint, ood_map_figure, read_sweep
from mcicl.core.configuration import load_config
from mcicl.core.io import cell_float, read_json
from mcicl.core.jobs import DemoContext, JobContext
from mcicl.core.logs import progress
from mcicl.core.plotting import Caption, palette, save_figure, styled, subplots
from mcicl.core.runs import RunFolder, require_run
from mcicl.core.seeding import seed_everything
from mcicl.core.vectors import LabelledVectors, Space
from mcicl.synthetic.cells import mixed_set
from mcicl.synthetic.checkpoints import latest_checkpoint, load_weights
from mcicl.synthetic.config import SyntheticConfig
from mcicl.synthetic.export import DICTIONARY, FEATURES, POLYSEMY, feature_sets, learned_vectors, through
from mcicl.synthetic.metrics import mixed_concept_metrics
from mcicl.synthetic.sweep import run_sweep
from mcicl.synthetic.train import TrainResult, build_model, build_world

log = logging.getLogger("mcicl")

# statistic name -> (label in tables and figures, the engine's key)
STATISTICS = {
    "within_concept_cosine": "within-concept cosine",
    "cross_concept_cosine": "cross-concept cosine",
    "concept_direction_abs_cos": "concept-direction |cos|",
    "subspace_max_cos": "principal angles: cos(smallest angle)",
    "polysemous_sense_cosine": "polysemous-word sense cosine",
}
GEOMETRIES = ("raw", "centred")
MATCHED_SEEDS = 3  # the matched world and its control worlds train at least this many seeds
COLUMNS = ("space", "world", "geometry", "statistic", "value", "null", "null_low", "null_high", "p_value",
           "ci_low", "ci_high", "n", "isotropic", "note")


# ------------------------------------------------------------------------------------------------ spaces


def _dictionary_polysemy(dictionary: LabelledVectors) -> LabelledVectors:
    """Ground-truth polysemous features: mu_k^s + mu_j^t for every concept pair k < j and sign pair."""
    names = list(dict.fromkeys(dictionary.labels.tolist()))
    rows, words, labels = [], [], []
    for i, k in enumerate(names):
        for j in names[i + 1:]:
            for a in np.flatnonzero(dictionary.labels == k):
                for b in np.flatnonzero(dictionary.labels == j):
                    rows.append(dictionary.vectors[a] + dictionary.vectors[b])
                    words.append(f"{dictionary.words[a]}+{dictionary.words[b]}")
                    labels.append(f"{k}|{j}")
    return LabelledVectors(np.array(rows), words, labels, meta={"space": "dictionary sums"})


def _spaces(dictionary: LabelledVectors, words: LabelledVectors, poly: LabelledVectors | None,
            learned: dict[str, tuple[LabelledVectors, LabelledVectors | None]]) -> list[Space]:
    """The synthetic spaces: dictionary, sampled words and each learned map of them."""
    spaces = [Space("synthetic dictionary", dictionary, "synthetic", _dictionary_polysemy(dictionary)),
              Space("synthetic words", words, "synthetic", poly)]
    spaces += [Space(f"synthetic learned {label}", mapped, "synthetic", mapped_poly)
               for label, (mapped, mapped_poly) in learned.items()]
    return spaces


LEARNED = (("query", "W_Q x"), ("key", "W_K x"))


def synthetic_spaces(run_dir: str | Path, *, learned: bool = True) -> list[Space]:
    """A synthetic train run folder's spaces: dictionary, sampled words, and (``learned``) the W_Q and W_K spaces."""

    run_dir = Path(run_dir)
    for name in (DICTIONARY, FEATURES):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir / name} not found: synthetic_dir must be a `mcicl synthetic train` "
                                    "run folder")
    dictionary = LabelledVectors.load(run_dir / DICTIONARY)
    words = LabelledVectors.load(run_dir / FEATURES)
    poly = LabelledVectors.load(run_dir / POLYSEMY) if (run_dir / POLYSEMY).is_file() else None
    maps = {}
    if learned and (run_dir / "checkpoints").is_dir():
        maps = {label: (learned_vectors(run_dir, which), learned_vectors(run_dir, which, words=POLYSEMY)
                        if poly is not None else None) for which, label in LEARNED}
    return _spaces(dictionary, words, poly, maps)


def synthetic_spaces_of(result: TrainResult, *, learned: bool = True, seed_index: int = 0) -> list[Space]:
    """The same spaces as :func:`synthetic_spaces`, from a training result in memory (seed ``seed_index``)."""
    sets = feature_sets(result.config, result.world.dictionary)
    words, poly = sets["features"], sets.get("polysemy")
    maps = {}
    if learned:
        for which, label in LEARNED:
            W = (result.model.W_Q if which == "query" else result.model.W_K)[seed_index].detach().double().numpy()
            maps[label] = (through(words, W, which), through(poly, W, which) if poly is not None else None)
    return _spaces(sets["dictionary"], words, poly, maps)


def _layer_key(path: Path) -> tuple[int, str]:
    """Sort layer files: input/embeddings first, then by the first number in the name, then by name."""
    stem = path.name.removesuffix(".npz")
    if stem in ("input", "embeddings", "embed", "unembed"):
        return (-1 if stem != "unembed" else 10**6, stem)
    match = re.search(r"\d+", stem)
    return (int(match.group()) if match else 10**5, stem)


def real_spaces(run_dir: str | Path, *, layers: Sequence[str] | None = None, model: str | None = None) -> list[Space]:
    """The spaces a ``probe geometry`` run saved (``vectors/<layer>.npz`` + ``<layer>.polysemy.npz``)."""
    run_dir = Path(run_dir)
    folder = run_dir / "vectors"
    # <layer>.npz only: siblings such as <layer>.polysemy.npz carry a second suffix.
    files = sorted((p for p in folder.glob("*.npz") if "." not in p.name.removesuffix(".npz")), key=_layer_key) \
        if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no vectors/<layer>.npz in {run_dir}: real_dir must be a `mcicl probe geometry` "
                                "run folder")
    if layers is not None:
        wanted = {str(x) for x in layers}
        files = [p for p in files if p.name.removesuffix(".npz") in wanted]
        if not files:
            raise ValueError(f"layers {sorted(wanted)} not in {folder}; available: "
                             + ", ".join(p.name.removesuffix(".npz") for p in sorted(folder.glob("*.npz"))))
    if model is None and (run_dir / "summary.json").is_file():
        summary = read_json(run_dir / "summary.json")
        model = next((summary[k] for k in ("source", "model") if isinstance(summary.get(k), str)), None)
    model = (model or "real").removesuffix(" (default)")
    spaces = []
    for path in files:
        stem = path.name.removesuffix(".npz")
        poly_path = folder / f"{stem}.polysemy.npz"
        poly = LabelledVectors.load(poly_path) if poly_path.is_file() else None
        label = f"layer {stem}" if stem.isdigit() else stem
        spaces.append(Space(f"{model} {label}", LabelledVectors.load(path), "real", poly))
    return spaces


# -------------------------------------------------------------------------------------------- statistics


def _polysemy_row(space: Space, centre: bool) -> dict[str, Any]:
    """The sense-cosine row of a space (mean cosine of polysemous words with their senses' centroids)."""

    row: dict[str, Any] = {"statistic": "polysemous_sense_cosine"}
    poly = space.polysemy
    if poly is None or not len(poly.vectors):
        return {**row, "value": math.nan, "note": "no polysemous words saved for this space"}
    present = set(space.concepts.labels.tolist())
    keep = [i for i, lab in enumerate(poly.labels) if all(s in present for s in lab.split("|"))]
    if not keep:
        return {**row, "value": math.nan, "note": "no polysemous word whose senses are all concepts of the set"}
    result = polysemy_analysis(space.concepts.vectors, space.concepts.labels, poly.vectors[keep], poly.words[keep],
                               poly.labels[keep], words=space.concepts.words, center_vectors=centre)
    s = result.summary
    return {**row, "value": s["mean_sense_cos"], "null": s["mean_sense_null"], "n": s["n_words"],
            "note": f"{100 * s['fraction_senses_significant']:.0f}% of senses above the other-concept null "
                    f"(p < 0.05); sparse decomposition recall {s['mean_recall']:.2f}"}


def space_rows(space: Space, geometry: str = "raw", *, n_permutations: int = 100, n_bootstrap: int = 200,
               seed: int = 0) -> list[dict[str, Any]]:
    """One row per statistic of STATISTICS for one space in one geometry (raw or centred)."""

    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry={geometry!r}; accepted: {', '.join(GEOMETRIES)}")
    centre = geometry == "centred"
    stats = geometry_summary(space.concepts.vectors, space.concepts.labels, n_permutations=n_permutations,
                             n_bootstrap=n_bootstrap, n_shuffles=5, seed=seed, center_vectors=centre, lda=False,
                             expensive_permutations=n_permutations)
    base = {"space": space.name, "world": space.world, "geometry": geometry}
    rows = []
    for name in STATISTICS:
        if name == "polysemous_sense_cosine":
            rows.append({**base, **_polysemy_row(space, centre)})
            continue
        st = stats[name]
        rows.append({**base, "statistic": name, "value": st.value, "null": st.null_mean, "null_low": st.null_low,
                     "null_high": st.null_high, "p_value": st.p_value, "ci_low": st.ci_low, "ci_high": st.ci_high,
                     "n": st.n, "isotropic": st.isotropic, "note": ""})
    return [{c: r.get(c, "") for c in COLUMNS} for r in rows]


def compare_spaces(spaces: Sequence[Space], geometries: Sequence[str] = GEOMETRIES, *, n_permutations: int = 100,
                   n_bootstrap: int = 200, seed: int = 0) -> list[dict[str, Any]]:
    """The comparison table: every statistic for every space and geometry."""
    rows = []
    jobs = [(s, g) for s in spaces for g in geometries]
    for space, geometry in progress(jobs, desc="geometry of each space"):
        rows += space_rows(space, geometry, n_permutations=n_permutations, n_bootstrap=n_bootstrap, seed=seed)
    return rows


def markdown_table(rows: Sequence[Mapping[str, Any]], geometry: str = "raw") -> str:
    """A wide Markdown table: one row per space, one column per statistic, 'value (null)' in each cell."""
    spaces = list(dict.fromkeys(r["space"] for r in rows if r["geometry"] == geometry))
    cell = {(r["space"], r["statistic"]): r for r in rows if r["geometry"] == geometry}

    def fmt(r: Mapping[str, Any] | None) -> str:
        if r is None or r["value"] == "" or not math.isfinite(float(r["value"])):
            return "n/a"
        null = r.get("null")
        return f"{float(r['value']):.3f}" + (f" ({float(null):.3f})" if null not in ("", None) else "")

    lines = ["| space | " + " | ".join(STATISTICS.values()) + " |", "|---|" + "---|" * len(STATISTICS)]
    lines += ["| " + s + " | " + " | ".join(fmt(cell.get((s, st))) for st in STATISTICS) + " |" for s in spaces]
    return "\n".join(lines)


COMPARISON_CAPTION = Caption(
    "Synthetic vs real geometry",
    "Each statistic (panel) in every space (bar): the synthetic dictionary, synthetic sampled words, the "
    "synthetic model's learned query/key spaces, and the real model's input embeddings and layers. Black "
    "ticks are the permutation null (labels shuffled). The paper's premise holds where within-concept cosine "
    "clearly exceeds its null and cross-concept cosine and direction |cos| stay near theirs.")


@styled
def comparison_figure(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """One panel per statistic: a bar per space (raw and centred side by side) with the null as a black tick.

    A grid of panels, so it draws its own figure (no ``ax``)."""

    spaces = list(dict.fromkeys(r["space"] for r in rows))
    geometries = [g for g in GEOMETRIES if any(r["geometry"] == g for r in rows)]
    cell = {(r["space"], r["geometry"], r["statistic"]): r for r in rows}
    colours = dict(zip(geometries, palette(len(geometries)), strict=True))
    ncols = 3
    nrows = math.ceil(len(STATISTICS) / ncols)
    fig, axes = subplots(nrows, ncols, figsize=(5.2 * ncols, 0.32 * len(spaces) * nrows + 2.2 * nrows),
                             squeeze=False)
    y = np.arange(len(spaces))
    h = 0.8 / len(geometries)
    for ax, (stat, label) in zip(axes.flat, STATISTICS.items(), strict=False):
        for gi, geometry in enumerate(geometries):
            offset = (gi - (len(geometries) - 1) / 2) * h
            vals = [cell_float(cell.get((s, geometry, stat), {}).get("value")) for s in spaces]
            nulls = [cell_float(cell.get((s, geometry, stat), {}).get("null")) for s in spaces]
            ax.barh(y + offset, vals, h, color=colours[geometry], label=geometry)
            ax.scatter(nulls, y + offset, marker="|", s=120, color="black", zorder=3,
                       label="null (permutation / other-concept words)" if gi == 0 else None)
        ax.set_yticks(y, spaces, fontsize=8)
        ax.invert_yaxis()
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_xlabel("cosine")
        ax.set_title(label, fontsize=10)
    for ax in list(axes.flat)[len(STATISTICS):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    spare = list(axes.flat)[len(STATISTICS):]
    if spare:
        spare[0].legend(handles, labels, loc="center", title="geometry", fontsize=9)
    else:
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3)
    fig.suptitle("Synthetic vs real concept geometry: the same statistics on every space (bars) with nulls (ticks)")
    return fig


def direction_heatmaps(space: Space, folder: str | Path, name: str = "heatmap") -> list[Path]:
    """Clustered concept-direction |cos| heatmaps of one space: raw, centred, and whitened by its own words."""

    lv = space.concepts
    variants = (("raw", {"center_vectors": False}), ("centred", {"center_vectors": True}),
                ("whitened", {"whiten": lv.vectors}))  # Cov of the concept words themselves, floored
    out = []
    for label, kw in variants:
        dirs, names = concept_directions(prepare(lv.vectors, lv.labels, **kw), lv.labels, "diff")
        fig = direction_heatmap_figure(direction_abs_cos(dirs), names,
                                       title=f"{space.name}, {label}: |cos| of concept directions (clustered)")
        out.append(save_figure(fig, folder, f"{name}_{label}", caption=HEATMAP_CAPTION))
    return out



# ---------------------------------------------------------------------------------------------- the run


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()


def _base_config(synthetic_dir: Path) -> Any:

    return load_config(SyntheticConfig, synthetic_dir / "config.yaml")


def place_on_map(spaces: Sequence[Space], base: Any, *, seed: int = 0) -> tuple[list[Any], list[dict[str, Any]],
                                                                                dict[str, Any]]:
    """(map points, rows, estimates by space name) of real spaces at their estimated generator parameters."""

    points, rows, estimates = [], [], {}
    for space in progress(spaces, desc="placing real spaces on the map"):
        est = estimate_parameters(space.concepts.vectors, space.concepts.labels, base, seed=seed)
        points.append(MapPoint(space.name, est.parameters["within_cosine"], est.parameters["cross_overlap"]))
        rows.append({"space": space.name, **est.parameters, "moment_loss": est.loss})
        estimates[space.name] = est
    return points, rows, estimates


ATTENTION_COLUMNS = ("condition", "shots", "synthetic_same_concept_attention", "synthetic_same_concept_chance",
                     "synthetic_correct_attention", "real_top_heads", "real_top_heads_null",
                     "real_best_head", "real_best_value", "real_best_null", "real_best_p_corrected", "real_chance")


def load_attention_summary(path: str | Path | None) -> dict[str, Any] | None:
    """The summary.json of a ``probe attention`` run folder (None when no folder is given)."""
    if path is None:
        return None
    file = Path(path) / "summary.json" if Path(path).is_dir() else Path(path)
    if not file.is_file() or "top_heads" not in read_json(file):
        raise FileNotFoundError(f"attention summary not found: {file} (a `mcicl probe attention` run folder)")
    return read_json(file)


def synthetic_same_concept(run_dir: str | Path, concepts: int = 2) -> dict[str, float] | None:
    """The real probe's statistic on a synthetic train run's final model: same-concept attention (and its chance
    and the 0-1 error) on prompts whose demonstrations come from ``concepts`` concepts, mean over seeds
    (:func:`synthetic.cells.mixed_set`, ``n_test_ood`` prompts per seed). None when the run has no checkpoint or
    its world cannot hold such prompts (K < 2 or L < 4)."""
    run_dir = Path(run_dir)
    found = latest_checkpoint(run_dir / "checkpoints")
    config = load_config(SyntheticConfig, run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else None
    if found is None or config is None or config.K < 2 or config.L < 2 * concepts:
        return None
    world = build_world(config)
    model = build_model(config, world)
    load_weights(model, found[1])
    with torch.no_grad():
        prompts, demo = mixed_set(config, world, concepts)
        m = mixed_concept_metrics(model, prompts, demo)
    return {k: float(np.mean(v)) for k, v in m.items()} | {"step": found[0], "seeds": config.seeds}


def attention_rows(synthetic_summary: Mapping[str, Any], attention_summary: Mapping[str, Any],
                   same_concept: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """Per real condition (at its largest shots): the synthetic model's same-concept attention on two-concept
    prompts (``same_concept``, :func:`synthetic_same_concept`: the real probe's statistic, for in_distribution)
    and its correct attention on the matching scenario (same sign within one concept: another statistic) beside
    the real model's top heads and best head."""
    rows = []
    for condition, cells in attention_summary["cells"].items():
        shots = max(cells, key=int)
        cell = cells[shots]
        syn = (synthetic_summary.get("final", {}).get("correct_attention") if condition == "in_distribution"
               else synthetic_summary.get("ood", {}).get(condition, {}).get("correct_attention"))
        same = (same_concept or {}) if condition == "in_distribution" else {}
        rows.append({"condition": condition, "shots": int(shots),
                     "synthetic_same_concept_attention": same.get("same_concept_attention", math.nan),
                     "synthetic_same_concept_chance": same.get("same_concept_chance", math.nan),
                     "synthetic_correct_attention": math.nan if syn is None else float(syn),
                     "real_top_heads": cell["top_heads_value"], "real_top_heads_null": cell["top_heads_null"],
                     "real_best_head": "L{}H{}".format(*cell["best_head"]), "real_best_value": cell["best_value"],
                     "real_best_null": cell["best_null"], "real_best_p_corrected": cell["best_p_corrected"],
                     "real_chance": cell["chance"]})
    return rows


ATTENTION_COMPARE_CAPTION = Caption(
    "Correct attention: synthetic vs real",
    "Like with like first: the synthetic one-layer transformer's same-concept attention on prompts whose "
    "demonstrations come from two concepts (as in the real 2-way task; in_distribution only), then its correct "
    "attention (same sign within one concept, a different statistic), beside the real model's top heads (chosen on "
    "held-out episodes) and the best head of each condition; black ticks: the real heads' nulls and the synthetic "
    "chance. The synthetic model attends over demonstrations only; the real heads' values are shares of their "
    "attention on demonstration tokens.")


@styled
def attention_comparison_figure(rows: Sequence[Mapping[str, Any]], *, model: str = "real model",
                                ax: Any = None) -> Any:
    """Bars per condition: synthetic correct attention, the real model's top heads and best head, with nulls."""
    if ax is None:
        fig, ax = subplots(figsize=(1.6 * len(rows) + 3.2, 4.8))
    else:
        fig = ax.figure
    colours = palette(4)
    x = np.arange(len(rows))
    width = 0.2
    series = (("synthetic_same_concept_attention", "synthetic_same_concept_chance",
               "synthetic: same-concept attention, 2-concept prompts (the real probe's statistic)"),
              ("synthetic_correct_attention", None, "synthetic: same-sign attention within one concept (not the same)"),
              ("real_top_heads", "real_top_heads_null", f"{model}: top heads (held-out choice)"),
              ("real_best_value", "real_best_null", f"{model}: best head (chosen on these prompts)"))
    for i, (key, null, label) in enumerate(series):
        xs = x + (i - 1.5) * width
        ax.bar(xs, [float(r.get(key, math.nan)) for r in rows], width, color=colours[i], label=label)
        if null:
            ax.scatter(xs, [float(r.get(null, math.nan)) for r in rows], marker="_", s=300, color="black", zorder=3,
                       label="null or chance (real: largest of the nulls; synthetic: share of same-concept demos)"
                       if i == 0 else None)
    ax.set_xticks(x, [f"{r['condition'].replace('_', ' ')}\n({r['shots']} shots)" for r in rows], fontsize=8)
    ax.set_ylabel("correct attention (share on same-concept demos)")
    ax.set_ylim(0, 1)
    ax.set_title("Correct attention: synthetic model vs the real model's heads", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    return fig


@dataclass
class CompareResult:
    """The comparison table of every space (one row per space, geometry and statistic) and its summary. The
    compare job saves it first; the optional OOD map, matched world and attention comparison are written into the
    same run beside it."""

    config: dict[str, Any]
    rows: list[dict[str, Any]]
    summary: dict[str, Any]

    def figures(self) -> dict[str, Figure]:
        """The comparison figure: each statistic per space against its null."""
        return {"comparison": comparison_figure(self.rows)}

    def save(self, run: RunFolder) -> None:
        """Write config.yaml, comparison.csv, comparison.md, the figure and summary.json into ``run``."""
        run.save_config(self.config)
        run.write_csv("comparison.csv", self.rows, list(COLUMNS))
        md = "\n\n".join(f"### {g} cosines\n\n" + markdown_table(self.rows, g) for g in GEOMETRIES)
        (run.path / "comparison.md").write_text("Cells: value (null mean).\n\n" + md + "\n")
        for name, fig in self.figures().items():
            save_figure(fig, run.figures, name, caption=COMPARISON_CAPTION)
        run.write_summary(self.summary)


def run_compare(synthetic_dir: str | Path, real_dir: str | Path, run: RunFolder, *, icl_dir: str | Path | None = None,
                attention_dir: str | Path | None = None,
                sweep_dir: str | Path | None = None, matched: bool = False, matched_space: str | None = None,
                n_permutations: int = 100, seed: int = 0, map_spaces: int | None = None,
                matched_overrides: Mapping[str, Any] | None = None, figures: bool = True,
                use_umap: bool = True, umap_synthetic: bool = True, heatmaps: bool = True,
                matched_controls: bool = True) -> dict[str, Any]:
    """The comparison table (CSV + Markdown + figure), and optionally the OOD map and the matched world (with
    ``matched_controls``: beside the unmatched default and a mismatched world, agreement.csv)."""

    synthetic_dir, real_dir = Path(synthetic_dir), Path(real_dir)
    real_found = real_spaces(real_dir)
    spaces = synthetic_spaces(synthetic_dir) + real_found
    real = [s for s in spaces if s.world == "real"]
    config = {"synthetic": str(synthetic_dir), "real": str(real_dir), "icl": str(icl_dir or ""),
              "attention": str(attention_dir or ""), "sweep": str(sweep_dir or ""), "matched": matched,
              "n_permutations": n_permutations, "seed": seed, "geometries": list(GEOMETRIES)}
    rows = compare_spaces(spaces, n_permutations=n_permutations, seed=seed)
    CompareResult(config, rows, {"spaces": [s.name for s in spaces]}).save(run)
    embeddings: dict[str, Any] = {}
    if figures:

        if heatmaps:
            direction_heatmaps(real[-1], run.figures, name=f"heatmap_{_slug(real[-1].name)}")
        for space in (spaces[1], real[-1]):  # synthetic sampled words, the last real layer
            # umap_synthetic=False: the synthetic words get the PCA panel only (saves UMAP's CPU in tests).
            umap_here = use_umap and (umap_synthetic or space.world == "real")
            fig, info = embedding_figure(space.concepts, polysemy=space.polysemy, seed=seed, use_umap=umap_here,
                                         title=f"{space.name}: concept words (PCA | UMAP)")
            png = save_figure(fig, run.figures, f"embedding_{_slug(space.name)}", caption=EMBEDDING_CAPTION)
            info["png"] = str(png)
            embeddings[space.name] = info
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        table.setdefault(r["space"], {}).setdefault(r["geometry"], {})[r["statistic"]] = r["value"]
    summary: dict[str, Any] = {"spaces": [s.name for s in spaces], "table": table}
    if figures:
        summary["embedding_figures"] = embeddings
    attention = load_attention_summary(attention_dir)
    if attention is not None:
        att_rows = attention_rows(read_json(synthetic_dir / "summary.json"), attention,
                                  synthetic_same_concept(synthetic_dir))
        run.write_csv("attention_compare.csv", att_rows, list(ATTENTION_COLUMNS))
        if figures:
            save_figure(attention_comparison_figure(att_rows, model=attention.get("model", "real model")),
                        run.figures, "attention_compare", caption=ATTENTION_COMPARE_CAPTION)
        summary["attention"] = {r["condition"]: {k: r[k] for k in ATTENTION_COLUMNS if k != "condition"}
                                for r in att_rows}
    base = _base_config(synthetic_dir)
    estimates: dict[str, Any] = {}
    if sweep_dir is not None:

        sweep = read_sweep(sweep_dir)
        # map_spaces: how many real spaces to place (the last layer, then the first, then the middle one); None = all.
        order = list(dict.fromkeys([len(real) - 1, 0, len(real) // 2] + list(range(len(real)))))
        chosen = real if map_spaces is None else [real[i] for i in sorted(order[:map_spaces])]
        points, placed, estimates = place_on_map(chosen, base, seed=seed)
        run.write_csv("map_points.csv", placed)
        save_figure(ood_map_figure(sweep, points), run.figures, "ood_map", caption=OOD_MAP_CAPTION)
        summary["ood_map"] = {"points": placed, "sweep": str(sweep_dir)}
    if matched:

        target = next((s for s in real if s.name == matched_space), None) if matched_space else real[-1]
        if target is None:
            raise ValueError(f"matched_space={matched_space!r} not found; accepted: "
                             + ", ".join(s.name for s in real))
        # At least MATCHED_SEEDS seeds (unless the overrides set seeds): the matched world and its controls are
        # compared across seeds.
        cfg = replace(base, **{"seeds": max(MATCHED_SEEDS, base.seeds), **(matched_overrides or {})})
        # The map's estimate of the same space is reused (same base geometry, same seed: the same numbers).
        result = run_matched(target.concepts, cfg, run, icl_summary=load_icl_summary(icl_dir), seed=seed,
                             estimate=estimates.get(target.name), controls=matched_controls)
        summary["matched"] = {"space": target.name, **{k: v for k, v in result.items() if k != "rows"},
                              "conditions": {r["synthetic_condition"]: {"synthetic_error": r["synthetic_error"],
                                                                        "real_error": r["real_error"]}
                                             for r in result["rows"]}}
    run.write_summary(summary)
    return summary


def execute(cfg: CompareConfig, ctx: JobContext) -> int:
    """``mcicl compare``: check every input run, open the run folder, compare, print where the output is."""
    for name in ("synthetic", "real"):  # required inputs, as the command line has always had them
        if not getattr(cfg, name):
            raise ValueError(f"--{name} is required; accepted: a `mcicl "
                             f"{'synthetic train' if name == 'synthetic' else 'probe geometry'}` run folder")
    seed_everything(cfg.seed)
    # Validate every input before creating the output folder and before any long computation.
    require_run(cfg.synthetic, "--synthetic", ["synthetic train"])
    require_run(cfg.real, "--real", ["probe geometry"])
    require_run(cfg.icl, "--icl", ["probe icl", "demo icl"])
    require_run(cfg.sweep, "--sweep", ["synthetic sweep"])
    real = real_spaces(cfg.real)
    if cfg.matched and cfg.matched_space and cfg.matched_space not in {s.name for s in real}:
        raise ValueError(f"--matched-space {cfg.matched_space!r} not found in {cfg.real}; accepted: "
                         + ", ".join(s.name for s in real))
    synthetic_spaces(cfg.synthetic, learned=False)
    load_icl_summary(cfg.icl)
    load_attention_summary(cfg.attention)
    if cfg.sweep is not None:
        read_sweep(cfg.sweep)
    out = ctx.create_run(inputs={"--synthetic": cfg.synthetic, "--real": cfg.real, "--icl": cfg.icl,
                                 "--attention": cfg.attention, "--sweep": cfg.sweep})
    summary = run_compare(cfg.synthetic, cfg.real, out, icl_dir=cfg.icl, attention_dir=cfg.attention,
                          sweep_dir=cfg.sweep, matched=cfg.matched, matched_space=cfg.matched_space,
                          n_permutations=cfg.permutations, seed=cfg.seed, use_umap=cfg.umap)
    print(f"compared {len(summary['spaces'])} spaces; output is in {out.path} "
          f"(comparison.csv, comparison.md, figures/)")
    return 0


def _stage_folder(ctx: DemoContext, title: str, name: str) -> Path | None:
    """The run folder an earlier demo stage wrote (named in its results, else the demo's ``name`` subfolder), or
    None when it has no summary.json (the stage did not run or failed)."""
    numbers = ctx.results.get(title) or {}
    folder = Path(numbers.get("folder") or numbers.get("run_dir") or ctx.run.path / name)
    return folder if (folder / "summary.json").is_file() else None


def demo_stage(ctx: DemoContext) -> dict[str, Any]:
    """Demo stage "comparison": the demo's synthetic run against its real geometry run, the OOD map (a small sweep
    of its own) and the matched world; returns the folders, the number of spaces and the matched world's numbers."""
    syn = _stage_folder(ctx, "synthetic training + OOD", "synthetic")
    real = _stage_folder(ctx, "real geometry", "geometry")
    for folder, stage, name in ((syn, "synthetic training", "synthetic"), (real, "real geometry", "geometry")):
        if folder is None:
            raise LookupError(f"the comparison stage needs the {stage} stage's run folder {ctx.run.path / name}")
    icl = _stage_folder(ctx, "ICL probes (attention readout)", "icl")
    attention = _stage_folder(ctx, "attention on same-concept demonstrations", "attention")
    small, seed = ctx.small, ctx.seed
    sweep_dir = _demo_sweep(ctx.run, small, seed)
    out = ctx.stage_run("compare", "compare")
    overrides = {"seeds": 1, "steps": 200, "n_test": 1000, "n_test_ood": 300, "eval_every": 20,
                 "ood_every": 100, "n_features": 20} if small else {"seeds": 1}
    summary = run_compare(syn, real, out, icl_dir=icl, attention_dir=attention, sweep_dir=sweep_dir, matched=True,
                          seed=seed,
                          n_permutations=30 if small else 50, map_spaces=1 if small else 3,
                          matched_overrides=overrides, umap_synthetic=not small, heatmaps=not small,
                          matched_controls=not small)
    return {"run_dir": str(out.path), "sweep_dir": str(sweep_dir), "spaces": len(summary["spaces"]),
            "matched_parameters": summary["matched"]["parameters"],
            "matched_errors": summary["matched"]["conditions"]}


def _demo_sweep(run: RunFolder, small: bool, seed: int) -> Path:
    """A within_cosine x cross_overlap sweep (6 x 6 cells x 3 seeds, one batched model; each cell trains until 1%
    test error or at most 1,600 steps, and is marked censored where a seed never got there) for the demo's map."""

    scenarios = ["length_long", "flipped_labels", "polysemous_query", "noise_x5"]
    steps = 100 if small else 1600
    base = SyntheticConfig(seeds=1 if small else 3, steps=steps, n_test=400 if small else 2000,
                           n_test_ood=200 if small else 1000, eval_every=10 if small else 20, ood_every=steps,
                           n_features=10, scenarios=scenarios, seed=seed, checkpoint_every=10**6)
    # Dense where learning slows down (0.45 to 0.9).
    grid = {"within_cosine": [0.2, 0.8] if small else [0.3, 0.45, 0.6, 0.7, 0.8, 0.9],
            "cross_overlap": [0.0, 0.3] if small else [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]}
    sweep = RunFolder.create(run.path / "sweep", "synthetic sweep", overwrite=True)
    run_sweep(base, grid, sweep)
    return sweep.path
