"""``mcicl report``'s job declaration (torch-free): run folders in, one self-contained HTML report out."""

from __future__ import annotations

from mcicl.core.jobs import DemoStage, Job, Option

REPORT_JOB = Job(
    command="report",
    help="one self-contained HTML report (+ report.md) of saved run folders",
    description="Read run folders (synthetic train/sweep, probe geometry/icl/attention/contexts, compare, demo, "
                "any registered job) and write report.html with every figure embedded, the tables, configs and "
                "versions, plus report.md. Each run's section is chosen by the command its run.json records.",
    execute="mcicl.analysis.report:execute",
    result="mcicl.analysis.report:ReportResult",
    options=(Option(("runs",), "run folders to include, in order", {"nargs": "+", "metavar": "RUN"}),
             Option(("--title",), "report title (default: mcicl report)", {"default": "mcicl report"})),
    seed=False,
    config_file=False,
    demo=DemoStage("report", "mcicl.analysis.report:demo_stage", order=70),
)
