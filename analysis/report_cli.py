"""``mcicl report RUN... [--out DIR]``: one self-contained HTML report (plus report.md) of saved run folders."""

from __future__ import annotations

import argparse

from mcicl.analysis.report import report_runs
from mcicl.core.cli import add_run_options
from mcicl.core.runs import RunFolder, require_run

# The run folders a report has sections for.
REPORTED = ("synthetic train", "synthetic sweep", "probe geometry", "probe icl", "compare", "demo")


def run(args: argparse.Namespace) -> int:
    """Build the report; print where it is."""


    for run_dir in args.runs:  # check before creating the output folder, so a typo leaves nothing behind
        require_run(run_dir, "run", REPORTED)
    out = RunFolder.create(args.out, "report", overwrite=args.overwrite,
                           inputs={f"run[{i}]": run_dir for i, run_dir in enumerate(args.runs)})
    html_path = report_runs(args.runs, out, title=args.title)
    print(f"report: {html_path}  (markdown: {out.path / 'report.md'}); output is in {out.path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``mcicl report``."""

    p = sub.add_parser("report", help="one self-contained HTML report (+ report.md) of saved run folders",
                       description="Read run folders (synthetic train/sweep, probe geometry/icl, compare, "
                                   "matched, demo) and write report.html with every figure embedded, the "
                                   "tables, configs and versions, plus report.md.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders to include, in order")
    p.add_argument("--title", default="mcicl report", help="report title (default: mcicl report)")
    add_run_options(p, config=False, seed=False)
    p.set_defaults(func=run)
