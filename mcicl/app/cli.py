"""The ``mcicl`` command line, made from the job registry: one sub-command per job, its options from its config.

``mcicl --help`` and ``mcicl <command> --help`` import no torch: the parser comes from torch-free config
modules, and a job's code is imported only when its command runs. Precedence, for every command and field:
an option typed on the command line > ``--set FIELD=VALUE`` > the ``--config`` file > the default; an option not
typed is absent, never a default that overrides the file. ``--print-config`` shows the resolved config with
where each value came from, and runs nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import yaml

from mcicl import __version__
from mcicl.app import registry
from mcicl.core.configuration import ConfigError, ConfigFileError, annotate_yaml, to_dict
from mcicl.core.jobs import Job, JobContext, load
from mcicl.core.logs import set_quiet, setup_logging
from mcicl.core.options import add_config_options, resolve_config
from mcicl.core.runs import run_transaction

log = logging.getLogger("mcicl")

SEED_HELP = "random seed; the same config and seed give the same numbers"


def parse_sets(items: Sequence[str] | None) -> dict[str, str]:
    """``--set FIELD=VALUE`` pairs as {field path: text}; a key given twice is refused."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set {item!r}; accepted: FIELD=VALUE, e.g. --set within_cosine=0.7")
        key, value = (part.strip() for part in item.split("=", 1))
        if key in out:
            raise ValueError(f"--set {key} is given twice ({out[key]!r} and {value!r}); accepted: each field once")
        out[key] = value
    return out


def add_job_options(p: argparse.ArgumentParser, job: Job) -> None:
    """The options of ``job``: its config fields by group, its own options, then the run-folder options."""
    for title, paths in job.fields.items():
        add_config_options(p.add_argument_group(title), job.config, paths, job.flags)
    for option in job.options:
        kwargs = dict(option.kwargs)
        if option.flags[0].startswith("-"):
            kwargs.setdefault("dest", option.dest)
        p.add_argument(*option.flags, help=option.help, **kwargs)
    g = p.add_argument_group("run folder and reproducibility")
    if job.run_folder:
        g.add_argument("--out", metavar="DIR", default=None,
                       help="output run folder (default: runs/<command>-<timestamp>); an existing non-empty "
                            "folder is refused unless --overwrite")
        g.add_argument("--overwrite", action="store_true", help="replace an existing mcicl run folder given as --out")
    if job.seed and job.config is not None:
        g.add_argument("--seed", dest="seed", default=argparse.SUPPRESS, help=SEED_HELP + " (default: 0)")
    if job.config_file and job.config is not None:
        g.add_argument("--config", metavar="FILE", default=None,
                       help="YAML or JSON file of config fields; options typed on the command line override it")
    if job.sets:
        g.add_argument("--set", action="append", metavar="FIELD=VALUE",
                       help="override any config field, e.g. --set within_cosine=0.7 (repeatable)")
    if job.config is not None:
        g.add_argument("--print-config", action="store_true",
                       help="print the resolved config, each value with where it came from, and run nothing")
    g.add_argument("--quiet", action="store_true", help="no progress bars, warnings and errors only")
    g.add_argument("--verbose", action="store_true", help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    """The full ``mcicl`` parser, from the registry."""
    parser = argparse.ArgumentParser(
        prog="mcicl",
        description="Multi-concept in-context learning: train the Bu et al. (NeurIPS 2024) one-layer "
                    "transformer on concept-based prompts, probe real models' concept geometry and ICL, "
                    "and compare the two worlds with one geometry engine.",
    )
    parser.add_argument("--version", action="version", version=f"mcicl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}

    def group(name: str) -> argparse._SubParsersAction:
        if name not in groups:
            help_text, description = registry.GROUPS[name]
            g = sub.add_parser(name, help=help_text, description=description)
            groups[name] = g.add_subparsers(dest=f"{name}_command", metavar=f"{name.upper()}_COMMAND",
                                            required=True)
        return groups[name]

    for job in _ordered(registry.jobs()):
        target = group(job.words[0]) if len(job.words) > 1 else sub
        p = target.add_parser(job.words[-1], help=job.help, description=job.description)
        add_job_options(p, job)
        p.set_defaults(_job=job.command)
    return parser


def _ordered(jobs: Sequence[Job]) -> list[Job]:
    """Jobs in --help order: demo, synthetic, probe, compare, report, then any others (registry order within)."""
    order = ["demo", "synthetic", "probe", "compare", "report"]
    return sorted(jobs, key=lambda j: order.index(j.words[0]) if j.words[0] in order else len(order))


def repeated_option(parser: argparse.ArgumentParser, argv: Sequence[str]) -> str | None:
    """The first option of the chosen command typed twice (``--permutations 5 --permutations 6``, or ``--center``
    with ``--no-center``), which argparse would settle silently by the last one; None when there is none.
    Options meant to repeat (``--set``) are left alone."""
    chosen, words = parser, list(argv)
    for word in words:  # follow the command words to the command's own parser
        sub = next((a for a in chosen._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None or word not in sub.choices:
            break
        chosen = sub.choices[word]
    repeatable = (argparse._AppendAction, argparse._CountAction, argparse._ExtendAction)
    seen: dict[str, str] = {}
    for word in words:
        if word == "--":
            break
        action = chosen._option_string_actions.get(word.split("=", 1)[0]) if word.startswith("--") else None
        if action is None or isinstance(action, repeatable):
            continue
        typed = word.split("=", 1)[0]
        if action.dest in seen:
            first = seen[action.dest]
            return f"options {first} and {typed} are both given" if first != typed else f"option {typed} is given twice"
        seen[action.dest] = typed
    return None


def _out_of_memory(err: BaseException) -> bool:
    text = str(err)
    return isinstance(err, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower()


def error_line(err: BaseException, options: dict[str, str]) -> str:
    """One line for a user-facing error; a ConfigError names the option or file its bad value came from."""
    if _out_of_memory(err):
        wanted = re.search(r"allocate (\d+) bytes", str(err))
        size = f" ({int(wanted.group(1)) / 2**30:,.1f} GiB in one allocation)" if wanted else ""
        return (f"not enough memory for this run{size}; accepted: a smaller run (fewer --seeds, a smaller "
                "--batch-size or config sizes)")
    if isinstance(err, ConfigFileError):
        return str(err)
    if isinstance(err, ConfigError):
        source = err.source
        if source and source.startswith("--") and source != "--set":
            return f"{source} {err.value!r}: accepted: {err.accepted}"
        if source:
            return f"{source}: {err.field}={err.value!r}; accepted: {err.accepted}"
        # a check deep in a job names the bare field (layers): find the option whose path ends with it
        flag = options.get(err.field) or next((f for path, f in options.items() if path.endswith("." + err.field)),
                                              None)
        if flag:
            return f"{flag} {err.value!r}: accepted: {err.accepted}"
        return f"config field {err.field}={err.value!r} (from --set or --config): accepted: {err.accepted}"
    return str(err)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: handled like Ctrl-C, so the run folders are put back before the process exits."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _terminate(signum: int, frame: Any) -> None:
    # An exception raised inside a finalizer (__del__, which the garbage collector may run at any line) is printed
    # and swallowed, so the process would go on: there, send the signal again shortly and raise it then.
    f = frame
    while f is not None:
        if f.f_code.co_name == "__del__":
            threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()
            return
        f = f.f_back
    raise Terminated(signum)


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """Within this block SIGTERM and SIGHUP raise :class:`Terminated` (the main thread only: elsewhere Python
    cannot install handlers, and the caller's own handlers are left alone)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kinds = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None]
    before = {s: signal.signal(s, _terminate) for s in kinds}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


class _Failed(Exception):
    """A command returned a non-zero exit code: its run folders are aborted like after an error."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def job_context(job: Job, args: argparse.Namespace, sources: dict[str, str]) -> JobContext:
    """The typed context of a parsed command line (no argparse past this point)."""
    return JobContext(command=job.command, out=getattr(args, "out", None),
                      overwrite=bool(getattr(args, "overwrite", False)), resume=bool(getattr(args, "resume", False)),
                      quiet=bool(getattr(args, "quiet", False)), config_file=getattr(args, "config", None),
                      options={o.dest: getattr(args, o.dest, None) for o in job.options}, sources=sources,
                      reports=registry.report_catalog())


def resolve(job: Job, args: argparse.Namespace) -> tuple[Any, dict[str, str]]:
    """(config, sources) of a parsed command line: defaults < --config file < --set < options typed."""
    if job.config is None:
        return None, {}
    flags = job.flag_of()
    given = {path: getattr(args, path) for path in flags if hasattr(args, path)}
    return resolve_config(job.config, file=getattr(args, "config", None), sets=parse_sets(getattr(args, "set", None)),
                          given=given, flags={**flags, "seed": "--seed"})


def print_config(config: Any, sources: dict[str, str]) -> str:
    """The resolved config as YAML, each value the user set followed by where it came from."""
    return annotate_yaml(yaml.safe_dump(to_dict(config), sort_keys=False), sources)


def run_job(job: Job, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Resolve the config, then run the job (its code imported now) inside a run-folder transaction."""
    config, sources = resolve(job, args)
    if getattr(args, "print_config", False):
        print(print_config(config, sources), end="")
        return 0
    return int(load(job.execute)(config, job_context(job, args, sources)) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mcicl`` console script.

    A command's run folders are committed when it returns 0 and aborted (every folder put back as it was)
    when it fails, so no command needs its own clean-up.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(quiet=getattr(args, "quiet", False), verbose=getattr(args, "verbose", False))
    set_quiet(getattr(args, "quiet", False))
    job = registry.job(args._job)
    twice = repeated_option(parser, sys.argv[1:] if argv is None else argv)
    if twice is not None:
        log.error("%s; accepted: each option once (argparse would silently keep the last)", twice)
        return 2
    try:
        with signals_as_interrupts(), run_transaction(None if argv is None else ["mcicl", *argv]):
            code = run_job(job, args, parser)
            if code != 0:
                raise _Failed(code)
    except _Failed as failed:
        return failed.code
    except Terminated as term:
        log.error("terminated by signal %d; every run folder was put back as it was", term.signum)
        return 128 + term.signum
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except (ValueError, OSError, LookupError, MemoryError, RuntimeError) as err:
        # User-facing errors (bad config, missing model or file, unknown word) print one clear line.
        if getattr(args, "verbose", False) or (isinstance(err, RuntimeError) and not _out_of_memory(err)):
            raise
        log.error("%s", error_line(err, job.flag_of()))
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
