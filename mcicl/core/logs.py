"""Logging and progress bars: the 'mcicl' logger's levels and tqdm bars that --quiet silences."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

log = logging.getLogger("mcicl")
T = TypeVar("T")
_QUIET = False


def set_quiet(quiet: bool) -> None:
    """Silence progress bars (and info logging) for the rest of the process."""
    global _QUIET
    _QUIET = quiet


def progress_enabled() -> bool:
    """Whether progress bars are shown: not under --quiet, and only where someone watches (a terminal or Jupyter)."""
    return not _QUIET and (sys.stderr.isatty() or "ipykernel" in sys.modules)


def progress(iterable: Iterable[T], desc: str | None = None, total: int | None = None, **kw: Any) -> Iterator[T]:
    """A tqdm bar over ``iterable``; silent under --quiet or when stderr is not a terminal."""

    from tqdm.auto import tqdm  # deferred: the command line's --help never draws a bar

    return iter(tqdm(iterable, desc=desc, total=total, disable=not progress_enabled(), leave=False, **kw))


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    """Configure the 'mcicl' logger: INFO by default, WARNING with --quiet, DEBUG with --verbose."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname).1s %(name)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
