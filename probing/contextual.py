"""A word's vector at its occurrence inside a sentence, per layer, and the contextual geometry of a model.

Extraction follows :mod:`probing.extract`'s rule: the sentence is tokenized whole by the fast tokenizer,
the word's tokens are those whose character offsets overlap the occurrence (special tokens excluded), and
its vector is their ``mean`` (or the ``last`` one) in the model's own ``output_hidden_states``; batches are
padded by :mod:`probing.forward` (so batched == single), batched by length, and the occurrences of one sentence share
its forward pass. Vectors can be cached per chunk of contexts (chunks cut in length order).

:func:`measure_contexts` extracts the contexts, the concept words and each context word alone (template
``{word}``), and hands cosine scores to :mod:`analysis.contextual`: sense centroids are the mean
out-of-context vectors of all of a concept's words (in nested WordNet sets, its whole extension); with
``center`` the concept-word mean is subtracted from centroids and out-of-context vectors, and the contexts'
own mean from contextual vectors (a sentence moves every word's vector the same way; only the movement
relative to that is about sense).

:class:`ContextsResult` saves the run folder of ``mcicl probe contexts`` (:func:`execute`): context_layers.csv,
contexts.csv, vectors/contexts_<layer>.npz, summary.json and two figures. With ``--store DIR`` the contextual
vectors are written to (or resumed from) an activation store (:func:`store_contexts`) and measured a shard at a
time (:func:`_score_stored`: the centring mean in one pass, candidate scores per shard, each polysemous word's
pair cosines from its rows alone), so no layer is ever held whole. The config is
:class:`~probing.contexts_config.ContextsConfig` (torch-free, imported here as before).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from mcicl.analysis.engine.context_figures import (
    LAYERS_CAPTION,
    WORDS_CAPTION,
    context_layers_figure,
    word_contexts_figure,
)
from mcicl.analysis.engine.context_measures import (
    ContextStats,
    context_statistics,
    cosine_scores,
    drift_controlled,
    word_codes_of,
    word_pair_cosines,
)
from mcicl.core.configuration import require
from mcicl.core.io import strict_json
from mcicl.core.jobs import DemoContext, JobContext
from mcicl.core.logs import progress
from mcicl.core.plotting import save_figure
from mcicl.core.runs import RunFolder
from mcicl.core.seeding import seed_everything
from mcicl.core.textfiles import shown
from mcicl.core.vectors import LabelledVectors
from mcicl.probing.cache import ExtractionCache, model_fingerprint
from mcicl.probing.contexts import (
    ContextsError,
    ContextSet,
    SenseContext,
    builtin_contexts,
    check_contexts,
    drop_short,
    load_contexts_file,
    wordnet_contexts,
)
from mcicl.probing.contexts_config import NEUTRAL_FRAMES, ContextsConfig
from mcicl.probing.datasets import DATASET_PREFIXES, load_concept_set, wordnet_reader
from mcicl.probing.extract import extract_words, load_for, n_hidden_layers
from mcicl.probing.extract_config import POOLINGS, ExtractionConfig, resolve_layers
from mcicl.probing.forward import PoolItem, chunk_rows, padding_for, padding_token_id, pool_vectors
from mcicl.probing.hf_contexts import load_dataset_contexts, vectors_dataset
from mcicl.probing.models import LoadedModel
from mcicl.probing.semcor import load_semcor_contexts
from mcicl.probing.store import SHARD_ITEMS, ActivationStore, store_key, write_items

log = logging.getLogger("mcicl")
PCA_WORDS = 6


@dataclass
class ContextualExtraction:
    """Pooled vectors of each context's word occurrence, per hidden layer ("0" = embedding output)."""

    contexts: list[SenseContext]
    layers: list[str]
    vectors: Mapping[str, np.ndarray]   # layer -> (len(contexts), d) float32 (from a store: read when asked)
    n_tokens: list[int]              # the word's tokens in each context
    meta: dict[str, Any] = field(default_factory=dict)


def prepare_contexts(tokenizer: Any, contexts: Sequence[SenseContext]) -> list[PoolItem]:
    """Each context tokenized whole, with the positions of the tokens overlapping its word's occurrence."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{type(tokenizer).__name__} is a slow tokenizer; contextual extraction needs a fast "
                         "tokenizer (its offset_mapping locates the word's tokens): load one with use_fast=True")
    if not contexts:
        return []
    # One batched tokenizer call over the distinct sentences: a sentence with several occurrences is encoded once.
    texts = list(dict.fromkeys(c.context for c in contexts))
    enc = tokenizer(texts, add_special_tokens=True, return_offsets_mapping=True,
                    return_special_tokens_mask=True, return_attention_mask=False, verbose=False)
    encoded = dict(zip(texts, zip(enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"], strict=True),
                       strict=True))
    limit = getattr(tokenizer, "model_max_length", None)
    items = []
    for c in contexts:
        ids, offsets, special = encoded[c.context]
        positions = [t for t, ((s, e), sp) in enumerate(zip(offsets, special, strict=True))
                     if not sp and e > s and s < c.end and e > c.start]
        if not positions:
            raise ContextsError(f"word {c.word!r}: no token of the tokenized context {c.context!r} covers "
                                f"characters {c.start}..{c.end}")
        if limit and limit < 10**7 and len(ids) > limit:  # refused, not cut: a cut could drop the word itself
            raise ValueError(f"context of {shown(c.word)} ({c.sense}) {shown(c.context, 60)} is {len(ids):,} tokens, "
                             f"more than the model's {limit:,} positions; accepted: contexts of at most {limit:,} "
                             "tokens (shorten or remove it)")
        items.append(PoolItem(list(ids), positions))
    return items


def sentence_chunks(texts: Sequence[str], order: Sequence[int], size: int) -> list[list[int]]:
    """``order`` cut into chunks of ``size`` distinct sentences (``texts[k]``: the sentence of ``order[k]``; equal
    sentences adjacent), a sentence's occurrences never split between chunks."""
    chunks: list[list[int]] = []
    current: list[int] = []
    n_sentences, previous = 0, None
    for text, i in zip(texts, order, strict=True):
        if text != previous:
            if n_sentences == size:
                chunks.append(current)
                current, n_sentences = [], 0
            n_sentences, previous = n_sentences + 1, text
        current.append(i)
    if current:
        chunks.append(current)
    return chunks


def extract_contexts(model: Any, tokenizer: Any, contexts: Sequence[SenseContext], *,
                     layers: str | Sequence[int] = "all", pooling: str = "mean", batch_size: int | str = 32,
                     padding_side: str = "auto", cache_dir: str | None = None,
                     show_progress: bool = True) -> ContextualExtraction:
    """A ContextualExtraction of ``contexts`` from a loaded model (hidden states; cached when ``cache_dir``)."""
    require(pooling in POOLINGS, "pooling", pooling, "one of " + ", ".join(POOLINGS))
    require(batch_size == "auto" or (isinstance(batch_size, int) and batch_size >= 1), "batch_size", batch_size,
            "an integer >= 1 or 'auto'")
    contexts = list(contexts)
    items = prepare_contexts(tokenizer, contexts)
    n_layers = n_hidden_layers(model)
    layer_idx = resolve_layers(layers, n_layers)
    names = [str(i) for i in layer_idx]
    side = padding_for(model, padding_side)
    pad = padding_token_id(tokenizer)

    def compute(part: list[PoolItem], quiet: bool) -> dict[str, np.ndarray]:
        return pool_vectors(model, part, "hidden", layer_idx, pooling, batch_size, side, pad, not quiet, "contexts")

    if cache_dir is None:
        vectors = compute(items, not show_progress)
    else:
        cache = ExtractionCache(cache_dir, {"kind": "contexts", "model": model_fingerprint(model),
                                            "tokenizer": [type(tokenizer).__name__, len(tokenizer),
                                                          tokenizer.name_or_path],
                                            "pooling": pooling, "padding_side": side, "dtype": str(model.dtype)})
        # A chunk is keyed by its contexts and occurrences; one chunk per 8 batches of distinct sentences. Chunks
        # are cut from the contexts ordered by length (then text), never inside a sentence's occurrences, so a
        # chunk's batches are full and pad little and each sentence gets one forward pass, as in a bare pass.
        keys = [f"{c.start}:{c.end - c.start}:{c.context}" for c in contexts]
        by_length = sorted(range(len(items)), key=lambda i: (-len(items[i].ids), contexts[i].context, i))
        chunks = sentence_chunks([contexts[i].context for i in by_length], by_length, chunk_rows(batch_size))
        vectors = {}
        for chunk in progress(chunks, desc="contexts") if show_progress else chunks:
            part_keys = [keys[i] for i in chunk]
            arrays = cache.load(part_keys, names)
            if arrays is None:
                arrays = compute([items[i] for i in chunk], True)
                cache.save(part_keys, arrays)
            for name in names:
                vectors.setdefault(name, np.empty((len(items), arrays[name].shape[1]), dtype=np.float32))
                vectors[name][chunk] = arrays[name]
        if not chunks:
            vectors = compute([], True)
    meta = {"model": getattr(model.config, "_name_or_path", ""), "pooling": pooling, "padding_side": side,
            "n_hidden_layers": n_layers, "n_contexts": len(contexts)}
    return ContextualExtraction(contexts, names, {n: vectors[n] for n in names}, [len(it.positions) for it in items],
                                meta)


class StoredVectors(Mapping[str, np.ndarray]):
    """Layer -> (n, d) float32 rows of an activation store (one pooled row per item). ``vectors[layer]`` reads a
    whole layer; :meth:`chunks`, :meth:`mean` and :meth:`take` read one shard, or chosen rows, at a time (what
    :func:`measure_contexts` uses, so a layer never has to fit in memory)."""

    def __init__(self, store: ActivationStore) -> None:
        self.store = store
        sizes = [int(store.manifest["shards"][str(i)]["rows"]) for i in range(store.n_shards)]
        self.starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])  # shard i holds rows starts[i]..

    def __getitem__(self, layer: str) -> np.ndarray:
        if layer not in self.store.layers:
            raise KeyError(layer)
        return np.concatenate([np.asarray(rows, dtype=np.float32) for _, rows in self.chunks(layer)])

    def __iter__(self) -> Iterator[str]:
        return iter(self.store.layers)

    def __len__(self) -> int:
        return len(self.store.layers)

    @property
    def n_rows(self) -> int:
        """Rows per layer."""
        return int(self.starts[-1])

    @property
    def chunk_rows(self) -> int:
        """The most rows one shard holds (what one chunk of a layer is)."""
        return int(np.diff(self.starts).max()) if self.starts.size > 1 else 0

    def chunks(self, layer: str) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, that shard's (rows, d) float32 rows, memory-mapped) of ``layer``, shard by shard."""
        for i, (rows, *_) in enumerate(self.store.chunks(layer)):
            yield int(self.starts[i]), rows

    def mean(self, layer: str) -> np.ndarray:
        """(d,) float64 mean of ``layer``'s rows, summed shard by shard."""
        total = np.zeros(self.store.dim)
        for _, rows in self.chunks(layer):
            total += np.asarray(rows, dtype=np.float64).sum(axis=0)
        return total / max(self.n_rows, 1)

    def take(self, layer: str, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """(len(rows), d) float32: the rows numbered ``rows`` (in that order) of ``layer``; each shard that holds
        some is opened once and only those rows are read from its memory map."""
        if layer not in self.store.layers:
            raise KeyError(layer)
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_rows):
            raise IndexError(f"rows {int(rows.min())}..{int(rows.max())} asked of a store of {self.n_rows} rows")
        out = np.empty((rows.size, self.store.dim), dtype=np.float32)
        shard_of = np.searchsorted(self.starts, rows, side="right") - 1
        for i in np.unique(shard_of):
            sel = np.flatnonzero(shard_of == i)
            out[sel] = self.store.shard(int(i))[f"layer.{layer}"][rows[sel] - self.starts[i]]
        return out


def _word_batches(rows_of: Sequence[np.ndarray], limit: int) -> Iterator[list[int]]:
    """Word positions in batches whose rows add up to at most ``limit`` (a word with more rows alone)."""
    batch: list[int] = []
    size = 0
    for w, rows in enumerate(rows_of):
        if batch and size + rows.size > limit:
            yield batch
            batch, size = [], 0
        batch.append(w)
        size += rows.size
    if batch:
        yield batch


def contexts_hash(contexts: Sequence[SenseContext]) -> str:
    """A hash of the contexts in order (word, sense, sentence, occurrence): what a contexts store holds."""
    h = hashlib.sha256()
    for c in contexts:
        h.update("\x00".join((c.word, c.sense, c.context, str(c.start), str(c.end))).encode("utf-8", "surrogatepass")
                 + b"\x01")
    return h.hexdigest()[:24]


def store_contexts(path: str, loaded: LoadedModel, contexts: Sequence[SenseContext], ecfg: ExtractionConfig, *,
                   shard_items: int = SHARD_ITEMS, show_progress: bool = True) -> ContextualExtraction:
    """A ContextualExtraction of ``contexts`` written to (or resumed from) the activation store at ``path``: one
    row per context pooled as ``ecfg.pooling`` says, per layer; keyed by the model, revision, layers, pooling and a
    hash of the contexts (a store of another model, config or contexts is refused, naming the difference);
    ``shard_items`` contexts per shard. The vectors are read back from the store shard by shard."""
    contexts = list(contexts)
    items = prepare_contexts(loaded.tokenizer, contexts)
    n_layers = n_hidden_layers(loaded.model)
    layer_idx = resolve_layers(ecfg.layers, n_layers)
    key = store_key(loaded, ecfg, [str(i) for i in layer_idx])
    # Contexts are whole sentences: no word template; the store holds these contexts and no others.
    key.update({"kind": "contexts", "template": None, "contexts": contexts_hash(contexts)})
    store = write_items(path, key, items, [c.word for c in contexts], [c.sense for c in contexts], loaded, layer_idx,
                        batch_size=ecfg.batch_size, shard_items=shard_items, show_progress=show_progress)
    meta = {"model": getattr(loaded.model.config, "_name_or_path", ""), "pooling": ecfg.pooling,
            "padding_side": padding_for(loaded.model), "n_hidden_layers": n_layers, "n_contexts": len(contexts),
            "store": str(store.path)}
    return ContextualExtraction(contexts, store.layers, StoredVectors(store), [len(it.positions) for it in items],
                                meta)


def load_contexts(spec: str, cs: Any, *, min_per_sense: int = 3, columns: str | None = None
                  ) -> tuple[ContextSet, list[str]]:
    """(validated ContextSet named by ``spec``, (word/sense) pairs dropped for too few WordNet examples).

    'builtin' and files must give every (word, sense) ``min_per_sense`` contexts (else ContextsError);
    WordNet examples are what WordNet has, so short pairs are dropped and listed instead.
    """
    if spec == "builtin":
        ctx = builtin_contexts()
    elif spec.startswith("semcor:"):  # SemCor 3.0 sense-tagged text (probing/semcor.py)
        return load_semcor_contexts(spec, cs, min_per_sense=min_per_sense), []
    elif spec.startswith(DATASET_PREFIXES):  # a Hugging Face datasets dataset (probing/hf_contexts.py)
        ctx = load_dataset_contexts(spec, columns)
    elif spec == "wordnet":
        ctx, dropped = drop_short(wordnet_contexts(cs, wordnet_reader()), min_per_sense)
        if not ctx.contexts:
            raise ContextsError(f"WordNet has no word sense with {min_per_sense} example sentences in {cs.name!r}; "
                                "lower min_per_sense")
        check_contexts(ctx, cs, min_per_sense=min_per_sense)
        return ctx, dropped
    else:
        ctx = load_contexts_file(spec)
    check_contexts(ctx, cs, min_per_sense=min_per_sense)
    return ctx, []


@dataclass
class ContextsResult:
    """The contextual geometry of a model: polysemous and control statistics per layer, vectors, rows."""

    polysemous: ContextStats
    controls: ContextStats | None
    extraction: ContextualExtraction
    poly_rows: np.ndarray            # indices into extraction.contexts of the polysemous contexts
    control_rows: np.ndarray         # ... and of the control contexts
    base_vectors: dict[str, np.ndarray]  # layer -> (len(contexts), d): each context's word out of context (empty
    # with a store: the out-of-context vectors are then rows of the words' or frames' extraction, gathered to score)
    info: dict[str, Any]
    config: ContextsConfig | None = None  # what was measured (saved as config.yaml)
    drift: dict[str, dict[str, dict[str, float]]] | None = None  # layer -> statistic -> drift_controlled()
    drift_controls: ContextStats | None = None  # the controls judged 2-way (own concept vs one other): per-word units

    def layer_rows(self) -> list[dict[str, Any]]:
        """One row per (layer, group, statistic) with value, null band, CI and p-value (context_layers.csv)."""
        out = []
        for group, stats in (("polysemous", self.polysemous), ("controls", self.controls)):
            if stats is None:
                continue
            for layer, named in stats.per_layer.items():
                for stat, s in named.items():
                    out.append({"layer": layer, "group": group, "stat": stat, "value": s.value,
                                "null": s.null_mean, "null_low": s.null_low, "null_high": s.null_high,
                                "ci_low": s.ci_low, "ci_high": s.ci_high, "p_value": s.p_value, "n_words": s.n})
        return out

    def context_rows(self) -> list[dict[str, Any]]:
        """One row per (context, layer): word, sense, predicted sense in and out of context, margins, shift."""
        ctx = self.extraction.contexts
        out = []
        for group, stats, idx in (("polysemous", self.polysemous, self.poly_rows),
                                  ("controls", self.controls, self.control_rows)):
            if stats is None:
                continue
            for layer, values in stats.row_values.items():
                for r, i in enumerate(idx):
                    c = ctx[int(i)]
                    out.append({"layer": layer, "group": group, "word": c.word, "sense": c.sense,
                                "correct": bool(values["predicted"][r] == values["labels"][r]),
                                "baseline_correct": bool(values["baseline_predicted"][r] == values["labels"][r]),
                                "margin": float(values["margin"][r]),
                                "baseline_margin": float(values["baseline_margin"][r]),
                                "shift": float(values["shift"][r]), "context": c.context, "source": c.source})
        return out

    def pca_words(self, n: int = PCA_WORDS) -> list[str]:
        """Up to ``n`` polysemous words for the PCA panel: those with the highest pair AUC at the best layer."""
        stats = self.polysemous
        auc = stats.word_units[stats.best_layer].get("pair_auc")
        words = sorted({self.extraction.contexts[int(i)].word for i in self.poly_rows})
        if auc is None:
            return words[:n]
        order = np.argsort(-np.nan_to_num(auc, nan=-1.0), kind="stable")
        return [words[k] for k in order[:n]]

    @property
    def summary(self) -> dict[str, Any]:
        """summary.json's content: best-layer statistics (selection corrected), controls, every layer, info."""
        poly = self.polysemous
        best = poly.best_layer
        return strict_json({
            "best_layer": best,
            "best_layer_rule": "the layer of highest in-context sense accuracy; each best-layer statistic is the "
                               "max over layers, and its null and bootstrap take the same max (selection "
                               "corrected)",
            "sense_accuracy": poly.best["sense_accuracy"].to_dict(),
            "baseline_accuracy": poly.best["baseline_accuracy"].to_dict(),
            "shift": poly.best["shift"].to_dict(),
            "pair_auc": poly.best["pair_auc"].to_dict(),
            # Monosemous controls at the polysemous words' best layer (nearest of all concepts; shift toward own).
            "controls": ({k: s.to_dict() for k, s in self.controls.per_layer[best].items()}
                         if self.controls is not None else None),
            "per_layer": {"polysemous": poly.to_dict(),
                          "controls": self.controls.to_dict() if self.controls is not None else None},
            "drift_control": self.drift,
            "drift_control_rule": DRIFT_RULE if self.drift else None,
            **{k: v for k, v in self.info.items() if k != "concepts"},
        })

    def figures(self) -> dict[str, Figure]:
        """The run's figures by file name: ``context_layers`` (the three statistics per layer) and ``context_pca``
        (the contextual vectors of the words of highest pair AUC at the best layer, PCA per word)."""
        info, ctx = self.info, self.extraction.contexts
        random_tag = " (random weights)" if info["random_weights"] else ""
        best = self.polysemous.best_layer
        chosen = self.pca_words()
        keep = np.isin([c.word for c in ctx], chosen)
        vectors = self.extraction.vectors
        shown_rows = (vectors.take(best, np.flatnonzero(keep)) if isinstance(vectors, StoredVectors)
                      else vectors[best][keep])
        return {
            "context_layers": context_layers_figure(
                self.layer_rows(), title=f"{info['source']}{random_tag}: polysemous words in context "
                                         f"({info['contexts']} contexts, {info['n_polysemous_words']} words)"),
            "context_pca": word_contexts_figure(
                shown_rows, [c.word for c, k in zip(ctx, keep, strict=True) if k],
                [c.sense for c, k in zip(ctx, keep, strict=True) if k], chosen, layer=best,
                title=f"{info['source']}{random_tag}: contextual vectors at layer {best} (best layer), PCA per "
                      f"word, coloured by tagged sense\n(the {len(chosen)} words of highest same-sense pair AUC)"),
        }

    def save(self, run: RunFolder) -> None:
        """Write config.yaml, context_layers.csv, contexts.csv, vectors/contexts_<layer>.npz (not with a store:
        the vectors stay in it), the figures and summary.json into ``run``."""
        if self.config is not None:
            run.save_config(self.config)
        run.write_csv("context_layers.csv", self.layer_rows())
        run.write_csv("contexts.csv", self.context_rows())
        if self.drift:
            run.write_csv("context_drift.csv", [{"layer": layer, "statistic": stat, **v}
                                                for layer, named in self.drift.items() for stat, v in named.items()])
        (run.path / "vectors").mkdir(exist_ok=True)
        ctx = self.extraction.contexts
        # From a store the vectors stay there (summary.json's "store" names it): copying them would read every
        # layer whole.
        copied = {} if isinstance(self.extraction.vectors, StoredVectors) else self.extraction.vectors
        for layer, matrix in copied.items():
            LabelledVectors(matrix, [c.word for c in ctx], [c.sense for c in ctx],
                            meta={**self.extraction.meta, "layer": layer, "contexts": [c.context for c in ctx]}
                            ).save(run.path / "vectors" / f"contexts_{layer}.npz")
        if self.config is not None and self.config.vectors_dataset:
            vectors_dataset(ctx, self.extraction.vectors, self.extraction.n_tokens).save_to_disk(
                str(run.path / "vectors" / "dataset"))
        captions = {"context_layers": LAYERS_CAPTION, "context_pca": WORDS_CAPTION}
        for name, fig in self.figures().items():
            save_figure(fig, run.figures, name, caption=captions[name])
        run.write_summary(self.summary)


DRIFT_RULE = ("per layer, the polysemous words' mean per-word gain minus the monosemous controls' (95% interval: "
              "two-sample bootstrap over words). gain = in-context minus out-of-context sense accuracy, or the shift "
              "m(x) - m(b). controls_2way: each control word judged between its own concept and one other concept "
              "drawn at random per word (seeded), the polysemous words' 2-way format; controls_all: among all "
              "concepts (the controls of context_layers.csv)")


def neutral_table(contexts: Sequence[SenseContext], ecfg: ExtractionConfig, loaded: LoadedModel, seed: int
                  ) -> tuple[dict[str, np.ndarray], np.ndarray, list[str]]:
    """Each context's word in a neutral frame drawn at random (seeded) from :data:`NEUTRAL_FRAMES`, without a row
    per context: (layer -> (u, d) vectors of the distinct (frame, word) pairs, (len(contexts),) each context's
    row of them, the frame of each context)."""
    pick = np.random.default_rng([seed, 41]).integers(0, len(NEUTRAL_FRAMES), size=len(contexts))
    parts: dict[str, list[np.ndarray]] = {}
    row_of = np.empty(len(contexts), dtype=np.int64)
    offset = 0
    for f in np.unique(pick):
        rows = np.flatnonzero(pick == f)
        words = list(dict.fromkeys(contexts[int(r)].word for r in rows))
        ext = extract_words(words, replace(ecfg, template=NEUTRAL_FRAMES[int(f)]), loaded=loaded,
                            show_progress=False)
        index = {w: i for i, w in enumerate(ext.words)}
        missing = [w for w in words if w not in index]
        if missing:
            raise ContextsError(f"word(s) {missing[:10]} cannot be represented in the frame "
                                f"{NEUTRAL_FRAMES[int(f)]!r}")
        row_of[rows] = [offset + index[contexts[int(r)].word] for r in rows]
        offset += len(ext.words)
        for layer in ext.layers:
            parts.setdefault(layer, []).append(np.asarray(ext.vectors[layer], dtype=np.float32))
    return {layer: np.concatenate(p) for layer, p in parts.items()}, row_of, [NEUTRAL_FRAMES[int(f)] for f in pick]


def neutral_vectors(contexts: Sequence[SenseContext], ecfg: ExtractionConfig, loaded: LoadedModel, seed: int
                    ) -> tuple[dict[str, np.ndarray], list[str]]:
    """Each context's word in a neutral frame drawn at random (seeded) from :data:`NEUTRAL_FRAMES`, per layer:
    (layer -> (len(contexts), d), the frame of each context): :func:`neutral_table`'s rows, one per context."""
    table, row_of, frames = neutral_table(contexts, ecfg, loaded, seed)
    return {layer: t[row_of] for layer, t in table.items()}, frames


def _drift(poly: ContextStats, groups: dict[str, ContextStats], n_bootstrap: int, seed: int
           ) -> dict[str, dict[str, dict[str, float]]]:
    """Per layer: polysemous gain minus each control group's gain (accuracy gain and shift), bootstrap over words."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for li, layer in enumerate(poly.layers):
        pu = poly.word_units[layer]
        out[layer] = {}
        for gi, (name, st) in enumerate(groups.items()):
            cu = st.word_units[layer]
            for stat, p_units, c_units in (
                    ("accuracy_gain", pu["sense_accuracy"] - pu["baseline_accuracy"],
                     cu["sense_accuracy"] - cu["baseline_accuracy"]),
                    ("shift", pu["shift"], cu["shift"])):
                out[layer][f"{stat}_minus_{name}"] = drift_controlled(
                    p_units, c_units, n_bootstrap, np.random.default_rng([seed, 43, li, gi]))
    return out


def _rows(ctx: ContextSet) -> tuple[list[int], list[int]]:
    """Context indices of polysemous words (contexts in >= 2 senses) and of monosemous words (one sense)."""
    n_senses = {w: len(ctx.senses(w)) for w in ctx.words}
    poly = [i for i, c in enumerate(ctx.contexts) if n_senses[c.word] >= 2]
    controls = [i for i, c in enumerate(ctx.contexts) if n_senses[c.word] == 1]
    return poly, controls


@dataclass
class _Group:
    """Contexts measured together (polysemous words, or controls): rows, candidates, scores per layer."""

    name: str
    rows: list[int]
    poly: bool
    candidates: np.ndarray   # (n, m) concept codes, -1 = none
    labels: np.ndarray       # (n,) position of the tagged sense among the candidates
    context_scores: dict[str, np.ndarray] = field(default_factory=dict)
    base_scores: dict[str, np.ndarray] = field(default_factory=dict)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    pair_cosines: dict[str, list[np.ndarray]] = field(default_factory=dict)  # from a store: per word, in place of
    # vectors


def _score_stored(stored: StoredVectors, layer: str, center: bool, centroids: np.ndarray, groups: list[_Group],
                  words: Sequence[str]) -> None:
    """Fill each group's context scores (and the polysemous group's per-word pair cosines) of ``layer`` from a
    store, as the in-memory path computes them from the whole centred layer: the mean from one pass over the
    shards, then the scores shard by shard, then each polysemous word's rows read together (words batched up to a
    shard's rows), so no more than one shard's rows (or one word's, when more) are in memory at a time."""
    mean = stored.mean(layer) if center else 0.0
    n = stored.n_rows
    if n != len(words):
        raise ContextsError(f"store {str(stored.store.path)!r} has {n} rows; expected {len(words)}, one per context")
    scores, where = {}, {}
    for g in groups:
        scores[g.name] = np.full(g.candidates.shape, np.nan)
        where[g.name] = np.full(n, -1)
        where[g.name][g.rows] = np.arange(len(g.rows))  # context row -> its position in the group
    for lo, rows in stored.chunks(layer):
        block = np.asarray(rows, dtype=np.float64) - mean
        for g in groups:
            at = where[g.name][lo:lo + len(block)]
            local = np.flatnonzero(at >= 0)
            if local.size:
                scores[g.name][at[local]] = cosine_scores(block[local], centroids, g.candidates[at[local]])
    for g in groups:
        g.context_scores[layer] = scores[g.name]
        if not g.poly:
            continue
        # The same word numbering as context_statistics, each word's rows in group order (its pairs' order).
        _, codes = word_codes_of([words[i] for i in g.rows])
        group_rows = np.asarray(g.rows)
        rows_of = [group_rows[codes == w] for w in range(int(codes.max()) + 1)]
        cosines: list[np.ndarray] = [np.zeros(0)] * len(rows_of)
        for batch in _word_batches(rows_of, stored.chunk_rows):
            block = stored.take(layer, np.concatenate([rows_of[w] for w in batch])).astype(np.float64) - mean
            start = 0
            for w in batch:
                part = block[start:start + rows_of[w].size]
                cosines[w] = word_pair_cosines(part, np.zeros(len(part), dtype=int), 1)[0]
                start += rows_of[w].size
        g.pair_cosines[layer] = cosines


def measure_contexts(cfg: ContextsConfig, *, loaded: LoadedModel | None = None, concept_set: Any = None,
                     contexts: ContextSet | None = None, quiet: bool = False) -> ContextsResult:
    """Extract and measure: sense accuracy, out-of-context baseline, shift and pair AUC per layer, controls.

    ``concept_set`` and ``contexts``, when given, replace ``cfg.concepts`` and ``cfg.contexts``.
    """
    cs = concept_set if concept_set is not None else load_concept_set(cfg.concepts, columns=cfg.columns)
    dropped: list[str] = []
    if contexts is None:
        contexts, dropped = load_contexts(cfg.contexts, cs, min_per_sense=cfg.min_per_sense, columns=cfg.columns)
    else:
        check_contexts(contexts, cs, min_per_sense=cfg.min_per_sense)
    poly_idx, control_idx = _rows(contexts)
    if not poly_idx:
        raise ContextsError(f"contexts {contexts.name!r}: no word has contexts for two or more senses; "
                            "nothing to measure")
    ecfg = cfg.extraction
    loaded = loaded if loaded is not None else load_for(ecfg)
    if cfg.store:
        ext = store_contexts(cfg.store, loaded, contexts.contexts, ecfg, show_progress=not quiet)
    else:
        ext = extract_contexts(loaded.model, loaded.tokenizer, contexts.contexts, layers=ecfg.layers,
                               pooling=ecfg.pooling, batch_size=ecfg.batch_size, cache_dir=ecfg.cache_dir,
                               show_progress=not quiet)
    concept_words = list(dict.fromkeys(w for ws in cs.concepts.values() for w in ws))
    alone = extract_words(list(dict.fromkeys(concept_words + contexts.words)), ecfg, loaded=loaded,
                          show_progress=not quiet)
    missing = [w for w in contexts.words if w not in set(alone.words)]
    if missing:
        raise ContextsError(f"word(s) {missing[:10]} cannot be represented by {loaded.ref.name}'s tokenizer")
    index = {w: i for i, w in enumerate(alone.words)}
    # A concept's centroid is the mean of all its words (in nested WordNet sets: its whole extension).
    rows_of = {name: [index[w] for w in ws if w in index] for name, ws in cs.concepts.items()}
    names = [n for n, r in rows_of.items() if r]
    unusable = sorted({c.sense for c in contexts.contexts} - set(names))
    if unusable:
        raise ContextsError(f"sense concept(s) {unusable[:10]} have no word the tokenizer can represent, so no "
                            "centroid")
    concept_rows = [rows_of[n] for n in names]
    code = {n: k for k, n in enumerate(names)}
    word_rows = np.array([index[c.word] for c in contexts.contexts])
    all_concepts = list(range(len(names)))
    width = len(names)

    def candidates(rows: list[int], poly: bool) -> tuple[np.ndarray, np.ndarray]:
        cand = np.full((len(rows), width), -1)
        labels = np.empty(len(rows), dtype=int)
        for r, i in enumerate(rows):
            c = contexts.contexts[i]
            options = [code[s] for s in contexts.senses(c.word)] if poly else all_concepts
            cand[r, :len(options)] = options
            labels[r] = options.index(code[c.sense])
        return cand[:, :max(1, int((cand >= 0).sum(axis=1).max()))], labels

    groups = [_Group(name, rows, poly, *candidates(rows, poly))
              for name, rows, poly in (("polysemous", poly_idx, True), ("controls", control_idx, False)) if rows]
    if control_idx:
        # The drift control in the polysemous words' format: own concept against one other, drawn per word.
        rng = np.random.default_rng([cfg.seed, 47])
        other = {}
        for i in control_idx:
            w = contexts.contexts[i].word
            if w not in other:
                own = code[contexts.contexts[i].sense]
                other[w] = int(rng.choice([k for k in all_concepts if k != own]))
        cand2 = np.array([[code[contexts.contexts[i].sense], other[contexts.contexts[i].word]] for i in control_idx])
        groups.append(_Group("controls_2way", control_idx, False, cand2, np.zeros(len(control_idx), dtype=int)))
    stored = ext.vectors if isinstance(ext.vectors, StoredVectors) else None
    neutral, frames, table, row_of = None, None, None, None
    if cfg.baseline == "neutral" and stored is None:
        neutral, frames = neutral_vectors(contexts.contexts, ecfg, loaded, cfg.seed)
    elif cfg.baseline == "neutral":  # from a store: the (frame, word) pairs' vectors, no row per context
        table, row_of, frames = neutral_table(contexts.contexts, ecfg, loaded, cfg.seed)
    base_vectors = {}
    for layer in ext.layers:
        words_mat = alone.vectors[layer].astype(np.float64)
        concept_mean = words_mat[sorted({i for r in concept_rows for i in r})].mean(axis=0) if cfg.center else 0.0
        centroids = np.stack([words_mat[r].mean(axis=0) for r in concept_rows]) - concept_mean
        if neutral is not None:  # the word in its neutral frame, centred on the frames' own mean like contexts
            framed = neutral[layer].astype(np.float64)
            base = framed - (framed.mean(axis=0) if cfg.center else 0.0)
        elif stored is None:
            base = words_mat[word_rows] - concept_mean
        else:  # from a store: each context's out-of-context vector is a row of a small table, gathered when scored
            base = None
            if table is not None:  # the frames' mean over contexts: the table's rows weighted by their use
                source, row_index = table[layer].astype(np.float64), row_of
                offset = (np.bincount(row_of, minlength=len(source)) @ source / len(row_of) if cfg.center
                          else 0.0)
            else:
                source, row_index, offset = words_mat, word_rows, concept_mean
        if base is not None:
            base_vectors[layer] = base.astype(np.float32)
        for g in groups:
            if base is not None:
                g.base_scores[layer] = cosine_scores(base[g.rows], centroids, g.candidates)
                continue
            step, rows = max(stored.chunk_rows, 1), np.asarray(g.rows)
            g.base_scores[layer] = np.concatenate([
                cosine_scores(source[row_index[rows[a:a + step]]] - offset, centroids, g.candidates[a:a + step])
                for a in range(0, rows.size, step)])
        if stored is not None:  # chunk by chunk: the layer is never read whole
            _score_stored(stored, layer, cfg.center, centroids, groups, [c.word for c in contexts.contexts])
            continue
        ctx_mat = ext.vectors[layer].astype(np.float64)
        ctx_mat = ctx_mat - (ctx_mat.mean(axis=0) if cfg.center else 0.0)
        for g in groups:
            g.context_scores[layer] = cosine_scores(ctx_mat[g.rows], centroids, g.candidates)
            g.vectors[layer] = ctx_mat[g.rows]
    stats = {}
    for g in groups:
        words = [contexts.contexts[i].word for i in g.rows]
        if g.name == "controls_2way":  # only its per-word units are used (the drift control): no null
            stats[g.name] = context_statistics(g.context_scores, g.base_scores, g.labels, words, words,
                                               n_permutations=1, n_bootstrap=0, seed=cfg.seed)
            continue
        # Polysemous words: senses shuffled within each word; controls: concepts shuffled across control words.
        stats[g.name] = context_statistics(g.context_scores, g.base_scores, g.labels, words,
                                           words if g.poly else ["controls"] * len(words),
                                           pair_vectors=g.vectors if g.poly and g.vectors else None,
                                           pair_cosines=g.pair_cosines if g.poly and g.pair_cosines else None,
                                           n_permutations=cfg.permutations, n_bootstrap=cfg.bootstrap, seed=cfg.seed)
    info = {"source": loaded.ref.name, "contexts": contexts.name, "concept_set": cs.name,
            "n_contexts": len(contexts), "n_polysemous_words": len({contexts.contexts[i].word for i in poly_idx}),
            "n_control_words": len({contexts.contexts[i].word for i in control_idx}),
            "dropped_senses": dropped, "concepts": names, "center": cfg.center, "baseline": cfg.baseline,
            "baseline_frames": sorted(set(frames)) if frames else ["{word}"],
            "words_left_out": {k: v for k, v in alone.report.items() if v},
            "random_weights": bool(alone.meta.get("random_weights", False)),
            "semcor": contexts.report.to_dict() if hasattr(contexts, "report") else None,
            **({"store": str(stored.store.path)} if stored is not None else {})}
    drift = _drift(stats["polysemous"], {"controls_2way": stats["controls_2way"], "controls_all": stats["controls"]},
                   cfg.bootstrap, cfg.seed) if control_idx else None
    return ContextsResult(stats["polysemous"], stats.get("controls"), ext, np.array(poly_idx),
                          np.array(control_idx, dtype=int), base_vectors, info, cfg, drift, stats.get("controls_2way"))


def execute(cfg: ContextsConfig, ctx: JobContext) -> int:
    """``mcicl probe contexts``: check the concepts and contexts, open the run folder, measure, save, print."""
    # Validate concepts and contexts before making the output folder, so a typo leaves nothing behind.
    cs = load_concept_set(cfg.concepts, columns=cfg.columns)
    contexts, dropped = load_contexts(cfg.contexts, cs, min_per_sense=cfg.min_per_sense, columns=cfg.columns)
    if cfg.store and Path(cfg.store).exists() and not Path(cfg.store).is_dir():
        raise ValueError(f"--store {cfg.store} is a file; accepted: a store folder (new or written by mcicl)")
    folder = ctx.create_run(inputs={"--model": cfg.extraction.model, "--contexts": cfg.contexts,
                                    "--concepts": cfg.concepts, "--cache-dir": cfg.extraction.cache_dir,
                                    "--store": cfg.store})
    seed_everything(cfg.seed)
    result = measure_contexts(cfg, concept_set=cs, contexts=contexts, quiet=ctx.quiet)
    result.info["dropped_senses"] = dropped
    result.save(folder)
    summary = result.summary
    acc, base = summary["sense_accuracy"], summary["baseline_accuracy"]
    log.info("best layer %s: sense accuracy %s (95%% CI %s-%s, null %s, p=%s); out of context %s",
             summary["best_layer"], _number(acc["value"]), _number(acc["ci_low"]), _number(acc["ci_high"]),
             _number(acc["null"]), _number(acc["p_value"], ".3g"), _number(base["value"]))
    print(f"output is in {folder.path}")
    return 0


def _number(value: Any, spec: str = ".3f") -> str:
    """A headline number for the log line; 'n/a' where it is undefined (None: e.g. no interval from one word)."""
    return "n/a" if value is None else format(value, spec)


def demo_stage(ctx: DemoContext) -> dict[str, Any]:
    """Demo stage "polysemous words in context": the default model on the built-in contexts, every layer
    (``small``: 200 permutations and resamples instead of 1000), into ``contexts/``; its headline numbers."""
    extraction = ExtractionConfig(model=ctx.model, batch_size=32)
    cfg = ContextsConfig(extraction=extraction, permutations=200 if ctx.small else 1000,
                         bootstrap=200 if ctx.small else 1000, seed=ctx.seed or 0)
    folder = ctx.stage_run("contexts", "probe contexts")
    result = measure_contexts(cfg, quiet=ctx.quiet)
    result.save(folder)
    summary = result.summary
    acc, base = summary["sense_accuracy"], summary["baseline_accuracy"]
    return {"folder": str(folder.path), "best_layer": summary["best_layer"], "sense_accuracy": acc["value"],
            "sense_accuracy_ci_low": acc["ci_low"], "sense_accuracy_null": acc["null"],
            "sense_accuracy_p": acc["p_value"], "out_of_context_accuracy": base["value"],
            "pair_auc": summary["pair_auc"]["value"], "shift": summary["shift"]["value"]}
