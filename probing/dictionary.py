"""``mcicl probe dictionary``: the paper's sparse-coding premise asked of real (or saved) word vectors without labels.

Per layer: a dictionary learned on the concept words' vectors (as they are; ``--center`` subtracts their mean), its
size chosen on held-out reconstruction error (:func:`analysis.engine.sparse_coding.choose_size`); each concept
direction's best-matching atom against labels shuffled across words, the same dictionary randomly rotated, and the
dictionary of the random-weight model (same tokenizer, same words, same size); the purity of each atom's top-loading
words; whether polysemous words' codes load on atoms of their senses, against the same words with random senses
(chance) and monosemous words; with ``--truth``, recovery of a known dictionary (matched cosines, Amari distance).
Outputs: ``summary.json``, ``layers.csv``, ``sizes.csv``, ``atoms.csv``, ``polysemy.csv``,
``dictionaries/<layer>.npz`` and ``figures/``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from mcicl.analysis.engine.measures import concept_directions, prepare
from mcicl.analysis.engine.sparse_coding import (
    Learner,
    abs_cosines,
    amari_distance,
    atom_concepts,
    atom_purity,
    atoms_against_concepts,
    bootstrap_mean,
    choose_size,
    learn_dictionaries,
    matched_cosines,
    relative_error,
    sense_recall,
    sparse_codes,
)
from mcicl.analysis.engine.sparse_coding_figures import atoms_figure, recall_figure, sizes_figure
from mcicl.core.io import strict_json
from mcicl.core.jobs import JobContext
from mcicl.core.logs import progress
from mcicl.core.plotting import Caption, save_figure
from mcicl.core.runs import RunFolder
from mcicl.core.seeding import seed_everything
from mcicl.core.vectors import LabelledVectors, Space
from mcicl.probing.dictionary_config import DictionaryConfig, parse_grid
from mcicl.probing.extract import load_for
from mcicl.probing.geometry import (
    check_store_options,
    load_concepts,
    spaces_from_file,
    spaces_from_model,
    spaces_from_store,
)
from mcicl.probing.geometry_config import GeometryConfig
from mcicl.probing.memory import DoesNotFitError, gib
from mcicl.probing.models import baseline_model
from mcicl.probing.sparse_autoencoder import learn_sae_dictionaries

log = logging.getLogger("mcicl")

SIZES_CAPTION = Caption(
    "Held-out reconstruction error per dictionary size",
    "Held-out relative reconstruction error ||x - code D||^2 / ||x||^2 on 25% of the words, per number "
                 "of atoms (x) and atoms per word (one line each); the ring marks the size chosen by the "
                 "one-standard-error rule (the smallest model within one SE of the best), error bars are +-1 SE "
                 "over held-out words.")
ATOMS_CAPTION = Caption(
    "Learned atoms against concept directions",
    "|cos| between each concept direction (rows) and the learned atoms (columns; the atoms that best "
                 "match some concept, then the most used). Read along a row: one bright cell means one atom "
                 "carries the concept. Two nulls are in the title: the same dictionary randomly rotated (same Gram "
                 "matrix; it leaves the data's subspace, so it is weak) and concept directions from labels "
                 "shuffled across words (same data, same atoms: the null that says whether atoms follow concepts).")
RECALL_CAPTION = Caption(
    "Polysemous words as sparse codes",
    "Share of a word's senses found among the concepts of its largest-loading atoms (as many atoms "
                  "as senses): polysemous words, the same words with random senses (chance), monosemous words; "
                  "95% bootstrap intervals over words.")


def geometry_view(cfg: DictionaryConfig) -> GeometryConfig:
    """The same inputs as a geometry config, so the two jobs read models and files the same way."""
    return GeometryConfig(extraction=cfg.extraction, vectors=cfg.vectors, store=cfg.store, concepts=cfg.concepts,
                          polysemy=cfg.polysemy, seed=cfg.seed, probes=False)


def _grid(cfg: DictionaryConfig, n_concepts: int, n_rows: int) -> list[int]:
    grid = [n_concepts, 2 * n_concepts, 4 * n_concepts] if cfg.atoms == "auto" else parse_grid(cfg.atoms, "atoms")
    train_rows = n_rows - max(1, int(round(0.25 * n_rows)))
    kept = sorted({min(a, train_rows) for a in grid if a >= 1})
    if kept != sorted(set(grid)):
        log.warning("atoms %s capped at %d (the words in the fitting split)", grid, train_rows)
    return kept


def learner(cfg: DictionaryConfig) -> Learner:
    """The dictionary learner of ``cfg.solver`` ({nonzeros: dictionary} for a grid of sparsities)."""
    return learn_sae_dictionaries if cfg.solver == "sae" else learn_dictionaries


def _shift(lv: LabelledVectors, cfg: DictionaryConfig) -> np.ndarray:
    """What is subtracted from every vector before fitting: the words' mean with ``center``, else 0."""
    return lv.vectors.astype(np.float64).mean(axis=0) if cfg.center else np.zeros(lv.vectors.shape[1])


def _against_concepts(lv: LabelledVectors, dic: np.ndarray, cfg: DictionaryConfig) -> tuple[dict[str, Any],
                                                                                              np.ndarray, list[str]]:
    """Atoms against the concept directions of ``lv``, with the label-permutation and rotation nulls."""
    dirs, dir_names = concept_directions(prepare(lv.vectors, lv.labels, center_vectors=True), lv.labels, "diff")
    rng = np.random.default_rng(cfg.seed)
    shuffled = [concept_directions(prepare(lv.vectors, labels, center_vectors=True), labels, "diff")[0]
                for labels in (rng.permutation(lv.labels) for _ in range(cfg.permutations))]
    vs = atoms_against_concepts(dirs, dic, rotations=cfg.permutations, seed=cfg.seed, permuted=shuffled)
    return vs, dirs, list(dir_names)


def fit_space(space: Space, cfg: DictionaryConfig, truth: LabelledVectors | None = None) -> dict[str, Any]:
    """Every measurement of one space (a pure function of its vectors and the config)."""
    lv = space.concepts
    mean = _shift(lv, cfg)
    x = lv.vectors.astype(np.float64) - mean
    names = list(dict.fromkeys(lv.labels.tolist()))
    grid = _grid(cfg, len(names), len(x))
    ks = parse_grid(cfg.nonzeros, "nonzeros", high=64)
    learn = learner(cfg)
    choice = choose_size(x, grid, ks, seed=cfg.seed, max_iter=cfg.iterations, learner=learn)
    # With a known truth every sparsity is fitted (recovery is reported at each); else only the chosen one.
    fitted = learn(x, choice.atoms, ks if truth is not None else [choice.nonzeros], seed=cfg.seed,
                   max_iter=cfg.iterations)
    dic = fitted[choice.nonzeros]
    codes = sparse_codes(x, dic, choice.nonzeros)
    vs, dirs, dir_names = _against_concepts(lv, dic, cfg)
    owner = atom_concepts(dirs, dic)
    purity = atom_purity(codes, lv.labels)
    out: dict[str, Any] = {
        "choice": choice, "dictionary": dic, "codes": codes, "concept_names": list(dir_names),
        "atoms_vs_concepts": vs, "purity": purity, "atom_concept": owner, "shift": mean,
        "cos_matrix": abs_cosines(dirs, dic), "fit_error": relative_error(x, dic, choice.nonzeros),
        "n_words": len(x), "dim": int(x.shape[1]),
    }
    index = {c: i for i, c in enumerate(dir_names)}
    # Monosemous words: is the word's own concept the concept of its largest atom?
    mono = sense_recall(codes, [[index[c]] for c in lv.labels], owner)
    out["monosemous_recall"] = mono
    poly = space.polysemy
    if poly is not None and len(poly.words):
        senses = [[index[s] for s in str(lab).split("|") if s in index] for lab in poly.labels]
        keep = [i for i, s in enumerate(senses) if len(s) >= 2]
        if keep:
            pcodes = sparse_codes(poly.vectors[keep].astype(np.float64) - mean, dic, choice.nonzeros)
            gold = [senses[i] for i in keep]
            recall = sense_recall(pcodes, gold, owner)
            # Chance: the same codes scored against random sense sets of the same sizes (200 draws).
            rng = np.random.default_rng(cfg.seed)
            chance = np.mean([sense_recall(pcodes, [list(rng.choice(len(dir_names), len(g), replace=False))
                                                    for g in gold], owner) for _ in range(200)], axis=0)
            out["polysemy"] = {"words": [str(poly.words[i]) for i in keep], "senses": gold, "recall": recall,
                               "chance": chance}
    if truth is not None:
        t = truth.vectors.astype(np.float64)
        if t.shape[1] != x.shape[1]:
            raise ValueError(f"--truth has dimension {t.shape[1]} but the vectors have {x.shape[1]}; accepted: a "
                             "dictionary of the same space (a synthetic run's dictionary.npz with its features.npz)")
        # Recovery is judged on the dictionary the procedure chose (the test of the procedure); the same fit at
        # the truth's own size is reported beside it.
        matched = matched_cosines(t, dic)
        by_nonzeros = {str(k): float((matched_cosines(t, fitted[k]) >= 0.9).mean()) for k in ks}
        out["recovery"] = {"n_true_atoms": len(t), "matched_cos": matched,
                           "share_matched_0_9": float((matched >= 0.9).mean()), "amari": amari_distance(t, dic),
                           "share_matched_0_9_by_nonzeros": by_nonzeros}
    return out


def fit_baseline(space: Space, cfg: DictionaryConfig, reference: dict[str, Any]) -> dict[str, Any]:
    """A baseline model's layer: a dictionary of the trained fit's size learned on its vectors of the same words,
    its atoms against its own concept directions (the same statistic and label-permutation null), and the paired
    difference trained minus baseline per concept."""
    lv = space.concepts
    x = lv.vectors.astype(np.float64) - _shift(lv, cfg)
    choice = reference["choice"]
    dic = learner(cfg)(x, choice.atoms, [choice.nonzeros], seed=cfg.seed, max_iter=cfg.iterations)[choice.nonzeros]
    vs, _, names = _against_concepts(lv, dic, cfg)
    mine = dict(zip(reference["concept_names"], reference["atoms_vs_concepts"]["per_concept"], strict=True))
    theirs = dict(zip(names, vs["per_concept"], strict=True))
    common = [c for c in reference["concept_names"] if c in theirs]
    diff = np.array([mine[c] - theirs[c] for c in common])
    return {"atoms_vs_concepts": vs, "concept_names": names, "difference": diff, "common_concepts": common}


def _interval(values: np.ndarray, cfg: DictionaryConfig) -> dict[str, Any]:
    low, high = bootstrap_mean(values, cfg.bootstrap, cfg.seed)
    return {"value": float(np.mean(values)) if len(values) else None, "ci": [low, high], "n": int(len(values)),
            "resampled": "words"}


def _layer_summary(name: str, r: dict[str, Any], cfg: DictionaryConfig) -> dict[str, Any]:
    vs = r["atoms_vs_concepts"]
    out: dict[str, Any] = {
        "layer": name, "n_words": r["n_words"], "dim": r["dim"], "atoms": r["choice"].atoms,
        "nonzeros": r["choice"].nonzeros, "fit_error": r["fit_error"],
        # The error still falling at the largest candidate means the rule chose the grid's edge, not a size.
        "size_at_grid_edge": r["choice"].atoms == max(row["atoms"] for row in r["choice"].rows)
        or r["choice"].nonzeros == max(row["nonzeros"] for row in r["choice"].rows),
        "best_atom_cos": {"value": vs["mean"], "null": vs["label_null"], "null_band": vs["label_null_band"],
                          "p_value": vs["label_p"], "null_kind": f"{vs['rotations']} label permutations across "
                                                                  "words (same data, same atoms)",
                          "rotation_null": vs["mean_null"], "rotation_null_band": vs["mean_null_band"],
                          "rotation_p": vs["mean_p"]},
        "concepts_beating_rotation_null": int((vs["per_concept_p"] <= 0.05).sum()),
        "n_concepts": len(r["concept_names"]),
        "atom_purity": float(np.nanmean(r["purity"])),
        "monosemous_recall": _interval(r["monosemous_recall"], cfg),
    }
    if "polysemy" in r:
        p = r["polysemy"]
        out["polysemous_recall"] = _interval(p["recall"], cfg)
        out["polysemous_recall_chance"] = _interval(p["chance"], cfg)
        out["polysemous_minus_chance"] = _interval(p["recall"] - p["chance"], cfg)
    for kind, b in r.get("baselines", {}).items():
        bvs = b["atoms_vs_concepts"]
        out[kind] = {"best_atom_cos": bvs["mean"], "label_null": bvs["label_null"], "label_p": bvs["label_p"]}
        out[f"trained_minus_{kind}"] = {**_interval(b["difference"], cfg), "resampled": "concepts"}
    if "recovery" in r:
        rec = r["recovery"]
        out["recovery"] = {k: v for k, v in rec.items() if k != "matched_cos"}
        out["recovery"]["min_matched_cos"] = float(rec["matched_cos"].min())
    return out


def _flat_row(s: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for k, v in s.items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                if kk == "ci":
                    row[f"{k}_ci_low"], row[f"{k}_ci_high"] = vv
                elif kk.endswith("null_band"):
                    row[f"{k}_{kk[:-5]}_low"], row[f"{k}_{kk[:-5]}_high"] = vv
                elif not isinstance(vv, (list, dict)):
                    row[f"{k}" if kk == "value" else f"{k}_{kk}"] = vv
        else:
            row[k] = v
    return row


@dataclass
class DictionaryResult:
    """Every fit of a dictionary run, in memory."""

    config: DictionaryConfig
    results: dict[str, dict[str, Any]]  # layer -> fit_space's output
    summary: dict[str, Any]
    spaces: list[Space] = field(default_factory=list)  # the fitted spaces (for refits on subsets)
    world_rows: list[dict[str, Any]] = field(default_factory=list)  # worlds.csv (with --world)

    def figures(self) -> dict[str, Figure]:
        """Held-out error per size, atoms x concepts of the last layer, and sense recall per layer."""
        last = list(self.results)[-1]
        r = self.results[last]
        return {"sizes": sizes_figure({k: v["choice"].rows for k, v in self.results.items()}),
                "atoms_concepts": atoms_figure(r["cos_matrix"], r["concept_names"],
                                               null_mean=r["atoms_vs_concepts"]["mean_null"],
                                               label_null=r["atoms_vs_concepts"]["label_null"],
                                               title=f"{self.summary['source']}, layer {last}"),
                "sense_recall": recall_figure(self.summary["per_layer"])}

    def save(self, run: RunFolder) -> None:
        """config.yaml, the CSV tables, the dictionaries, figures and summary.json into ``run``."""
        run.save_config(self.config)
        (run.path / "dictionaries").mkdir(exist_ok=True)
        sizes, atoms, poly = [], [], []
        for name, r in self.results.items():
            np.savez_compressed(run.path / "dictionaries" / f"{name}.npz", atoms=r["dictionary"].astype(np.float32))
            sizes += [{"layer": name, **row} for row in r["choice"].rows]
            vs = r["atoms_vs_concepts"]
            atoms += [{"layer": name, "concept": c, "best_atom_cos": float(v), "rotation_null": float(nm),
                       "p_value": float(p)} for c, v, nm, p in zip(r["concept_names"], vs["per_concept"],
                                                                   vs["per_concept_null"], vs["per_concept_p"],
                                                                   strict=True)]
            if "polysemy" in r:
                p = r["polysemy"]
                poly += [{"layer": name, "word": w, "senses": "|".join(r["concept_names"][i] for i in s),
                          "recall": float(rc), "chance": float(ch)}
                         for w, s, rc, ch in zip(p["words"], p["senses"], p["recall"], p["chance"], strict=True)]
        run.write_csv("layers.csv", [_flat_row(s) for s in self.summary["per_layer"].values()])
        run.write_csv("sizes.csv", sizes)
        run.write_csv("atoms.csv", atoms)
        run.write_csv("polysemy.csv", poly, fieldnames=None if poly else ["layer", "word", "senses", "recall",
                                                                         "chance"])
        if self.world_rows:
            run.write_csv("worlds.csv", self.world_rows)
        captions = {"sizes": SIZES_CAPTION, "atoms_concepts": ATOMS_CAPTION, "sense_recall": RECALL_CAPTION}
        for name, fig in self.figures().items():
            save_figure(fig, run.figures, name, caption=captions[name])
        run.write_summary(self.summary)


def measure_dictionary(cfg: DictionaryConfig, *, loaded: Any = None, quiet: bool = False,
                       concept_set: Any = None) -> DictionaryResult:
    """Fit every space (layer) of a model or a saved vectors file; nothing is written to disk."""
    seed_everything(cfg.seed)
    gcfg = geometry_view(cfg)
    if cfg.vectors:
        spaces, info = spaces_from_file(gcfg)
    elif cfg.store:
        loaded = loaded if loaded is not None else load_for(cfg.extraction)
        found, info, _ = spaces_from_store(gcfg, loaded=loaded, quiet=quiet, concept_set=concept_set)
        if found is None:
            s = info["store"]
            raise DoesNotFitError(f"--store {cfg.store}: fitting a dictionary needs the rows in memory, about "
                                  f"{gib(s['in_memory_bytes'])} for {s['rows']:,} rows, and {gib(s['budget_bytes'])} "
                                  "are available; accepted: a store that fits (fewer words or layers), or more memory "
                                  "(the streamed statistics of a larger store: probe geometry --store)")
        spaces = found
    else:
        spaces, info = spaces_from_model(gcfg, loaded=loaded, quiet=quiet, concept_set=concept_set)
    truth = LabelledVectors.load(cfg.truth) if cfg.truth else None
    base_spaces: dict[str, dict[str, Space]] = {}
    if cfg.baselines and cfg.vectors:
        log.warning("baselines %s skipped: --vectors has no model to re-initialise", ",".join(cfg.baselines))
    elif cfg.baselines:
        loaded = loaded if loaded is not None else load_for(cfg.extraction)
        for kind in cfg.baselines:
            got, _ = spaces_from_model(gcfg, loaded=baseline_model(loaded, kind, seed=cfg.seed), quiet=quiet,
                                       concept_set=concept_set)
            base_spaces[kind] = {sp.name: sp for sp in got}
    results: dict[str, dict[str, Any]] = {}
    for space in progress(spaces, desc="dictionary per layer"):
        if len(set(space.concepts.labels.tolist())) < 2:
            raise ValueError(f"layer {space.name}: fewer than 2 concepts; accepted: a concept set with >= 2 "
                             "concepts the model represents")
        results[space.name] = fit_space(space, cfg, truth)
        results[space.name]["baselines"] = {kind: fit_baseline(by_name[space.name], cfg, results[space.name])
                                            for kind, by_name in base_spaces.items()}
        choice = results[space.name]["choice"]
        if choice.atoms == max(r["atoms"] for r in choice.rows):
            log.warning("layer %s: the held-out error still falls at the largest number of atoms tried (%d): the "
                        "size is the grid's edge; try larger --atoms", space.name, choice.atoms)
        vs = results[space.name]["atoms_vs_concepts"]
        log.info("layer %s: %d atoms x %d nonzeros; best-atom |cos| %.3f (label null %.3f, rotation null %.3f)",
                 space.name, results[space.name]["choice"].atoms, results[space.name]["choice"].nonzeros,
                 vs["mean"], vs["label_null"], vs["mean_null"])
    per_layer = {name: _layer_summary(name, r, cfg) for name, r in results.items()}
    last = list(per_layer)[-1]
    summary = {"source": info["source"], "layer": last, **per_layer[last],
               "selection": next(iter(results.values()))["choice"].rule,
               "centring": "vectors centred on the mean of the concept words before fitting" if cfg.center else
               "vectors fitted as they are (no mean subtracted: the paper's model has no mean term)",
               "solver": cfg.solver, "baselines": list(base_spaces),
               "random_weights": bool(spaces[0].meta.get("random_weights", False)),
               "per_layer": per_layer}
    return DictionaryResult(cfg, results, strict_json(summary), spaces)


def execute(cfg: DictionaryConfig, ctx: JobContext,
            extend: Callable[[DictionaryResult], str] | None = None) -> int:
    """``mcicl probe dictionary``: check the inputs, open the run folder, fit, save, print the headline.
    ``extend`` (the matched world of ``--world``, which lives in a higher layer: analysis/fitted_world.py) adds to
    the result before it is saved and returns a line for the headline."""
    concept_set = None
    for flag, path in (("--vectors", cfg.vectors), ("--truth", cfg.truth)):
        if path and not Path(path).is_file():
            raise FileNotFoundError(f"{flag} {path}: no such file; accepted: a LabelledVectors .npz written by "
                                    "mcicl probe extract/geometry or mcicl synthetic train")
    if cfg.vectors:
        ignored = sorted({ctx.sources[p] for p in ctx.sources if p == "concepts" or p.startswith("extraction.")})
        if ignored:
            raise ValueError(f"--vectors {cfg.vectors} is fitted as saved, so {', '.join(ignored)} would be "
                             "ignored; accepted: --vectors alone, or a model with --concepts/--layers")
    else:
        concept_set = load_concepts(geometry_view(cfg))
    if cfg.store:
        check_store_options(geometry_view(cfg))
    folder = ctx.create_run(inputs={"--model": cfg.extraction.model, "--vectors": cfg.vectors, "--truth": cfg.truth,
                                    "--concepts": cfg.concepts, "--polysemy": cfg.polysemy,
                                    "--cache-dir": cfg.extraction.cache_dir, "--store": cfg.store})
    result = measure_dictionary(cfg, quiet=ctx.quiet, concept_set=concept_set)
    extra = extend(result) if extend is not None else ""
    result.save(folder)
    s = result.summary
    print(f"layer {s['layer']}: {s['atoms']} atoms, {s['nonzeros']} per word; best-atom |cos| "
          f"{s['best_atom_cos']['value']:.3f} (label-permutation null {s['best_atom_cos']['null']:.3f}, "
          f"rotation null {s['best_atom_cos']['rotation_null']:.3f}); {extra}"
          f"output is in {folder.path}")
    return 0
