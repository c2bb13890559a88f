"""One seed for Python, NumPy and torch: the same config and seed give the same numbers."""

from __future__ import annotations

import random

import numpy as np


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch; return a NumPy Generator for explicit use."""
    import torch  # deferred: importing mcicl.core needs no torch (mcicl --help answers at once)

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)
