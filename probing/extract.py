"""Word representations from any Hugging Face model: input rows, unembedding rows, or hidden states per layer.

One rule, used everywhere: a word is put in its template (``"{word}"`` alone, or e.g. ``"A {word}."``),
tokenized by the model's tokenizer, and its vector is pooled over the tokens whose character offsets overlap
the word itself (template, special and lone space tokens excluded; slow tokenizers, which have no offsets, by
comparing tokenizations of the text cut before and after the word): ``mean`` of those tokens, or the ``last``
one. The forward pass and the pooling are :mod:`probing.forward`'s (padding, position ids: batched == alone);
words are sorted by token length to batch them, and the input order is restored.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from mcicl.core.configuration import require
from mcicl.core.logs import progress
from mcicl.core.plotting import save_figure
from mcicl.core.runs import RunFolder
from mcicl.core.textfiles import shown
from mcicl.core.vectors import LabelledVectors
from mcicl.probing.cache import ExtractionCache, model_fingerprint
from mcicl.probing.extract_config import (
    POOLING_RULE,
    POOLINGS,
    SPACES,
    WORD_SLOT,
    ExtractionConfig,
    check_template,
    resolve_layers,
)

# model_body, n_hidden_layers, padding_for, padding_token_id, input_scale, PoolItem and pool_vectors are re-exported:
# callers (probing.icl, tests) import them from here, and this module's own calls go through these names so a test
# can patch extract.pool_vectors.
from mcicl.probing.extract_figures import OVERVIEW_CAPTION, layer_stats, overview_figure, overview_title
from mcicl.probing.forward import (
    PoolItem,
    chunk_rows,
    input_scale,
    model_body,  # noqa: F401 (re-exported)
    n_hidden_layers,
    padding_for,
    padding_token_id,
    pool_vectors,
)
from mcicl.probing.memory import check_fits
from mcicl.probing.models import LoadedModel, load_model
from mcicl.probing.placement import input_device, resolve_device
from mcicl.probing.tiny import is_random_weights

log = logging.getLogger("mcicl")


@dataclass
class Extraction:
    """Pooled vectors of the represented words, per layer, with the report of words left out."""

    words: list[str]                 # represented words, first-occurrence order, no duplicates
    layers: list[str]                # "input" | "unembed" | "0".."N" (hidden: "0" = embedding output)
    vectors: dict[str, np.ndarray]   # layer -> (len(words), d) float32
    report: dict[str, list[str]]     # empty, unrepresentable, duplicates (+ partially_unknown: kept)
    meta: dict[str, Any] = field(default_factory=dict)
    # What `mcicl probe extract` adds before saving: (word, label) rows (None: one row per word, label ""),
    # how many words were asked for, the seconds the extraction took, what the words came from (concept set).
    pairs: list[tuple[str, str]] | None = None
    n_given: int | None = None
    seconds: float | None = None
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> list[tuple[str, str]]:
        """The (word, label) rows saved: ``pairs`` if set, else every represented word with label ""."""
        return list(self.pairs) if self.pairs is not None else [(w, "") for w in self.words]

    @property
    def summary(self) -> dict[str, Any]:
        """summary.json's content (without ``figures``, which :meth:`save` adds): the extraction's settings,
        layers and vector files, the words given, represented and left out (and why), tokens per word."""
        meta = {k: v for k, v in self.meta.items() if k != "n_tokens"}
        n_tokens = self.meta.get("n_tokens", [])
        represented = set(self.words)
        last = self.layers[-1]
        return {
            **meta, "layers": self.layers,
            "vector_files": {layer: str(Path("vectors") / f"{layer}.npz") for layer in self.layers},
            "vectors_npz_layer": last, "dim": int(self.vectors[last].shape[1]),
            "n_words_given": self.n_given if self.n_given is not None else len(self.words),
            "n_words_represented": len(self.words),
            "n_rows_labelled": sum(w in represented for w, _ in self.rows),
            "dropped": {k: len(v) for k, v in self.report.items()}, "report": self.report,
            "multi_token_words": sum(n > 1 for n in n_tokens), "max_word_tokens": max(n_tokens, default=0),
            "seconds": round(self.seconds, 3) if self.seconds is not None else None, **self.source,
        }

    def figures(self) -> dict[str, Figure]:
        """The run's figure by file name: ``extraction_overview`` (anisotropy and norm per layer, tokens per word)."""
        return {"extraction_overview": overview_figure(layer_stats(self), self.meta.get("n_tokens", []),
                                                       title=overview_title(self.meta))}

    def save(self, run: RunFolder) -> None:
        """Write vectors/<layer>.npz (a LabelledVectors file per layer), vectors.npz (the last layer), words.txt,
        labels.csv, layers.csv, words.csv, the overview figure and summary.json into ``run`` (the config is the
        command's to save)."""
        pairs = self.rows
        (run.path / "vectors").mkdir(exist_ok=True)
        for layer in self.layers:
            self.labelled(layer, pairs).save(run.path / "vectors" / f"{layer}.npz")
        self.labelled(self.layers[-1], pairs).save(run.path / "vectors.npz")
        (run.path / "words.txt").write_text("".join(w + "\n" for w in self.words), encoding="utf-8")
        represented = set(self.words)
        run.write_csv("labels.csv", [{"word": w, "label": lab} for w, lab in pairs if w in represented],
                      fieldnames=["word", "label"])
        run.write_csv("layers.csv", layer_stats(self))
        run.write_csv("words.csv", [{"word": w, "n_tokens": n} for w, n in zip(self.words, self.meta["n_tokens"],
                                                                              strict=True)])
        summary = self.summary
        summary["figures"] = [str(save_figure(fig, run.figures, name, caption=OVERVIEW_CAPTION).relative_to(run.path))
                              for name, fig in self.figures().items()]
        run.write_summary(summary)

    def labelled(self, layer: str | int,
                 labels: Mapping[str, str] | Sequence[tuple[str, str]] | None = None) -> LabelledVectors:
        """LabelledVectors of one layer: a row per word with ``labels[word]`` ("" if absent), or, given
        (word, label) pairs, a row per pair whose word is represented (a word may carry several labels)."""
        name = str(layer)
        if name not in self.vectors:
            raise LookupError(f"layer {name!r} was not extracted; extracted layers: {', '.join(self.layers)}")
        matrix = self.vectors[name]
        if labels is None or isinstance(labels, Mapping):
            labels = labels or {}
            rows, words, labs = list(range(len(self.words))), self.words, [labels.get(w, "") for w in self.words]
        else:
            index = {w: i for i, w in enumerate(self.words)}
            pairs = [(w, lab) for w, lab in labels if w in index]
            rows, words, labs = [index[w] for w, _ in pairs], [w for w, _ in pairs], [lab for _, lab in pairs]
        meta = {k: v for k, v in self.meta.items() if k != "n_tokens"}
        meta["layer"] = name
        return LabelledVectors(matrix[rows], np.array(words, dtype=str), np.array(labs, dtype=str), meta=meta)


def prepare_words(tokenizer: Any, words: Iterable[str], template: str = WORD_SLOT
                  ) -> tuple[list[str], list[PoolItem], dict[str, list[str]]]:
    """(represented words, their tokenized items, report of empty / unrepresentable / duplicate words)."""
    check_template(template)
    report: dict[str, list[str]] = {"empty": [], "unrepresentable": [], "duplicates": [], "partially_unknown": []}
    candidates, seen = [], set()
    for word in words:
        if not isinstance(word, str):
            raise ValueError(f"words must be strings; got {word!r} ({type(word).__name__})")
        if not word.strip():
            report["empty"].append(word)
        elif word in seen:
            report["duplicates"].append(word)
        else:
            seen.add(word)
            candidates.append(word)
    locate = _positions_by_offsets if getattr(tokenizer, "is_fast", False) else _positions_by_prefixes
    encoded = locate(tokenizer, candidates, template)
    unk = tokenizer.unk_token_id
    limit = getattr(tokenizer, "model_max_length", None)
    kept, items = [], []
    for word, (ids, positions) in zip(candidates, encoded, strict=True):
        positions = _drop_blank_ends(tokenizer, ids, positions)
        if not positions or (unk is not None and all(ids[p] == unk for p in positions)):
            report["unrepresentable"].append(word)
            continue
        if unk is not None and any(ids[p] == unk for p in positions):
            report["partially_unknown"].append(word)
        if limit and limit < 10**7 and len(ids) > limit:  # refused, not cut: a cut word is another word
            raise ValueError(f"word {shown(word)} in template {shown(template)} is {len(ids):,} tokens, more than "
                             f"the model's {limit:,} positions; accepted: words (and a template) of at most "
                             f"{limit:,} tokens (remove or shorten that word)")
        kept.append(word)
        items.append(PoolItem(list(ids), positions))
    return kept, items, report


def _positions_by_offsets(tokenizer: Any, words: list[str], template: str) -> list[tuple[list[int], list[int]]]:
    """(ids, positions of the tokens whose character offsets overlap the word) per word: fast tokenizers."""
    start = template.index(WORD_SLOT)
    texts = [template.replace(WORD_SLOT, w) for w in words]
    if not texts:
        return []
    enc = tokenizer(texts, add_special_tokens=True, return_offsets_mapping=True, return_special_tokens_mask=True,
                    return_attention_mask=False, verbose=False)  # over-long words are refused by name below
    out = []
    for word, ids, offsets, special in zip(words, enc["input_ids"], enc["offset_mapping"],
                                           enc["special_tokens_mask"], strict=True):
        end = start + len(word)
        # Tokens overlapping the word's characters: a leading-space token ("Ġdog", "▁dog") counts, a token
        # that is only template text or a special token ([CLS], <s>, offsets (0, 0)) does not.
        out.append((list(ids), [t for t, ((s, e), sp) in enumerate(zip(offsets, special, strict=True))
                                if not sp and e > s and s < end and e > start]))
    return out


def _positions_by_prefixes(tokenizer: Any, words: list[str], template: str) -> list[tuple[list[int], list[int]]]:
    """(ids, positions of the word's tokens) per word for tokenizers without offsets (slow tokenizers).

    The word's tokens are those the whole text shares with the tokenization of the text cut after the word,
    minus those it shares with the text cut before the word (special tokens excluded): a token merging the
    word with the template text after it (none in ``{word}``) is left out.
    """
    before, after = template.split(WORD_SLOT)

    def encode(text: str) -> tuple[list[int], list[int]]:
        enc = tokenizer(text, add_special_tokens=True, return_special_tokens_mask=True, return_attention_mask=False,
                        verbose=False)
        return list(enc["input_ids"]), list(enc["special_tokens_mask"])

    def shared(a: list[int], b: list[int]) -> int:
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        return n

    head_ids, head_special = encode(before) if before else ([], [])
    head = head_ids[:max((i + 1 for i, s in enumerate(head_special) if not s), default=0)]
    out = []
    for word in words:
        ids, special = encode(before + word + after)
        upto_ids, upto_special = encode(before + word) if after else (ids, special)
        upto = upto_ids[:max((i + 1 for i, s in enumerate(upto_special) if not s), default=0)]
        first = shared(head, ids) if before else next((i for i, s in enumerate(special) if not s), len(ids))
        last = shared(upto, ids)
        out.append((ids, [t for t in range(first, last) if not special[t]]))
    return out


def _drop_blank_ends(tokenizer: Any, ids: list[int], positions: list[int]) -> list[int]:
    """``positions`` without first or last tokens that add only whitespace to the word's decoded text.

    A lone space token (the "▁" a dummy prefix puts before "2024", split from digits) is not the word's own;
    a byte token of a multi-byte character, which decodes to nothing alone, changes the text and stays.
    """
    def text(ps: list[int]) -> str:
        return tokenizer.decode([ids[p] for p in ps]).strip()

    if len(positions) < 2:
        return positions
    whole = text(positions)
    while len(positions) > 1 and text(positions[1:]) == whole:
        positions = positions[1:]
    while len(positions) > 1 and text(positions[:-1]) == whole:
        positions = positions[:-1]
    return positions


def layer_names(model: Any, space: str, layers: str | Sequence[int] = "all") -> list[str]:
    """The layer names an extraction of ``space`` with ``layers`` produces for ``model``."""
    if space == "hidden":
        return [str(i) for i in resolve_layers(layers, n_hidden_layers(model))]
    require(space in SPACES, "space", space, "one of " + ", ".join(SPACES))
    return [space]


def _meta(model: Any, tokenizer: Any, space: str, template: str, pooling: str, padding_side: str,
          n_layers: int | None, words: list[str], items: list[PoolItem]) -> dict[str, Any]:

    location = getattr(model.config, "_name_or_path", "")
    return {
        "model": location, "model_class": type(model).__name__, "tokenizer_class": type(tokenizer).__name__,
        "space": space, "template": template, "pooling": pooling, "pooling_rule": POOLING_RULE.format(pooling=pooling),
        "dtype": str(getattr(model, "dtype", "")).replace("torch.", ""), "device": str(input_device(model)),
        "padding_side": padding_side, "n_hidden_layers": n_layers,
        "random_weights": is_random_weights(location),
        **({"input_scale": input_scale(model)} if space == "input" else {}),
        "n_words": len(words), "n_tokens": [len(it.positions) for it in items],
    }


def extract(model: Any, tokenizer: Any, words: Iterable[str], *, space: str = "hidden",
            layers: str | Sequence[int] = "all", template: str = WORD_SLOT, pooling: str = "mean",
            batch_size: int | str = 64, padding_side: str = "auto", show_progress: bool = True) -> Extraction:
    """An Extraction of ``words`` from an already loaded model (no file I/O, no cache)."""
    require(space in SPACES, "space", space, "one of " + ", ".join(SPACES))
    require(pooling in POOLINGS, "pooling", pooling, "one of " + ", ".join(POOLINGS))
    require(batch_size == "auto" or (isinstance(batch_size, int) and batch_size >= 1), "batch_size", batch_size,
            "an integer >= 1 or 'auto'")
    kept, items, report = prepare_words(tokenizer, words, template)
    n_layers = n_hidden_layers(model) if space == "hidden" else None
    layer_idx = resolve_layers(layers, n_layers) if space == "hidden" else []
    side = padding_for(model, padding_side) if space == "hidden" else "none"
    vectors = pool_vectors(model, items, space, layer_idx, pooling, batch_size, side, padding_token_id(tokenizer),
                       show_progress)
    names = list(vectors)
    return Extraction(kept, names, vectors, report,
                      _meta(model, tokenizer, space, template, pooling, side, n_layers, kept, items))


def load_for(config: ExtractionConfig) -> LoadedModel:
    """The model loaded as ``config`` asks (dtype, device or balanced, remote-code policy)."""

    device, device_map = resolve_device(config.device)
    check_fits(config.model, dtype=config.dtype, device=device, device_map=device_map, batch_size=config.batch_size,
               trust_remote_code=config.trust_remote_code, revision=config.revision)  # before any weight is read
    return load_model(config.model, dtype=config.dtype, device=device, device_map=device_map,
                      trust_remote_code=config.trust_remote_code, revision=config.revision)


def extract_words(words: Iterable[str], config: ExtractionConfig, *, loaded: LoadedModel | None = None,
                  show_progress: bool = True) -> Extraction:
    """An Extraction of ``words`` as ``config`` says: loads the model (or reuses ``loaded``), uses the cache."""
    loaded = loaded if loaded is not None else load_for(config)
    model, tokenizer, ref = loaded.model, loaded.tokenizer, loaded.ref
    kept, items, report = prepare_words(tokenizer, words, config.template)
    n_layers = n_hidden_layers(model) if config.space == "hidden" else None
    layer_idx = resolve_layers(config.layers, n_layers) if config.space == "hidden" else []
    names = [str(i) for i in layer_idx] if config.space == "hidden" else [config.space]
    side = padding_for(model) if config.space == "hidden" else "none"
    pad = padding_token_id(tokenizer)
    for kind, what in (("empty", "empty"), ("unrepresentable", "unrepresentable"), ("duplicates", "duplicate")):
        if report[kind]:
            log.warning("%d %s word(s) left out: %s", len(report[kind]), what,
                        ", ".join(repr(w) for w in report[kind][:10]) + (" ..." if len(report[kind]) > 10 else ""))
    if config.cache_dir is None:
        vectors = pool_vectors(model, items, config.space, layer_idx, config.pooling, config.batch_size, side, pad,
                           show_progress)
    else:
        vectors = _cached_pool(model, tokenizer, ref, kept, items, config, layer_idx, names, side, pad,
                                  show_progress)
    meta = _meta(model, tokenizer, config.space, config.template, config.pooling, side, n_layers, kept, items)
    meta["model"] = getattr(ref, "spec", meta["model"])
    meta["model_name"] = getattr(ref, "name", meta["model"])
    meta["cache_dir"] = config.cache_dir
    return Extraction(kept, names, {n: vectors[n] for n in names}, report, meta)


def _cached_pool(model: Any, tokenizer: Any, ref: Any, kept: list[str], items: list[PoolItem],
                    config: ExtractionConfig, layer_idx: list[int], names: list[str], side: str, pad: int,
                    show_progress: bool) -> dict[str, np.ndarray]:
    """Compute chunk by chunk, reading chunks the cache holds and storing the others as they finish."""

    settings = {"model": model_fingerprint(model, getattr(ref, "location", None), getattr(ref, "revision", None)),
                "tokenizer": [type(tokenizer).__name__, len(tokenizer), tokenizer.name_or_path],
                "template": config.template, "space": config.space, "pooling": config.pooling,
                "dtype": str(model.dtype)}
    cache = ExtractionCache(config.cache_dir, settings)
    # Chunks follow the token-length order, so each chunk batches well; a chunk is keyed by its words.
    order = sorted(range(len(items)), key=lambda i: -len(items[i].ids))
    chunk_size = chunk_rows(config.batch_size)
    chunks = [order[i:i + chunk_size] for i in range(0, len(order), chunk_size)]
    out: dict[str, np.ndarray] = {}
    hits = 0
    for chunk in progress(chunks, desc=f"extract {config.space}") if show_progress else chunks:
        chunk_words = [kept[i] for i in chunk]
        arrays = cache.load(chunk_words, names)
        if arrays is None:
            arrays = pool_vectors(model, [items[i] for i in chunk], config.space, layer_idx, config.pooling,
                              config.batch_size, side, pad, show_progress=False)
            cache.save(chunk_words, arrays)
        else:
            hits += 1
        for name in names:
            if name not in out:
                out[name] = np.empty((len(items), arrays[name].shape[1]), dtype=np.float32)
            out[name][chunk] = arrays[name]
    log.info("cache %s: %d of %d chunk(s) read back, %d computed", cache.folder, hits, len(chunks),
             len(chunks) - hits)
    if not chunks:
        out = pool_vectors(model, [], config.space, layer_idx, config.pooling, config.batch_size, side, pad, False)
    return out
