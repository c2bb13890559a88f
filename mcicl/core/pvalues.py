"""How a permutation p-value is written: a value, or ``< 1/(B+1)`` when it sits at the floor B permutations allow.

With B permutations and the observed statistic counted once (p = (1 + #{null >= observed}) / (B + 1)), the
smallest p is 1/(B+1): a p there says only that no permutation reached the observed value, so it is written as a
bound, never as a value.
"""

from __future__ import annotations

import math


def p_floor(permutations: int) -> float:
    """The smallest p-value ``permutations`` permutations can give: 1/(permutations+1)."""
    if not isinstance(permutations, int) or permutations < 1:
        raise ValueError(f"permutations={permutations!r}; accepted: an integer >= 1")
    return 1.0 / (permutations + 1)


def p_text(p: float | None, permutations: int) -> str:
    """``p`` as text: 'p < 1/(B+1) = ...' at the floor, else 'p = ...' (3 significant digits); 'p n/a' when
    missing."""
    if p is None or not math.isfinite(p):
        return "p n/a"
    floor = p_floor(permutations)
    if p <= floor * (1 + 1e-9):
        return f"p < 1/({permutations}+1) = {floor:.2g}"
    return f"p = {p:.3g}"
