"""Polysemous words' sparse codes in context: does a sentence move a word's code toward the atoms of the sense it is
tagged with?

For each context (a word in a sentence tagged with a sense, :mod:`probing.contexts`), the word's contextual vector
(:func:`probing.contextual.extract_contexts`, the dictionary's layer) and its vector out of context (the extraction
the dictionary was fitted on) are coded on the learned dictionary with its chosen sparsity (OMP, after the fit's own
shift). The loading on the tagged sense is the share of the code's |loading| on atoms whose closest concept
direction is that sense (:func:`analysis.engine.sparse_coding.sense_loading`); a context's shift is that share in
context minus out of context, averaged per word. A sentence moves every word's vector, so the polysemous words'
mean shift is compared with the monosemous control words' (their tagged sense is their own concept): the drift
control of the contexts probe (:func:`analysis.engine.context_measures.drift_controlled`, a two-sample bootstrap
over words).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mcicl.analysis.engine.context_measures import drift_controlled
from mcicl.analysis.engine.sparse_coding import sense_loading, sparse_codes
from mcicl.probing.contexts import ContextSet
from mcicl.probing.contextual import extract_contexts
from mcicl.probing.extract import extract_words
from mcicl.probing.extract_config import ExtractionConfig
from mcicl.probing.models import LoadedModel


def _per_word(values: np.ndarray, words: list[str]) -> np.ndarray:
    order = list(dict.fromkeys(words))
    arr = np.asarray(words)
    return np.array([values[arr == w].mean() for w in order])


def context_code_shift(fit: dict[str, Any], layer: str, contexts: ContextSet, ecfg: ExtractionConfig,
                       loaded: LoadedModel, *, n_bootstrap: int, seed: int) -> dict[str, Any]:
    """The in-context code shift toward the tagged sense, polysemous words against monosemous controls, for one
    fitted layer (``fit``: :func:`probing.dictionary.fit_space`'s output on that layer)."""
    names = fit["concept_names"]
    code = {n: i for i, n in enumerate(names)}
    usable = [c for c in contexts.contexts if c.sense in code]
    ext = extract_contexts(loaded.model, loaded.tokenizer, usable, layers=[int(layer)], pooling=ecfg.pooling,
                           batch_size=ecfg.batch_size, show_progress=False)
    words = list(dict.fromkeys(c.word for c in usable))
    alone = extract_words(words, ecfg, loaded=loaded, show_progress=False)
    index = {w: i for i, w in enumerate(alone.words)}
    keep = [i for i, c in enumerate(usable) if c.word in index]
    usable = [usable[i] for i in keep]
    dic, k, shift = fit["dictionary"], fit["choice"].nonzeros, fit["shift"]
    inside = sparse_codes(ext.vectors[layer][keep].astype(np.float64) - shift, dic, k)
    outside = sparse_codes(alone.vectors[layer][[index[c.word] for c in usable]].astype(np.float64) - shift, dic, k)
    senses = [code[c.sense] for c in usable]
    delta = sense_loading(inside, fit["atom_concept"], senses) - sense_loading(outside, fit["atom_concept"], senses)
    n_senses = {w: len({c.sense for c in usable if c.word == w}) for w in words}
    poly = [i for i, c in enumerate(usable) if n_senses[c.word] >= 2]
    mono = [i for i, c in enumerate(usable) if n_senses[c.word] == 1]
    p_units = _per_word(delta[poly], [usable[i].word for i in poly]) if poly else np.array([])
    c_units = _per_word(delta[mono], [usable[i].word for i in mono]) if mono else np.array([])
    out = drift_controlled(p_units, c_units, n_bootstrap, np.random.default_rng([seed, 53]))
    return {**out, "layer": layer, "n_contexts": len(usable), "polysemous_units": p_units, "control_units": c_units,
            "statistic": "share of the code's |loading| on the tagged sense's atoms, in context minus out of "
                         "context, per word; polysemous words minus monosemous controls"}
