"""Concept geometry of a model (every layer, or one space) with nulls, or of saved vectors: ``run_geometry``.

For each layer: the headline statistics of :func:`analysis.geometry.geometry_summary` (within- and
cross-concept cosine, concept-direction |cos|, subspace angles, hierarchy, held-out projection, each with its
nulls), linear probes with a control task, and polysemy (sense cosines, sparse decomposition). Outputs:
``summary.json``, ``layers.csv``, ``per_concept.csv``, ``polysemy.csv``, ``probes.csv``,
``direction_abs_cos.csv``, ``concepts.json``, ``vectors/<layer>.npz`` and ``vectors/<layer>.polysemy.npz``
(for downstream tools), and ``figures/``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from mcicl.analysis.engine.controls import (
    direction_pair_test,
    heldout_concept_probe,
    paired_difference,
    strata_codes,
)
from mcicl.analysis.engine.geometry_figures import (
    BASELINES_CAPTION,
    HEATMAP_CAPTION,
    LAYERS_CAPTION,
    baseline_differences_figure,
    direction_heatmap_figure,
    layer_curves_figure,
)
from mcicl.analysis.engine.measures import (
    STATISTICS,
    centring_report,
    concept_directions,
    direction_abs_cos,
    direction_units,
    encode_labels,
    geometry_summary,
    matched_null,
    per_concept_table,
    prepare,
    single_threaded_blas,
    statistic_units,
)
from mcicl.analysis.engine.nulls import Stat, make_stat, unit_mean
from mcicl.analysis.engine.polysemy import polysemy_analysis
from mcicl.analysis.engine.probes import linear_probe
from mcicl.analysis.engine.streaming import NULL_STATISTICS, StreamingGeometry, null_bytes
from mcicl.core.io import strict_json, write_json
from mcicl.core.jobs import DemoContext, JobContext
from mcicl.core.logs import progress
from mcicl.core.plotting import Caption, save_figure, subplots
from mcicl.core.pvalues import p_text
from mcicl.core.runs import RunFolder
from mcicl.core.seeding import seed_everything
from mcicl.core.vectors import LabelledVectors, Space
from mcicl.probing.datasets import load_concept_set
from mcicl.probing.extract import ExtractionConfig, extract_words, load_for
from mcicl.probing.extract_config import refuse_ignored
from mcicl.probing.geometry_config import GeometryConfig
from mcicl.probing.memory import gib, memory_budget
from mcicl.probing.models import LoadedModel, baseline_model
from mcicl.probing.store import ActivationStore, store_geometry, write_store
from mcicl.probing.tiny import is_random_weights

log = logging.getLogger("mcicl")

IN_MEMORY_COPIES = 6  # float64 copies of the rows the in-memory analysis holds at once (prepare, units, nulls)
STREAMED = ("within_concept_cosine", "cross_concept_cosine", "within_minus_cross", "concept_direction_abs_cos",
            "mean_direction_abs_cos")
MAX_PROBE_CLASSES = 100  # a multinomial probe over hundreds of WordNet synsets takes minutes per layer
MANY_CONCEPTS = 100  # above this, subspace/held-out/LDA nulls use 20 permutations (they scale with k)
# Statistics reported as trained minus each baseline (units: concepts or concept pairs).
BASELINE_STATISTICS = ("within_concept_cosine", "cross_concept_cosine", "within_minus_cross",
                       "concept_direction_abs_cos", "mean_direction_abs_cos", "subspace_max_cos",
                       "heldout_projection_auc")
HELDOUT_PROBE_COLUMNS = ("heldout_concept_accuracy", "heldout_concept_chance", "heldout_concept_auc",
                         "heldout_concept_cosine_auc", "heldout_concept_n_test_pairs", "heldout_concept_n_folds")
BASELINE_NAMES = {"random_weights": "random weights (same architecture and tokenizer, re-initialised)",
                  "embeddings": "input embeddings alone",
                  "random_blocks": "trained input embeddings through re-initialised blocks"}


# ------------------------------------------------------------------------------------------------ inputs
def _keep_concepts(lv: LabelledVectors, min_words: int = 2) -> tuple[LabelledVectors, list[str]]:
    """Rows of concepts with >= ``min_words`` represented words, and the concepts dropped."""
    names, counts = np.unique(lv.labels, return_counts=True)
    dropped = sorted(str(n) for n, c in zip(names, counts, strict=True) if c < min_words or n == "")
    keep = ~np.isin(lv.labels, dropped)
    signs = lv.signs[keep] if lv.signs is not None else None
    return LabelledVectors(lv.vectors[keep], lv.words[keep], lv.labels[keep], signs, dict(lv.meta)), dropped


def _poly_subset(poly: LabelledVectors | None, known: set[str]) -> tuple[LabelledVectors | None, list[str]]:
    """Polysemous rows restricted to senses among ``known`` concepts; words left with < 2 senses are dropped."""
    if poly is None or len(poly.words) == 0:
        return None, []
    rows, labels, dropped = [], [], []
    for i, lab in enumerate(poly.labels):
        senses = [s for s in dict.fromkeys(str(lab).split("|")) if s in known]
        if len(senses) >= 2:
            rows.append(i)
            labels.append("|".join(senses))
        else:
            dropped.append(str(poly.words[i]))
    if not rows:
        return None, dropped
    return LabelledVectors(poly.vectors[rows], poly.words[rows], np.array(labels), meta=dict(poly.meta)), dropped


def spaces_from_file(cfg: GeometryConfig) -> tuple[list[Space], dict[str, Any]]:
    """The one space of a saved LabelledVectors file (and its sibling ``<stem>.polysemy.npz`` if present)."""
    path = Path(cfg.vectors)
    lv = LabelledVectors.load(path)
    poly_path = path.with_name(path.name[: -len(".npz")] + ".polysemy.npz") if path.name.endswith(".npz") else None
    if path.name.endswith(".polysemy.npz"):
        raise ValueError(f"vectors={str(path)!r} is a polysemy file; pass the concept-word file next to it")
    poly = LabelledVectors.load(poly_path) if poly_path is not None and poly_path.is_file() else None
    if lv.signs is not None and cfg.signs == "split":
        suffix = np.where(lv.signs > 0, "+", np.where(lv.signs < 0, "-", ""))
        lv = LabelledVectors(lv.vectors, lv.words, np.char.add(lv.labels, suffix), None, lv.meta)
    name = str(lv.meta.get("layer", path.stem))
    concepts = {str(c): [str(w) for w in lv.words[lv.labels == c]] for c in dict.fromkeys(lv.labels.tolist())}
    info = {"source": str(path), "polysemy_source": str(poly_path) if poly is not None else None,
            "concept_set": {"name": path.stem, "concepts": concepts,
                            "polysemy": {str(w): str(lab).split("|") for w, lab in
                                         zip(poly.words, poly.labels, strict=True)} if poly is not None else {},
                            "controls": {}, "parents": {}},
            "parents": {}, "words_left_out": {}}
    return [Space(name, lv, polysemy=poly, meta=dict(lv.meta))], info


def _vocab_words(tokenizer: Any, n: int, seed: int) -> list[str]:
    """A seeded sample of ``n`` whole-word alphabetic vocabulary entries (the vocabulary whitening sample)."""
    # The tokenizer turns each token into its text (no hard-coded space markers); "##ing" stays non-alphabetic.
    texts = (tokenizer.convert_tokens_to_string([t]).strip() for t in sorted(tokenizer.get_vocab()))
    words = sorted({t.lower() for t in texts if t.isalpha() and len(t) >= 3})
    rng = np.random.default_rng(seed)
    return [words[i] for i in sorted(rng.choice(len(words), size=min(n, len(words)), replace=False))]


def _matrix(module: Any) -> np.ndarray | None:
    weight = getattr(module, "weight", None) if module is not None else None
    return None if weight is None else weight.detach().float().cpu().numpy()


def concept_pairs(cs: Any) -> tuple[list[tuple[str, str]], int]:
    """(word, concept) rows with each word in its most specific (smallest) concept, and how many words had several.

    Within/cross-concept statistics need a partition; nested sets such as WordNet's (a parent lists its
    children's words) would otherwise count a word as "within" and "cross" at once.
    """
    size = {c: len(ws) for c, ws in cs.concepts.items()}
    best: dict[str, str] = {}
    seen: dict[str, int] = {}
    for concept, ws in cs.concepts.items():
        for w in ws:
            seen[w] = seen.get(w, 0) + 1
            if w not in best or size[concept] < size[best[w]]:
                best[w] = concept
    return list(best.items()), sum(1 for n in seen.values() if n > 1)


def load_concepts(cfg: GeometryConfig) -> Any:
    """The ConceptSet of ``cfg`` (``--concepts`` plus ``--polysemy``), validated."""

    return load_concept_set(cfg.concepts, polysemy=cfg.polysemy)


def spaces_from_model(cfg: GeometryConfig, *, loaded: LoadedModel | None = None, quiet: bool = False,
                      concept_set: Any = None) -> tuple[list[Space], dict[str, Any]]:
    """Extract the concept set's words from the model (B's extraction) into one Space per layer."""
    cs = concept_set if concept_set is not None else load_concepts(cfg)

    pairs, n_multi = concept_pairs(cs)
    words = [w for w, _ in pairs]
    measured_in = dict(pairs)
    several = {w: {"measured_in": measured_in[w], "listed_in": [c for c, ws in cs.concepts.items() if w in ws]}
               for w in measured_in if sum(w in ws for ws in cs.concepts.values()) > 1}
    # A concept all of whose words are measured in smaller concepts has no rows: it is dropped, and said so.
    emptied = [c for c in cs.concepts if c not in set(measured_in.values())]
    if n_multi:
        # Expected in a nested hierarchy (WordNet); in a flat user file it is probably a mistake, so warn.
        (log.info if cs.parents else log.warning)(
            "%d word(s) belong to several concepts; each is measured in its most specific (smallest) concept: %s",
            n_multi, ", ".join(f"{w} -> {v['measured_in']}" for w, v in list(several.items())[:8])
            + (" ..." if n_multi > 8 else ""))
    if emptied:
        log.warning("concept(s) %s dropped: every word is measured in a smaller concept", emptied)
    poly_pairs = [(w, "|".join(s)) for w, s in cs.polysemy.items()]
    all_words = list(dict.fromkeys(words + list(cs.polysemy) + list(cs.controls)))
    ecfg = cfg.extraction
    loaded = loaded if loaded is not None else load_for(ecfg)
    model, tokenizer, ref = loaded.model, loaded.tokenizer, loaded.ref
    head = None
    if cfg.whiten == "unembed" or (cfg.whiten == "vocab" and ecfg.space == "unembed"):
        head = _matrix(model.get_output_embeddings()) if hasattr(model, "get_output_embeddings") else None
        if head is None:  # checked before extraction so the error comes at once
            raise ValueError(f"whiten={cfg.whiten!r} needs an unembedding (LM head), and {ref.name} "
                             f"({type(model).__name__}) has none; accepted here: whiten='none' or 'vocab'")
    ext = extract_words(all_words, ecfg, loaded=loaded, show_progress=not quiet)

    references: dict[str, np.ndarray | None] = {name: None for name in ext.layers}
    if head is not None:
        references = {name: head for name in ext.layers}
    elif cfg.whiten == "vocab" and ecfg.space == "input":
        references = {name: _matrix(model.get_input_embeddings()) for name in ext.layers}
    elif cfg.whiten == "vocab":
        sample = _vocab_words(tokenizer, cfg.whiten_sample, cfg.seed)
        log.info("whitening reference: %d vocabulary words through the same extraction", len(sample))
        ref_ext = extract_words(sample, ecfg, loaded=loaded, show_progress=not quiet)
        references = {name: ref_ext.vectors[name].astype(np.float64) for name in ext.layers}

    spaces = []
    for name in ext.layers:
        lv = ext.labelled(name, pairs)
        poly = ext.labelled(name, poly_pairs) if poly_pairs else None
        controls = ext.labelled(name, list(cs.controls.items())) if cs.controls else None
        spaces.append(Space(name, lv, polysemy=poly, controls=controls, reference=references[name],
                            meta={**ext.meta, "word_tokens": dict(zip(ext.words, ext.meta["n_tokens"], strict=True))}))
    info = {"source": ref.name, "extraction": {k: v for k, v in ext.meta.items() if k != "n_tokens"},
            "words_left_out": {k: v for k, v in ext.report.items() if v},
            "concept_set": {"name": cs.name, "concepts": cs.concepts, "polysemy": cs.polysemy,
                            "controls": cs.controls, "parents": cs.parents},
            "parents": dict(cs.parents), "words_in_several_concepts": several,
            "concepts_without_own_words": emptied}
    return spaces, info


def spaces_from_store(cfg: GeometryConfig, *, loaded: LoadedModel, quiet: bool = False, concept_set: Any = None
                      ) -> tuple[list[Space] | None, dict[str, Any], dict[str, StreamingGeometry]]:
    """Extract the concept words into the store ``cfg.store`` (resumed; another model's store is refused), stream
    every layer's statistics shard by shard, and read the rows back as spaces when they fit in memory (else None).
    """
    cs = concept_set if concept_set is not None else load_concepts(cfg)
    pairs, _ = concept_pairs(cs)
    store = write_store(cfg.store, pairs, cfg.extraction, loaded, show_progress=not quiet)
    need = store.n_rows * store.dim * 8 * IN_MEMORY_COPIES
    budget, where = memory_budget("cpu")
    # Rows that do not fit get the label-permutation null of the cosine statistics streamed with their values.
    k = len(set(store.labels()))
    null_need = null_bytes(cfg.permutations, k, store.dim, store.n_rows) if need > budget else 0
    if null_need > budget:
        log.warning("store %s: the streamed permutation null (%d permutations x %d concepts x %d dimensions) needs "
                    "about %s, %s has %s; fewer --permutations need less", store.path, cfg.permutations, k,
                    store.dim, gib(null_need), where, gib(budget))
    streamed = {layer: store_geometry(store, layer, center=cfg.center, seed=cfg.seed,
                                      n_permutations=cfg.permutations if need > budget else 0)[0]
                for layer in store.layers}
    info: dict[str, Any] = {
        "source": loaded.ref.name, "store": {"path": str(store.path), "key": store.key, "shards": store.n_shards,
                                             "rows": store.n_rows, "in_memory_bytes": need, "budget_bytes": budget,
                                             "in_memory": need <= budget, "null_bytes": null_need},
        "extraction": {"model": loaded.ref.spec, "space": "hidden", "pooling": cfg.extraction.pooling,
                       "template": cfg.extraction.template, "layers": store.layers},
        "words_left_out": store.manifest.get("left_out", {}),
        "concept_set": {"name": cs.name, "concepts": cs.concepts, "polysemy": {}, "controls": {},
                        "parents": cs.parents},
        "parents": dict(cs.parents)}
    if need > budget:
        log.warning("store %s: the in-memory analysis needs about %s, %s has %s: streamed statistics only (the "
                    "permutation null of the cosine statistics only)", store.path, gib(need), where, gib(budget))
        return None, info, streamed
    spaces = [Space(layer, _store_rows(store, layer),
                    meta={"space": "hidden", "model": loaded.ref.spec, "store": str(store.path),
                          "random_weights": is_random_weights(getattr(loaded.ref, "location", None))})
              for layer in store.layers]
    return spaces, info, streamed


def _store_rows(store: ActivationStore, layer: str) -> LabelledVectors:
    """Every row of ``layer`` in the store, read shard by shard into one LabelledVectors."""
    rows, words, labels = [], [], []
    for chunk, item, shard_words, shard_labels in store.chunks(layer):
        rows.append(np.asarray(chunk, dtype=np.float32))
        words += [shard_words[j] for j in item]
        labels += [shard_labels[j] for j in item]
    return LabelledVectors(np.concatenate(rows), np.array(words, dtype=str), np.array(labels, dtype=str),
                           meta={"layer": layer, "store": str(store.path)})


def streamed_stats(g: StreamingGeometry, cfg: GeometryConfig) -> dict[str, Stat]:
    """The streamed cosine statistics of one layer as Stats: value, the streamed permutation null (band,
    p-value) and a bootstrap interval over concepts (pairs for the cross cosine); {} without a streamed null."""
    if g.null is None:
        return {}
    units, null = g.cosine_units(), g.null.statistics()
    rng = np.random.default_rng([cfg.seed, 53])
    return {name: make_stat(unit_mean(units[name]), units[name], null[name], alternative=STATISTICS[name][0],
                            n_bootstrap=cfg.bootstrap, rng=rng) for name in NULL_STATISTICS}


@dataclass
class StoreGeometryResult:
    """A store too large for the in-memory analysis: the streamed statistics per layer (values; the cosine
    statistics with their streamed permutation nulls)."""

    config: GeometryConfig
    layer_rows: list[dict[str, Any]]
    summary: dict[str, Any]

    def figures(self) -> dict[str, Figure]:
        """``geometry_layers``: streamed within- and cross-concept cosine per layer."""
        fig, ax = subplots(figsize=(7, 4.5))
        x = np.arange(len(self.layer_rows))
        for key, label, marker in (("within_concept_cosine", "within-concept", "o"),
                                   ("cross_concept_cosine", "cross-concept", "s")):
            ax.plot(x, [r[key] for r in self.layer_rows], marker=marker, label=label)
        ax.axhline(0, color="0.4", lw=0.8)
        ax.set_xticks(x, [str(r["layer"]) for r in self.layer_rows])
        ax.set_xlabel("layer (0 = embedding output)")
        ax.set_ylabel("mean pairwise cosine (centred)")
        for key, colour in (("within_concept_cosine", "C0"), ("cross_concept_cosine", "C1")):
            low = [r.get(f"{key}_null_low") for r in self.layer_rows]
            high = [r.get(f"{key}_null_high") for r in self.layer_rows]
            if all(v is not None and np.isfinite(v) for v in low + high):
                ax.fill_between(x, low, high, color=colour, alpha=0.15, lw=0)
        ax.set_title(f"{self.summary['source']}: streamed from the store (rows exceed memory)")
        ax.legend()
        return {"geometry_layers": fig}

    def save(self, run: RunFolder) -> None:
        """Write config.yaml, streaming.csv, the figure and summary.json into ``run``."""
        run.save_config(self.config)
        run.write_csv("streaming.csv", self.layer_rows)
        for name, fig in self.figures().items():
            save_figure(fig, run.figures, name, caption=STREAM_CAPTION)
        run.write_summary(self.summary)


STREAM_CAPTION = Caption(
    "Geometry streamed from an activation store",
    "Within- and cross-concept cosine per layer, computed shard by shard (two passes: the mean, then per-concept "
    "sums of unit centred rows). Shaded: the 2.5-97.5% band of the label-permutation null, streamed in the second "
    "pass (per-permutation sums of unit rows per concept).")


def _streamed_row(layer: str, g: StreamingGeometry, stats: dict[str, Stat]) -> dict[str, Any]:
    out = {"layer": layer, "n_words": g.moments.n, "n_concepts": g.k, "dim": int(len(g.moments.mean))}
    out.update({k: v for k, v in g.summary().items() if k in STREAMED or k == "covariance_trace"})
    for name, s in stats.items():
        out.update({f"{name}_null": s.null_mean, f"{name}_null_low": s.null_low, f"{name}_null_high": s.null_high,
                    f"{name}_ci_low": s.ci_low, f"{name}_ci_high": s.ci_high, f"{name}_p": s.p_value,
                    f"{name}_effect": s.effect_size})
    return out


# -------------------------------------------------------------------------------------------- analysis
def analyse_space(space: Space, cfg: GeometryConfig, parents: dict[str, str]) -> dict[str, Any]:
    """Every measurement of one space: stats, per-concept rows, direction matrix, probe, polysemy."""

    lv = space.concepts
    signs = lv.signs if (lv.signs is not None and cfg.signs == "align") else None
    kw = {"whiten": space.reference, "center_vectors": cfg.center, "signs": signs}
    many = len(set(lv.labels.tolist())) > MANY_CONCEPTS
    stats = geometry_summary(lv.vectors, lv.labels, n_permutations=cfg.permutations, n_bootstrap=cfg.bootstrap,
                             n_shuffles=cfg.shuffles, seed=cfg.seed, parents=parents,
                             expensive_permutations=20 if many else 100, lda_permutations=5 if many else 20, **kw)
    per_concept = per_concept_table(lv.vectors, lv.labels, **kw)
    dirs, names = concept_directions(prepare(lv.vectors, lv.labels, **kw), lv.labels, "diff")
    out: dict[str, Any] = {"stats": stats, "per_concept": per_concept, "directions": (direction_abs_cos(dirs), names),
                           "n_words": len(lv.words), "n_concepts": len(names), "dim": int(lv.vectors.shape[1])}
    X = prepare(lv.vectors, lv.labels, **kw)
    codes, _ = encode_labels(lv.labels)
    out["centring"] = centring_report(lv.vectors, lv.labels, n_permutations=cfg.permutations,
                                      n_bootstrap=cfg.bootstrap, seed=cfg.seed, signs=signs)
    strata = _strata(space, lv.words, cfg)
    if strata is not None:
        out["matched"] = matched_null(lv.vectors, lv.labels, strata, n_permutations=cfg.permutations, seed=cfg.seed,
                                      **kw)
    if len(names) <= MANY_CONCEPTS:
        k = len(names)
        out["pair_test"] = direction_pair_test(lambda c: direction_units(X, c, k), codes, names, cfg.permutations,
                                               np.random.default_rng([cfg.seed, 37]))
    if cfg.probes and len(names) >= 4:
        out["heldout_probe"] = heldout_concept_probe(X, codes, seed=cfg.seed)
    if cfg.probes and len(names) <= MAX_PROBE_CLASSES:
        out["probe"] = linear_probe(lv.vectors, lv.labels, words=lv.words, seed=cfg.seed)
    elif cfg.probes:
        log.warning("layer %s: %d concepts; the logistic-regression probe is skipped above %d classes",
                    space.name, len(names), MAX_PROBE_CLASSES)
    # Polysemous rows carry no signs: they are compared with the sign-aligned concept centroids.
    concept_vectors = lv.vectors if signs is None else lv.vectors * np.where(signs < 0, -1.0, 1.0)[:, None]
    known = set(lv.labels.tolist())
    for key, extra in (("polysemy", space.polysemy), ("controls", space.controls)):
        if extra is None:
            continue
        if key == "controls":  # monosemous controls: the same measurement with one sense, as a baseline
            keep = np.isin(extra.labels, list(known))
            if not keep.any():
                continue
            extra = LabelledVectors(extra.vectors[keep], extra.words[keep], extra.labels[keep])
        out[key] = polysemy_analysis(concept_vectors, lv.labels, extra.vectors, extra.words, extra.labels,
                                     words=lv.words, whiten=space.reference, center_vectors=cfg.center)
    return out


def _frequency_ranks(path: str) -> dict[str, int]:
    """word -> rank (0 = most frequent) from a file of words in frequency order (first field of each line)."""
    ranks: dict[str, int] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            word = line.split(" ", 1)[0].strip().lower()
            if word and word not in ranks:
                ranks[word] = len(ranks)
    if not ranks:
        raise ValueError(f"frequency_list={path!r} holds no words; accepted: a text file, one word per line")
    return ranks


def _strata(space: Space, words: np.ndarray, cfg: GeometryConfig) -> np.ndarray | None:
    """The matched null's stratum per word (token count, x frequency quartile with --frequency-list), or None
    when the space does not know its words' token counts (saved vectors)."""
    tokens = space.meta.get("word_tokens")
    if not tokens:
        return None
    n_tokens = np.array([tokens[str(w)] for w in words])
    if not cfg.frequency_list:
        return strata_codes(n_tokens)
    ranks = _frequency_ranks(cfg.frequency_list)
    return strata_codes(n_tokens, np.array([ranks.get(str(w).lower(), np.nan) for w in words], dtype=float))


def measure_baselines(cfg: GeometryConfig, spaces: list[Space], loaded: LoadedModel, *,
                      quiet: bool = False) -> tuple[dict[str, dict[str, dict[str, Any]]], list[dict[str, Any]]]:
    """Trained minus each baseline of :data:`BASELINE_STATISTICS`, per layer, with a paired cluster bootstrap
    over concepts: ({baseline: {layer: {statistic: Difference}}}, baselines.csv rows). The baseline spaces hold
    the same words (the same tokenizer) in the same rows, measured with the same centring."""
    words = list(dict.fromkeys(str(w) for sp in spaces for w in sp.concepts.words))
    ecfg = replace(cfg.extraction, cache_dir=None)
    matrices: dict[str, dict[str, np.ndarray]] = {}
    index: dict[str, dict[str, int]] = {}
    for kind in cfg.baselines:
        if kind == "embeddings":
            ext = extract_words(words, replace(ecfg, space="input", layers="all"), loaded=loaded,
                                show_progress=not quiet)
            matrices[kind] = {sp.name: ext.vectors["input"] for sp in spaces}
        else:
            ext = extract_words(words, ecfg, loaded=baseline_model(loaded, kind, seed=cfg.seed),
                                show_progress=not quiet)
            matrices[kind] = {sp.name: ext.vectors[sp.name] for sp in spaces}
        index[kind] = {w: i for i, w in enumerate(ext.words)}
    out: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in cfg.baselines}
    rows: list[dict[str, Any]] = []
    for li, sp in enumerate(spaces):
        lv = sp.concepts
        trained = statistic_units(lv.vectors, lv.labels, center_vectors=cfg.center, seed=cfg.seed)
        for bi, kind in enumerate(cfg.baselines):
            missing = [str(w) for w in lv.words if str(w) not in index[kind]]
            if missing:
                raise ValueError(f"baseline {kind}: words {missing[:5]} are not represented; the same tokenizer "
                                 "should represent every word the model does")
            B = matrices[kind][sp.name][[index[kind][str(w)] for w in lv.words]].astype(np.float64)
            base = statistic_units(B, lv.labels, center_vectors=cfg.center, seed=cfg.seed)
            rng = np.random.default_rng([cfg.seed, 31, li, bi])
            out[kind][sp.name] = {}
            for stat in BASELINE_STATISTICS:
                diff = paired_difference(trained[stat], base[stat], cfg.bootstrap, rng)
                out[kind][sp.name][stat] = diff.to_dict()
                rows.append({"layer": sp.name, "baseline": kind, "statistic": stat, **diff.to_dict()})
    return out, rows


def _layer_row(name: str, result: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"layer": name, "n_words": result["n_words"], "n_concepts": result["n_concepts"],
                           "dim": result["dim"]}
    for stat_name, s in result["stats"].items():
        row.update({stat_name: s.value, f"{stat_name}_null": s.null_mean, f"{stat_name}_null_low": s.null_low,
                    f"{stat_name}_null_high": s.null_high, f"{stat_name}_ci_low": s.ci_low,
                    f"{stat_name}_ci_high": s.ci_high, f"{stat_name}_p": s.p_value,
                    f"{stat_name}_effect": s.effect_size, f"{stat_name}_shuffled": s.shuffled_mean,
                    f"{stat_name}_isotropic": s.isotropic})
    if "probe" in result:
        p = result["probe"]
        row.update({"probe_accuracy": p.accuracy, "probe_control_accuracy": p.control_accuracy,
                    "probe_selectivity": p.selectivity, "probe_chance": p.chance})
    if "heldout_probe" in result:
        row.update({f"heldout_concept_probe_{k}": v for k, v in result["heldout_probe"].to_dict().items()})
    row.update(result["centring"])
    for stat, m in result.get("matched", {}).items():
        row.update({f"{stat}_matched_null": m["null"], f"{stat}_matched_null_low": m["null_low"],
                    f"{stat}_matched_null_high": m["null_high"], f"{stat}_matched_p": m["p_value"]})
    if "pair_test" in result:
        t = result["pair_test"].summary()
        row.update({"direction_pairs_significant_bh": t["n_significant"], "direction_pairs": t["n_pairs"],
                    "direction_abs_cos_without_significant_pairs": t["mean_abs_cos_without_significant"]})
    if "polysemy" in result:
        row.update({f"polysemy_{k}": v for k, v in result["polysemy"].summary.items()})
    if "controls" in result:
        row.update({f"controls_{k}": v for k, v in result["controls"].summary.items()})
    return row


@dataclass
class GeometryResult:
    """Every measurement of a geometry run, in memory: per-layer results, the tables and the summary."""

    config: GeometryConfig
    spaces: list[Space]  # the measured spaces (concepts with < 2 represented words dropped)
    results: dict[str, dict[str, Any]]  # layer -> analyse_space's output
    layer_rows: list[dict[str, Any]]
    probe_rows: list[dict[str, Any]]
    polysemy_rows: list[dict[str, Any]]
    concept_rows: list[dict[str, Any]]
    concept_set: dict[str, Any]
    summary: dict[str, Any]
    baseline_rows: list[dict[str, Any]] | None = None  # baselines.csv: trained minus each baseline per layer

    @property
    def last_layer(self) -> str:
        """Name of the last measured space (the headline layer)."""
        return self.spaces[-1].name

    def figures(self) -> dict[str, Figure]:
        """The run's figures by file name: per-layer curves and the last layer's direction heatmap."""
        source, cfg = self.summary["source"], self.config
        random_tag = " (random weights)" if self.summary["random_weights"] else ""
        matrix, names = self.results[self.last_layer]["directions"]
        extra = {"baseline_differences": baseline_differences_figure(
            self.baseline_rows, title=f"{source}: trained minus baselines per layer")} if self.baseline_rows else {}
        return {
            **extra,
            "geometry_layers": layer_curves_figure(
                self.layer_rows, title=f"{source}{random_tag}: concept geometry, {self.summary['space']} "
                                       f"(whiten: {cfg.whiten}, {cfg.permutations} permutations)"),
            "direction_heatmap": direction_heatmap_figure(
                matrix, names, title=f"{source}{random_tag}, layer {self.last_layer}: |cos| of concept directions"),
        }

    def save(self, run: RunFolder) -> None:
        """Write config.yaml, vectors/, the CSV tables, concepts.json, figures and summary.json into ``run``."""
        run.save_config(self.config)
        (run.path / "vectors").mkdir(exist_ok=True)
        for space in self.spaces:
            space.concepts.save(run.path / "vectors" / f"{space.name}.npz")
            if space.polysemy is not None:
                space.polysemy.save(run.path / "vectors" / f"{space.name}.polysemy.npz")
        run.write_csv("layers.csv", self.layer_rows)
        run.write_csv("per_concept.csv", self.concept_rows)
        run.write_csv("probes.csv", self.probe_rows, fieldnames=["layer", "accuracy", "control_accuracy",
                                                                 "selectivity", "chance", "n_train", "n_test",
                                                                 "n_classes", *HELDOUT_PROBE_COLUMNS])
        run.write_csv("polysemy.csv", self.polysemy_rows, fieldnames=None if self.polysemy_rows else
                      ["layer", "kind", "word", "senses", "sense_cos", "sense_null", "sense_p", "sense_rank",
                       "predicted", "precision", "recall", "top_k_recall"])
        matrix, names = self.results[self.last_layer]["directions"]
        run.write_csv("direction_abs_cos.csv", [{"concept": n, **{m: float(v) for m, v in zip(names, row, strict=True)}}
                                                for n, row in zip(names, matrix, strict=True)])
        if self.baseline_rows:
            run.write_csv("baselines.csv", self.baseline_rows)
        pair_test = self.results[self.last_layer].get("pair_test")
        if pair_test is not None:
            run.write_csv("direction_pairs.csv", pair_test.pairs())
        write_json(run.path / "concepts.json", self.concept_set)
        captions = {"geometry_layers": LAYERS_CAPTION, "direction_heatmap": HEATMAP_CAPTION,
                    "baseline_differences": BASELINES_CAPTION}
        for name, fig in self.figures().items():
            save_figure(fig, run.figures, name, caption=captions[name])
        run.write_summary(self.summary)


def _first(names: list[str], n: int = 20) -> str:
    """The first ``n`` names, then how many more (all of them are in summary.json's dropped_concepts)."""
    return ", ".join(names[:n]) + (f" (+{len(names) - n} more, listed in summary.json)" if len(names) > n else "")


def measure_geometry(cfg: GeometryConfig, *, loaded: LoadedModel | None = None, quiet: bool = False,
                     concept_set: Any = None) -> GeometryResult:
    """Measure every space (layer) of a model or a saved vectors file; nothing is written to disk."""

    seed_everything(cfg.seed)
    streamed: dict[str, StreamingGeometry] = {}
    if cfg.vectors:
        spaces, info = spaces_from_file(cfg)
    elif cfg.store:
        loaded = loaded if loaded is not None else load_for(cfg.extraction)
        found, info, streamed = spaces_from_store(cfg, loaded=loaded, quiet=quiet, concept_set=concept_set)
        if found is None:
            stats = {layer: streamed_stats(g, cfg) for layer, g in streamed.items()}
            rows = [_streamed_row(layer, g, stats[layer]) for layer, g in streamed.items()]
            last = rows[-1]
            summary = {**{k: {"value": last[k], "null": None, "p_value": None} for k in STREAMED},
                       **{k: s.to_dict() for k, s in stats[last["layer"]].items()},
                       "layer": last["layer"], "source": info["source"], "streaming_only": True,
                       "store": info["store"], "n_words": last["n_words"], "n_concepts": last["n_concepts"],
                       "dim": last["dim"], "center": cfg.center, "whiten": cfg.whiten,
                       "per_layer": {r["layer"]: r for r in rows}, "words_left_out": info["words_left_out"]}
            return StoreGeometryResult(cfg, rows, strict_json(summary))
        spaces = found
    else:
        loaded = loaded if loaded is not None else load_for(cfg.extraction)
        spaces, info = spaces_from_model(cfg, loaded=loaded, quiet=quiet, concept_set=concept_set)
    layer_rows, probe_rows, poly_rows, concept_rows = [], [], [], []
    results: dict[str, dict[str, Any]] = {}
    dropped_concepts: dict[str, list[str]] = {}
    dropped_poly: list[str] = []
    # concepts of the set none of whose words reach the space (every word unrepresentable) are dropped too, and say so
    listed = set((info.get("concept_set") or {}).get("concepts") or {})
    for space in progress(spaces, desc="geometry per layer"):
        absent = listed - set(space.concepts.labels.tolist())
        space.concepts, dropped = _keep_concepts(space.concepts)
        dropped = sorted({*dropped, *absent, *info.get("concepts_without_own_words", [])})
        if dropped:
            dropped_concepts[space.name] = dropped
            if space is spaces[0]:
                log.warning("%d concept(s) left out (fewer than 2 words the model represents): %s", len(dropped),
                            _first(dropped))
        if len(set(space.concepts.labels.tolist())) < 2:
            raise ValueError(f"layer {space.name}: fewer than 2 concepts have >= 2 represented words "
                             f"(dropped: {_first(dropped)}); check the concept set and the model's tokenizer")
        space.polysemy, dropped_p = _poly_subset(space.polysemy, set(space.concepts.labels.tolist()))
        dropped_poly = dropped_p
        space.concepts.meta.update({"layer": space.name})
        if space.polysemy is not None:
            space.polysemy.meta.update({"layer": space.name})
        with single_threaded_blas():
            result = analyse_space(space, cfg, info["parents"])
        results[space.name] = result
        layer_rows.append(_layer_row(space.name, result))
        if space.name in streamed:  # the shard-by-shard values beside the in-memory ones (equal to float tolerance)
            layer_rows[-1].update({f"{k}_streamed": v for k, v in streamed[space.name].summary().items()
                                   if k in STREAMED})
        if "probe" in result:
            held = result.get("heldout_probe")
            probe_rows.append({"layer": space.name, **result["probe"].to_dict(),
                               **{f"heldout_concept_{k}": v for k, v in (held.to_dict() if held else {}).items()}})
        for kind, key in (("polysemous", "polysemy"), ("control", "controls")):
            if key in result:
                poly_rows += [{"layer": space.name, "kind": kind, **r} for r in result[key].rows()]
        concept_rows += [{"layer": space.name, **r} for r in result["per_concept"]]
        log.info("layer %s: within %.3f, cross %.3f (%s), direction |cos| %.3f", space.name,
                 result["stats"]["within_concept_cosine"].value, result["stats"]["cross_concept_cosine"].value,
                 p_text(result["stats"]["within_minus_cross"].p_value, cfg.permutations),
                 result["stats"]["concept_direction_abs_cos"].value)

    baselines: dict[str, Any] = {}
    baseline_rows: list[dict[str, Any]] = []
    skipped = None
    if cfg.baselines and cfg.vectors:
        skipped = "saved vectors: no model to re-initialise"
    elif cfg.baselines and cfg.store:
        skipped = "store: the baselines are measured in memory only (run without --store for them)"
    elif cfg.baselines and cfg.whiten != "none":
        skipped = f"whiten={cfg.whiten}: the baselines would need their own whitening reference"
    elif cfg.baselines and loaded is not None:
        baselines, baseline_rows = measure_baselines(cfg, spaces, loaded, quiet=quiet)
    if skipped:
        log.warning("baselines %s skipped (%s)", ",".join(cfg.baselines), skipped)

    concept_set = dict(info["concept_set"])
    concept_set["dropped_concepts"] = dropped_concepts
    concept_set["dropped_polysemous_words"] = dropped_poly
    concept_set["words_in_several_concepts"] = info.get("words_in_several_concepts", {})
    last = spaces[-1].name
    headline = results[last]
    summary: dict[str, Any] = {name: s.to_dict() for name, s in headline["stats"].items()}
    summary.update({
        "layer": last, "source": info["source"],
        "space": spaces[0].meta.get("space", cfg.extraction.space) if not cfg.vectors else "saved vectors",
        "whiten": cfg.whiten, "center": cfg.center,
        "n_words": headline["n_words"], "n_concepts": headline["n_concepts"], "dim": headline["dim"],
        "probe": headline["probe"].to_dict() if "probe" in headline else None,
        "polysemy": headline["polysemy"].to_dict() if "polysemy" in headline else None,
        "controls": headline["controls"].to_dict() if "controls" in headline else None,
        "per_layer": {r["layer"]: {k: {"value": results[r["layer"]]["stats"][k].value,
                                       "null": results[r["layer"]]["stats"][k].null_mean,
                                       "p_value": results[r["layer"]]["stats"][k].p_value}
                                   for k in results[r["layer"]]["stats"]} for r in layer_rows},
        "words_left_out": info.get("words_left_out", {}), "dropped_concepts": dropped_concepts,
        "dropped_polysemous_words": dropped_poly, "extraction": info.get("extraction"),
        "words_in_several_concepts": info.get("words_in_several_concepts", {}),
        "concepts_without_own_words": info.get("concepts_without_own_words", []),
        "random_weights": bool(spaces[0].meta.get("random_weights", False)),
        "baselines": baselines, "baselines_skipped": skipped,
        "baselines_rule": {"what": {k: BASELINE_NAMES[k] for k in cfg.baselines},
                           "difference": "trained minus baseline, same words and rows, same centring; 95% "
                                         "percentile interval from a cluster bootstrap over concepts (the same "
                                         "concept resample for both spaces)", "seed": cfg.seed},
        "centring": headline["centring"],
        "matched_null": headline.get("matched"),
        "direction_pairs": headline["pair_test"].summary() if "pair_test" in headline else None,
        "heldout_concept_probe": headline["heldout_probe"].to_dict() if "heldout_probe" in headline else None,
    })
    if cfg.store:
        summary["store"] = info["store"]
        summary["streaming_only"] = False
    return GeometryResult(cfg, spaces, results, layer_rows, probe_rows, poly_rows, concept_rows, concept_set,
                          strict_json(summary), baseline_rows)


def run_geometry(cfg: GeometryConfig, run: RunFolder, *, loaded: LoadedModel | None = None,
                 quiet: bool = False, concept_set: Any = None) -> dict[str, Any]:
    """Measure (:func:`measure_geometry`), write the run folder, and return summary.json's content."""
    result = measure_geometry(cfg, loaded=loaded, quiet=quiet, concept_set=concept_set)
    result.save(run)
    return result.summary


def check_store_options(cfg: GeometryConfig) -> None:
    """Options a store run cannot honour are refused before anything runs (one error naming them)."""
    if cfg.vectors:
        raise ValueError(f"--store {cfg.store} and --vectors {cfg.vectors} are both given; accepted: one of them")
    if cfg.whiten != "none":
        raise ValueError(f"--store with --whiten {cfg.whiten}: streamed statistics are centred only; accepted: "
                         "--whiten none with --store, or no --store")
    if cfg.extraction.space != "hidden":
        raise ValueError(f"--store with --space {cfg.extraction.space}: a store holds hidden states; accepted: "
                         "--space hidden with --store")
    if Path(cfg.store).exists() and not Path(cfg.store).is_dir():
        raise ValueError(f"--store {cfg.store} is a file; accepted: a store folder (new or written by mcicl)")


def execute(cfg: GeometryConfig, ctx: JobContext) -> int:
    """``mcicl probe geometry``: check the inputs, open the run folder, measure, save, print the headline."""
    concept_set = None
    refuse_ignored(ctx.sources, cfg.extraction.space)
    if cfg.vectors:
        # a saved vectors file fixes the words, labels and layers: model options would be ignored, so refuse them
        ignored = sorted({ctx.sources[p] for p in ctx.sources if p == "concepts" or p.startswith("extraction.")})
        if ignored:
            raise ValueError(f"--vectors {cfg.vectors} is measured as saved, so {', '.join(ignored)} would be "
                             "ignored; accepted: --vectors alone, or a model with --concepts/--layers and no --vectors")
        if not Path(cfg.vectors).is_file():
            raise FileNotFoundError(f"--vectors {cfg.vectors}: no such file; accepted: a .npz written by "
                                    "mcicl probe extract/geometry or mcicl synthetic (LabelledVectors)")
    else:
        concept_set = load_concepts(cfg)  # a typo in --concepts fails before the output folder exists
    if cfg.store:
        check_store_options(cfg)
    folder = ctx.create_run(inputs={"--model": cfg.extraction.model, "--vectors": cfg.vectors,
                                    "--concepts": cfg.concepts, "--polysemy": cfg.polysemy,
                                    "--cache-dir": cfg.extraction.cache_dir, "--store": cfg.store})
    summary = run_geometry(cfg, folder, quiet=ctx.quiet, concept_set=concept_set)
    w, c = summary["within_concept_cosine"], summary["cross_concept_cosine"]
    if w["null"] is None:
        log.info("layer %s (streamed from the store, no nulls): within-concept cosine %.3f, cross-concept %.3f",
                 summary["layer"], w["value"], c["value"])
    else:
        log.info("layer %s%s: within-concept cosine %.3f (null %.3f, p=%.3g), cross-concept %.3f (null %.3f, "
                 "p=%.3g)", summary["layer"], " (streamed from the store)" if summary.get("streaming_only") else "",
                 w["value"], w["null"], w["p_value"], c["value"], c["null"], c["p_value"])
    print(f"output is in {folder.path}")
    return 0


def demo_stage(ctx: DemoContext) -> dict[str, Any]:
    """Demo stage "real geometry": every layer (``small``: input embeddings and the last layer, fewer nulls)."""
    # 100 permutations keep p < 0.01 reachable (the smallest p is 1/101); full runs use 200.
    extraction = ExtractionConfig(model=ctx.model, layers="0,-1" if ctx.small else "all")
    cfg = GeometryConfig(extraction=extraction, permutations=100 if ctx.small else 200,
                         bootstrap=200 if ctx.small else 1000, shuffles=2 if ctx.small else 10, seed=ctx.seed)
    folder = ctx.stage_run("geometry", "probe geometry")
    summary = run_geometry(cfg, folder, quiet=ctx.quiet)
    w, c, d = (summary[k] for k in ("within_concept_cosine", "cross_concept_cosine", "concept_direction_abs_cos"))
    return {
        "folder": str(folder.path), "layer": summary["layer"], "n_words": summary["n_words"],
        "n_concepts": summary["n_concepts"],
        "within_concept_cosine": w["value"], "within_null": w["null"], "within_p": w["p_value"],
        "cross_concept_cosine": c["value"], "cross_null": c["null"], "cross_p": c["p_value"],
        "within_minus_cross_p": summary["within_minus_cross"]["p_value"],
        "concept_direction_abs_cos": d["value"], "direction_null": d["null"], "direction_isotropic": d["isotropic"],
        "probe_accuracy": (summary.get("probe") or {}).get("accuracy"),
        "polysemy_top_k_recall": (summary.get("polysemy") or {}).get("mean_top_k_recall"),
        "vectors": str(folder.path / "vectors"),
    }
