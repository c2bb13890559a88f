"""Attention-readout ICL on any model's word vectors: the paper's mechanism applied to real geometry.

The query attends to the demonstrations with weights ``softmax(beta * cos(query, demo))`` and the
prediction is the label carrying the most attention mass (Bu et al.'s one-layer transformer reads the
label out of the demonstrations its query attends to). With no demonstrations (zero-shot) the query attends
to the label words themselves. ``beta`` (the inverse temperature) is swept; the best one is chosen on a
held-out split of in-distribution prompts. A query inside a sentence (the in_context conditions) is read
as its contextual vector there (:mod:`probing.contextual`), looked up by ``IclPrompt.query_key``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from mcicl.probing.contexts import SenseContext
from mcicl.probing.icl.icl_config import DEFAULT_BETAS  # noqa: F401  (imported from here)
from mcicl.probing.icl.tasks import IclPrompt

LOG_FLOOR = 1e-12  # log of a label with no attention mass is reported as log(1e-12), not -inf


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def attention_readout(query: np.ndarray, keys: np.ndarray, key_labels: np.ndarray, n_labels: int,
                      betas: Sequence[float]) -> np.ndarray:
    """Label probabilities (P, B, n_labels): softmax(beta * cos(query, key)) mass on each label.

    ``query`` (P, d), ``keys`` (P, n, d), ``key_labels`` (P, n) integer label ids, ``betas`` (B,).
    """
    q, k = _unit(np.asarray(query, dtype=np.float64)), _unit(np.asarray(keys, dtype=np.float64))
    cos = np.einsum("pd,pnd->pn", q, k)  # (P, n)
    logits = np.asarray(betas, dtype=np.float64)[None, :, None] * cos[:, None, :]  # (P, B, n)
    logits -= logits.max(axis=-1, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(axis=-1, keepdims=True)
    onehot = np.eye(n_labels)[np.asarray(key_labels)]  # (P, n, L)
    return np.einsum("pbn,pnl->pbl", weights, onehot)


@dataclass
class WordVectors:
    """Word -> vector lookup (one layer of an Extraction)."""

    index: dict[str, int]
    matrix: np.ndarray

    def __call__(self, words: Iterable[str]) -> np.ndarray:
        """Rows for ``words`` (KeyError naming the first word that has no vector)."""
        rows = []
        for w in words:
            if w not in self.index:
                raise KeyError(f"no vector for {w!r} (the tokenizer could not represent it)")
            rows.append(self.index[w])
        return self.matrix[rows]


def readout_probabilities(prompts: Sequence[IclPrompt], vectors: WordVectors,
                          betas: Sequence[float]) -> np.ndarray:
    """Label probabilities (len(prompts), len(betas), n_labels) of the attention readout, labels in prompt order.

    Prompts are grouped by (shots, number of labels) so each group is one vectorized call.
    """
    if not prompts:
        return np.zeros((0, len(betas), 0))
    n_labels = len(prompts[0].labels)
    out = np.zeros((len(prompts), len(betas), n_labels))
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        if len(p.labels) != n_labels:
            raise ValueError("all prompts must have the same number of candidate labels")
        groups.setdefault(len(p.demos), []).append(i)
    for n_demos, idx in groups.items():
        group = [prompts[i] for i in idx]
        query = vectors(p.query_key for p in group)
        if n_demos == 0:
            # zero-shot: attend over the label words themselves (their text is their meaning)
            keys = np.stack([vectors(p.labels) for p in group])
            key_labels = np.tile(np.arange(n_labels), (len(group), 1))
        else:
            keys = np.stack([vectors(w for w, _ in p.demos) for p in group])
            key_labels = np.array([[p.labels.index(lab) for _, lab in p.demos] for p in group])
        out[idx] = attention_readout(query, keys, key_labels, n_labels, betas)
    return out


def predict(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Argmax label index per row of (..., L) probabilities, ties broken at random (beta=0, balanced demos)."""
    noise = rng.random(probabilities.shape) * 1e-9
    top = probabilities.max(axis=-1, keepdims=True)
    return np.argmax(np.where(probabilities >= top - 1e-12, 1.0 + noise, 0.0), axis=-1)


def readout_words(prompts: Iterable[IclPrompt]) -> list[str]:
    """Every word the readout needs a vector for out of context: queries (not those inside a sentence),
    demonstration words and (zero-shot) labels."""
    words: dict[str, None] = {}
    for p in prompts:
        if not p.query_context:
            words[p.query] = None
        words.update(dict.fromkeys(w for w, _ in p.demos))
        if not p.demos:
            words.update(dict.fromkeys(p.labels))
    return list(words)


def readout_contexts(prompts: Iterable[IclPrompt]) -> list[SenseContext]:
    """The distinct query occurrences inside sentences (in_context conditions), keyed like ``query_key``."""
    out: dict[str, SenseContext] = {}
    for p in prompts:
        if p.query_context and p.query_key not in out:
            out[p.query_key] = SenseContext(p.query, p.context_sense, p.query_context, p.query_start,
                                            surface=p.query_surface)
    return list(out.values())


def vote_probabilities(attention: np.ndarray, key_labels: np.ndarray, n_labels: int) -> np.ndarray:
    """Label probabilities (P, layers, heads, n_labels) of the attention vote h = sum_d alpha_d y_d.

    ``attention`` (P, layers, heads, D): each head's attention mass from the query on demonstration d's tokens;
    alpha_d is that mass normalised over the demonstrations (uniform where a head puts none on them);
    ``key_labels`` (P, D) integer label ids.
    """
    att = np.asarray(attention, dtype=np.float64)
    total = att.sum(-1, keepdims=True)
    alpha = np.where(total > 0, att / np.where(total > 0, total, 1.0), 1.0 / att.shape[-1])
    onehot = np.eye(n_labels)[np.asarray(key_labels)]  # (P, D, L)
    return np.einsum("plhd,pdk->plhk", alpha, onehot)


def state_probabilities(prompts: Sequence[IclPrompt], queries: np.ndarray, keys: Sequence[np.ndarray],
                        betas: Sequence[float]) -> np.ndarray:
    """The kernel readout on given states: (len(prompts), len(betas), n_labels); ``queries`` (P, d) and
    ``keys[i]`` (n_i, d) the keys of prompt i: its demonstrations' states, or (zero-shot) its labels' states."""
    if not prompts:
        return np.zeros((0, len(betas), 0))
    n_labels = len(prompts[0].labels)
    out = np.zeros((len(prompts), len(betas), n_labels))
    groups: dict[int, list[int]] = {}
    for i in range(len(prompts)):
        groups.setdefault(len(keys[i]), []).append(i)
    for _, idx in groups.items():
        labels = [[prompts[i].labels.index(lab) for _, lab in prompts[i].demos] if prompts[i].demos
                  else list(range(n_labels)) for i in idx]
        out[idx] = attention_readout(queries[idx], np.stack([keys[i] for i in idx]), np.array(labels), n_labels,
                                     betas)
    return out
