"""The job protocol: what every mcicl job declares, what it is handed when it runs, and what its result offers.

A job (synthetic train, probe geometry, compare, ...) is declared once by a :class:`Job` that sits beside its
config dataclass in a torch-free module. The application layer's registry lists the jobs; from it come the
command-line sub-commands and their options (generated from the config fields, :mod:`mcicl.core.options`), the
report's sections (dispatched on the command that ``run.json`` records) and the demo's stages. Everything heavy
is named by a dotted string (``"mcicl.probing.geometry:execute"``) and imported only when used, so ``mcicl
--help`` imports no torch.

A job's entry point is ``execute(config, ctx: JobContext) -> int``: it validates its inputs, opens its run folder
with :meth:`JobContext.create_run` (atomic: a failed command leaves every folder as it was), computes a
:class:`Result` and saves it. Its result has ``.summary`` (a JSON-safe dict), ``.figures()`` (name ->
matplotlib Figure) and ``.save(run)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from mcicl.core.options import option_flag
from mcicl.core.runs import RunFolder  # torch- and numpy-free: core.io uses numpy only if it is loaded


@runtime_checkable
class Result(Protocol):
    """What every job returns: headline numbers, figures made from them, and the run folder it writes."""

    summary: dict[str, Any]

    def figures(self) -> dict[str, Any]: ...

    def save(self, run: RunFolder) -> None: ...


@dataclass(frozen=True)
class Option:
    """A command-line option that is not a config field: an input run, a positional argument, a run mode.

    ``flags`` as argparse takes them (``("--resume",)`` or ``("runs",)`` for a positional); ``kwargs`` are
    argparse's own (action, nargs, choices, metavar, type, default). Its value reaches the job as
    ``ctx.options[dest]``.
    """

    flags: tuple[str, ...]
    help: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def dest(self) -> str:
        return self.kwargs.get("dest") or self.flags[0].lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class DemoStage:
    """A job's stage in ``mcicl demo``: ``run`` ("module:function") takes a DemoContext and returns its headline
    numbers; stages run in ``order``."""

    title: str
    run: str
    order: int


@dataclass
class Table:
    """A titled table: rows of column -> value (rendered with the columns of the first rows, in order)."""

    title: str
    rows: list[dict[str, Any]]
    caption: str = ""
    note: str = ""


@dataclass(frozen=True)
class CsvTable:
    """A CSV file of a run shown as a report table, with its title and a caption saying how to read it."""

    file: str
    title: str
    caption: str = ""


@dataclass(frozen=True)
class ReportSection:
    """How the report shows a run of this job: a title, a paragraph, the CSV tables worth showing, and optionally
    ``tables`` ("module:function", (run folder Path, summary dict) -> list of report Tables) for tables built
    from the summary. Every run's figures (with their saved captions), config and versions are added to it."""

    title: str
    text: str
    csv_tables: tuple[CsvTable, ...] = ()
    tables: str | None = None
    skip: tuple[str, ...] = ()  # summary.json keys left out of the headline-numbers table (shown elsewhere)
    stages: bool = False  # the run's sub-run folders (a demo's stages) follow as their own sections, in stage order


@dataclass(frozen=True)
class ReportCatalog:
    """What the report knows of the registered jobs, handed down by the application layer (the report's code sits
    below it and may not import the registry): run.json command -> its ReportSection, and run.json command -> the
    order of the demo stage that writes such a folder (a demo's stage folders are shown in that order)."""

    sections: Mapping[str, ReportSection] = field(default_factory=dict)
    demo_order: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    """One job: its command, its config, where its code is, and its report section and demo stage."""

    command: str  # as typed after `mcicl` and as run.json records it: "probe geometry"
    help: str  # one line for the command list
    description: str  # the command's own --help text
    execute: str  # "module:function", (config, JobContext) -> exit code
    result: str | None = None  # "module:Class" of the result it returns (.summary, .figures(), .save(run))
    config: type | None = None  # a dataclass from a torch-free module; its fields give the options
    fields: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # option group title -> field paths
    flags: Mapping[str, str] = field(default_factory=dict)  # field path -> flag, where not --<leaf>
    options: tuple[Option, ...] = ()
    run_folder: bool = True  # --out, --overwrite (commands that write a run folder)
    seed: bool = True  # --seed (sets the config's `seed` field)
    config_file: bool = True  # --config FILE
    sets: bool = False  # --set FIELD=VALUE for any config field
    report: ReportSection | None = None  # how `mcicl report` shows a run of this job
    reports: tuple[str, ...] = ()  # run.json commands the report section reads (default: this command)
    demo: DemoStage | None = None

    @property
    def words(self) -> tuple[str, ...]:
        return tuple(self.command.split())

    @property
    def reported_commands(self) -> tuple[str, ...]:
        return self.reports or (self.command,)

    def flag_of(self) -> dict[str, str]:
        """Config field path -> its option flag, for every field this job offers as an option."""
        paths = [p for group in self.fields.values() for p in group]
        if self.seed and self.config is not None:
            paths.append("seed")
        return {p: option_flag(self.config, p, self.flags) for p in paths} if self.config else {}


def load(target: str) -> Callable[..., Any]:
    """The object a "module:name" string names, imported now."""
    module, _, name = target.partition(":")
    if not name:
        raise ValueError(f"{target!r} is not 'module:name'")
    return getattr(importlib.import_module(module), name)


@dataclass
class JobContext:
    """What a job's ``execute`` gets beside its config: run-folder choices, the job's own options, where each config
    value came from. Plain values, no argparse."""

    command: str
    out: str | None = None
    overwrite: bool = False
    resume: bool = False
    quiet: bool = False
    config_file: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # config field path -> 'config file X' / '--set' / flag
    reports: ReportCatalog = field(default_factory=ReportCatalog)  # the registered jobs' report sections

    def create_run(self, *, inputs: Mapping[str, str | Path | None] | None = None, resumable: bool = False,
                   command: str | None = None) -> RunFolder:
        """Open this command's output folder (``--out``), atomically: committed when the command succeeds, every
        folder put back as it was when it fails. ``inputs`` may not be the output."""
        return RunFolder.create(self.out, command or self.command, overwrite=self.overwrite, resume=self.resume,
                                resumable=resumable, inputs=inputs, atomic=True, sources=self.sources)


@dataclass
class DemoContext:
    """What a demo stage gets: the demo's run folder, the model, the seed, the size, earlier stages' results."""

    run: RunFolder
    model: str = "default"
    seed: int = 0
    small: bool = False
    quiet: bool = False
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage title -> its headline numbers
    reports: ReportCatalog = field(default_factory=ReportCatalog)  # the registered jobs' report sections

    def stage_run(self, name: str, command: str) -> RunFolder:
        """The stage's own run folder inside the demo's (replaced if a previous demo left one)."""
        return RunFolder.create(self.run.path / name, command, overwrite=True)

    def stage(self, title: str) -> dict[str, Any]:
        """The headline numbers of an earlier stage (a ValueError naming the stages run so far if absent)."""
        if title not in self.results:
            raise ValueError(f"demo stage {title!r} has not run; stages so far: {', '.join(self.results) or 'none'}")
        return self.results[title]
