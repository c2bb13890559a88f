"""The ``mcicl`` command line: one parser, sub-commands registered by the packages that own them.

Each command module exposes ``register(subparsers)``, adding its parser with ``mcicl.core.cli.add_run_options``
and ``set_defaults(func=...)``; ``func(args)`` returns an exit code.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence

from mcicl import __version__
from mcicl.analysis import compare_cli, report_cli
from mcicl.app import demo
from mcicl.core.configuration import ConfigError
from mcicl.core.logs import set_quiet, setup_logging
from mcicl.core.runs import atomic_runs
from mcicl.probing import cli as probing_cli
from mcicl.synthetic import cli as synthetic_cli

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


def _options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, str]:
    """Config field -> option of the sub-command that ran: each option names the field it sets (--batch-size:
    batch_size), and a sub-command's ``option_aliases`` default maps a field to an option of another name
    (probe icl: layers -> --layer)."""
    out: dict[str, str] = {}
    for action in parser._actions:
        for flag in action.option_strings:
            if flag.startswith("--"):
                out[flag[2:].replace("-", "_")] = flag
        if isinstance(action, argparse._SubParsersAction) and getattr(args, action.dest, None) in action.choices:
            out.update(_options(action.choices[getattr(args, action.dest)], args))
    return {**out, **(getattr(args, "option_aliases", None) or {})}


def _out_of_memory(err: BaseException) -> bool:
    text = str(err)
    return isinstance(err, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower()


def error_line(err: BaseException, options: dict[str, str]) -> str:
    """One line for a user-facing error; a ConfigError's field is named as its option where there is one."""
    if _out_of_memory(err):
        wanted = re.search(r"allocate (\d+) bytes", str(err))
        size = f" ({int(wanted.group(1)) / 2**30:,.1f} GiB in one allocation)" if wanted else ""
        return (f"not enough memory for this run{size}; accepted: a smaller run (fewer --seeds, a smaller "
                "--batch-size or config sizes)")
    if isinstance(err, ConfigError):
        # A nested field (extraction.model) is set by the option named for its last part (--model).
        flag = options.get(err.field.rsplit(".", 1)[-1])
        if flag:
            return f"{flag} {err.value!r}: accepted: {err.accepted}"
        return f"config field {err.field}={err.value!r} (from --set or --config): accepted: {err.accepted}"
    return str(err)


class _Failed(Exception):
    """A command returned a non-zero exit code: its run folders are aborted like after an error."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mcicl`` console script.

    A command's run folders are committed when it returns 0 and aborted (every folder put back as it was)
    when it fails, so no command needs its own clean-up.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(quiet=getattr(args, "quiet", False), verbose=getattr(args, "verbose", False))
    set_quiet(getattr(args, "quiet", False))
    try:
        with atomic_runs(None if argv is None else ["mcicl", *argv]):
            code = int(args.func(args) or 0)
            if code != 0:
                raise _Failed(code)
    except _Failed as failed:
        return failed.code
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except (ValueError, OSError, LookupError, MemoryError, RuntimeError) as err:
        # User-facing errors (bad config, missing model or file, unknown word) print one clear line.
        if getattr(args, "verbose", False) or (isinstance(err, RuntimeError) and not _out_of_memory(err)):
            raise
        log.error("%s", error_line(err, _options(parser, args)))
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
