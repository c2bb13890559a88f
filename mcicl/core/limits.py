"""Stated limits on the sizes a config may ask for, checked before any work starts.

A typo such as ``--episodes 1000000000000`` must be refused at once, not run for days: each limit is far above
any publication setting (mcicl's own findings use at most a few thousand) and far below what would hang.
"""

from __future__ import annotations

from mcicl.core.configuration import require

MAX_PERMUTATIONS = 100_000  # label permutations of one null
MAX_BOOTSTRAP = 100_000  # bootstrap resamples of one interval
MAX_EPISODES = 100_000  # ICL episodes per condition and shot count
MAX_SHOTS = 1_024  # demonstrations in one prompt
MAX_DRAWS = 10_000  # other repeated draws (shuffled-embedding nulls, knockout draws)
MAX_QUERIES = 1_000  # ICL queries sharing one episode
MAX_PROMPTS = 1_000_000  # ICL prompts of one run (conditions x shots x episodes x queries): days of scoring


def require_count(value: object, field: str, *, low: int, high: int, what: str = "") -> None:
    """An integer from ``low`` to ``high``; else a ConfigError naming the field and the range (and why the limit)."""
    ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    require(ok, field, value, f"an integer from {low:,} to {high:,}{' (' + what + ')' if what else ''}")
