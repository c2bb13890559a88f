"""Head roles on repeated random token sequences: previous-token, duplicate-token and induction scores (numpy).

A probe sequence is ``start`` leading tokens (BOS or [CLS]), then ``T`` random tokens ``r_1..r_T`` (no token
twice), then the same ``T`` tokens again, then any trailing tokens ([SEP]). For a head's attention pattern
``A[i, j]`` (query position i, key position j), with ``p(i) = start + i`` the i-th random token's position
(i = 0..2T-1), each score is the mean attention on one target position (as TransformerLens' head detector and
Olsson et al.'s induction score read a pattern):

- previous-token: A[p(i), p(i - 1)] over i = 1..2T-1;
- duplicate-token: A[p(i), p(i - T)] over the second copy, i = T..2T-1 (the earlier occurrence of the same token);
- induction: A[p(i), p(i - T + 1)] over i = T..2T-1 (the token that followed the earlier occurrence).

A head that attends uniformly over n positions scores about 1/n on each.
"""

from __future__ import annotations

import numpy as np

ROLES = ("previous_token", "duplicate_token", "induction")


def role_targets(period: int, start: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(query positions, target positions) of each role for a sequence of ``start`` + 2 * ``period`` tokens."""
    if period < 2:
        raise ValueError(f"period={period}; accepted: an integer >= 2 (a repeat needs two tokens)")
    i_all = np.arange(1, 2 * period)
    second = np.arange(period, 2 * period)
    return {"previous_token": (start + i_all, start + i_all - 1),
            "duplicate_token": (start + second, start + second - period),
            "induction": (start + second, start + second - period + 1)}


def role_scores(patterns: np.ndarray, period: int, start: int = 0) -> dict[str, np.ndarray]:
    """Each role's score per head from attention ``patterns`` (..., N, N) of one repeated sequence: (...,) each."""
    patterns = np.asarray(patterns)
    need = start + 2 * period
    if patterns.shape[-1] < need or patterns.shape[-2] < need:
        raise ValueError(f"patterns of {patterns.shape[-2:]} positions; accepted: at least start + 2 * period = "
                         f"{need}")
    return {role: patterns[..., q, t].mean(-1) for role, (q, t) in role_targets(period, start).items()}


def repeated_sequences(vocabulary: np.ndarray, n: int, period: int, seed: int = 0) -> np.ndarray:
    """``n`` sequences of ``period`` distinct random ids from ``vocabulary``, each repeated once: (n, 2 * period)."""
    vocabulary = np.asarray(vocabulary)
    if len(vocabulary) < period:
        raise ValueError(f"a vocabulary of {len(vocabulary)} ids; accepted: at least period = {period} ids")
    rng = np.random.default_rng(seed)
    half = np.stack([rng.choice(vocabulary, size=period, replace=False) for _ in range(n)])
    return np.concatenate([half, half], axis=1)
