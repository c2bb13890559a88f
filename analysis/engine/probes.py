"""Linear probes with a control task (Hewitt & Liang, 2019): is a concept linearly decodable, selectively?

:func:`linear_probe` fits a scikit-learn logistic regression from vectors to concept labels on a stratified
split and reports held-out accuracy next to the same probe's accuracy on a control task: each word type is
given a random concept (labels permuted over word types, so class sizes are kept). Selectivity = accuracy -
control accuracy. Because every word type lives on one side of the split here, the control task cannot be
memorised and its accuracy sits near chance; a high selectivity therefore means the concept is readable
from the vector, not that the probe is expressive.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from mcicl.analysis.engine.measures import check_inputs, encode_labels


@dataclass
class ProbeResult:
    """Held-out accuracy of a probe on the concept task and on the control task."""

    accuracy: float
    control_accuracy: float
    selectivity: float
    chance: float
    n_train: int
    n_test: int
    n_classes: int

    def to_dict(self) -> dict[str, Any]:
        """A plain dict."""
        return asdict(self)


def control_labels(labels: Sequence[str], words: Sequence[str] | None, rng: np.random.Generator) -> np.ndarray:
    """A control task: one random concept per word type, class sizes kept (labels permuted over types)."""
    labels = np.asarray(labels, dtype=str)
    types = np.asarray(words, dtype=str) if words is not None else np.arange(len(labels)).astype(str)
    uniq, first, inverse = np.unique(types, return_index=True, return_inverse=True)
    return rng.permutation(labels[first])[inverse]


def linear_probe(vectors: np.ndarray, labels: Sequence[str], *, words: Sequence[str] | None = None,
                 test_size: float = 0.3, C: float = 1.0, seed: int = 0, max_iter: int = 300) -> ProbeResult:
    """Held-out accuracy of a logistic-regression probe, its control-task accuracy and the selectivity."""

    if not 0 < test_size < 1:
        raise ValueError(f"test_size={test_size}; accepted: a number strictly between 0 and 1")
    X = check_inputs(vectors, labels)
    y, names = encode_labels(labels)
    rng = np.random.default_rng(seed)
    control, _ = encode_labels(control_labels(labels, words, rng))
    idx_train, idx_test = train_test_split(np.arange(len(X)), test_size=test_size, random_state=seed, stratify=y)
    scaler = StandardScaler().fit(X[idx_train])
    Xtr, Xte = scaler.transform(X[idx_train]), scaler.transform(X[idx_test])

    def fit_score(target: np.ndarray) -> float:
        clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
        return float(clf.fit(Xtr, target[idx_train]).score(Xte, target[idx_test]))



    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a probe stopped at max_iter is still a probe
        acc, ctrl = fit_score(y), fit_score(control)
    chance = float(np.max(np.bincount(y[idx_test])) / len(idx_test))
    return ProbeResult(acc, ctrl, acc - ctrl, chance, len(idx_train), len(idx_test), len(names))
