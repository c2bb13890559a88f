"""One vocabulary for nulls and intervals, shared by every job that has them (torch-free).

Every config that draws a null names its count ``permutations`` and every config with a bootstrap interval names
its count ``bootstrap``; :func:`permutations_field` and :func:`bootstrap_field` declare them (the default and what
is resampled differ per job, the name, help pattern and limits do not), and :func:`check_resampling` checks both
with one error shape. The draws follow the job's ``seed``. Why fields and not a nested ``nulls:`` section: the
flat names are what users' config files and the command line (``--permutations``, ``--bootstrap``) already use,
and run folders' config.yaml stay as they were.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from mcicl.core.limits import MAX_BOOTSTRAP, MAX_PERMUTATIONS, require_count
from mcicl.core.options import doc


def permutations_field(default: int, what: str = "permutations per null") -> Any:
    """The ``permutations`` field: ``what`` is drawn ``default`` times; the help says the p-value floor."""
    return field(default=default, metadata=doc(f"{what} (the smallest p is 1/(permutations+1))"))


def bootstrap_field(default: int, unit: str) -> Any:
    """The ``bootstrap`` field: resamples of ``unit`` for the 95% intervals."""
    return field(default=default, metadata=doc(f"bootstrap resamples ({unit}) for the 95% intervals"))


def check_resampling(config: Any, *, permutations_low: int = 1, bootstrap_low: int = 0) -> None:
    """``permutations`` and ``bootstrap`` of ``config`` (those it has) within their limits; else ConfigError."""
    if hasattr(config, "permutations"):
        require_count(config.permutations, "permutations", low=permutations_low, high=MAX_PERMUTATIONS,
                      what=">= 100 for p < 0.01 to be reachable" if permutations_low < 100 else "")
    if hasattr(config, "bootstrap"):
        require_count(config.bootstrap, "bootstrap", low=bootstrap_low, high=MAX_BOOTSTRAP)
