"""The ``mcicl`` command line: one parser, sub-commands registered by the packages that own them.

Each command module exposes ``register(subparsers)``, adding its parser with ``add_run_options`` and
``set_defaults(func=...)``; ``func(args)`` returns an exit code. Heavy imports (torch, transformers)
happen inside the handlers so ``mcicl --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from analysis import __version__
from analysis.runs import remove_unused_runs, set_quiet, setup_logging

log = logging.getLogger("mcicl")

# Command modules, in --help order. Each must define register(subparsers).
COMMAND_MODULES = (
    "analysis.demo",
    "synthetic.cli",
    "probing.cli",
    "analysis.compare_cli",
    "analysis.report_cli",
)


def add_run_options(parser: argparse.ArgumentParser, *, config: bool = True, seed: bool = True) -> None:
    """The options every run-producing command shares: --out, --overwrite, --seed, --config, --quiet."""
    g = parser.add_argument_group("run folder and reproducibility")
    g.add_argument("--out", metavar="DIR", default=None,
                   help="output run folder (default: runs/<command>-<timestamp>); an existing non-empty "
                        "folder is refused unless --overwrite")
    g.add_argument("--overwrite", action="store_true",
                   help="replace an existing mcicl run folder given as --out")
    if seed:
        g.add_argument("--seed", type=int, default=None,
                       help="random seed; the same config and seed give the same numbers (default: 0)")
    if config:
        g.add_argument("--config", metavar="FILE", default=None,
                       help="YAML or JSON file of config fields; command-line options override it")
    g.add_argument("--quiet", action="store_true", help="no progress bars, warnings and errors only")
    g.add_argument("--verbose", action="store_true", help="debug logging")


def available_commands() -> tuple[list[str], list[str]]:
    """(registered command modules, modules not built yet)."""
    built, missing = [], []
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(name)
            built.append(name)
        except ModuleNotFoundError as err:
            if err.name != name:  # a real missing dependency inside a built module: not ours to hide
                raise
            missing.append(name)
    return built, missing


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
    for name in available_commands()[0]:
        importlib.import_module(name).register(sub)
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
