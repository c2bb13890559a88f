"""The ``mcicl`` command line: one parser, sub-commands registered by the packages that own them.

Each command module exposes ``register(subparsers)``, adding its parser with ``mcicl.core.cli.add_run_options``
and ``set_defaults(func=...)``; ``func(args)`` returns an exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from mcicl.analysis import compare_cli, demo, report_cli
from mcicl.probing import cli as probing_cli
from mcicl.synthetic import cli as synthetic_cli

from mcicl import __version__
from mcicl.core.runs import remove_unused_runs, set_quiet, setup_logging

log = logging.getLogger("mcicl")

# Command modules, in --help order; each defines register(subparsers).
COMMAND_MODULES = (demo, synthetic_cli, probing_cli, compare_cli, report_cli)


def build_parser() -> argparse.ArgumentParser:
    """The full ``mcicl`` parser."""
    parser = argparse.ArgumentParser(
        prog="mcicl",
        description="Multi-concept in-context learning: train the Bu et al. (NeurIPS 2024) one-layer "
                    "transformer on concept-based prompts, probe real models' concept geometry and ICL, "
                    "and compare the two worlds with one geometry engine.",
    )
    parser.add_argument("--version", action="version", version=f"mcicl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mcicl`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(quiet=getattr(args, "quiet", False), verbose=getattr(args, "verbose", False))
    set_quiet(getattr(args, "quiet", False))
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        remove_unused_runs()
        log.error("interrupted")
        return 130
    except (ValueError, OSError, LookupError) as err:
        # User-facing errors (bad config, missing model or file, unknown word) print one clear line.
        remove_unused_runs()
        if getattr(args, "verbose", False):
            raise
        log.error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
