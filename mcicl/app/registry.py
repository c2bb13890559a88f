"""The job registry: every mcicl job, in --help order. The command line, the report and the demo are made from it.

Adding a job is one line here (its :class:`~mcicl.core.jobs.Job` sits beside its config in a torch-free module;
see docs/contributing.md). Nothing listed here imports torch: a job's code is named by strings and imported
when it runs.
"""

from __future__ import annotations

from mcicl.analysis.checkpoint_sweep_config import CHECKPOINTS_JOB
from mcicl.analysis.compare_config import COMPARE_JOB
from mcicl.analysis.findings_config import FINDINGS_JOB
from mcicl.analysis.report_config import REPORT_JOB
from mcicl.app.demo_config import DEMO_JOB
from mcicl.core.jobs import Job, ReportCatalog
from mcicl.probing.contexts_config import CONTEXTS_JOB
from mcicl.probing.dictionary_config import DICTIONARY_JOB
from mcicl.probing.extract_config import EXTRACT_JOB
from mcicl.probing.geometry_config import GEOMETRY_JOB
from mcicl.probing.icl.attention_config import ATTENTION_JOB
from mcicl.probing.icl.icl_config import ICL_JOB
from mcicl.probing.mechanism.circuits_config import CIRCUITS_JOB
from mcicl.probing.mechanism.steer_config import STEER_JOB
from mcicl.probing.semcor_config import SEMCOR_JOB
from mcicl.synthetic.config import PLOT_JOB, SWEEP_JOB, TRAIN_JOB

# Command groups: the first word of a two-word command -> (help, description).
GROUPS: dict[str, tuple[str, str]] = {
    "synthetic": ("the paper's synthetic world: train the one-layer transformer, sweep, plot",
                  "Concept-based sparse-coding prompts and the one-layer transformer of Bu et al. (NeurIPS 2024): "
                  "learning dynamics and OOD in-context learning."),
    "probe": ("real pretrained models: extract vectors, concept geometry, ICL probes",
              "Probe real Hugging Face models."),
}

_JOBS: list[Job] = [
    DEMO_JOB,
    EXTRACT_JOB,
    GEOMETRY_JOB,
    CONTEXTS_JOB,
    DICTIONARY_JOB,
    SEMCOR_JOB,
    TRAIN_JOB, SWEEP_JOB, PLOT_JOB,
    ICL_JOB,
    ATTENTION_JOB,
    CIRCUITS_JOB,
    STEER_JOB,
    CHECKPOINTS_JOB,
    COMPARE_JOB,
    REPORT_JOB,
    FINDINGS_JOB,
]


def jobs() -> tuple[Job, ...]:
    """Every registered job, in --help order."""
    return tuple(_JOBS)


def register(job: Job) -> Job:
    """Add a job (a plugin's, or a test's toy job); its command must be new."""
    if any(j.command == job.command for j in _JOBS):
        raise ValueError(f"job {job.command!r} is registered already; accepted: a new command name")
    if len(job.words) > 1 and job.words[0] not in GROUPS:
        raise ValueError(f"job {job.command!r}: group {job.words[0]!r} unknown; accepted: one word, or a group of "
                         + ", ".join(GROUPS))
    _JOBS.append(job)
    return job


def unregister(command: str) -> None:
    """Remove a job added with :func:`register`."""
    _JOBS[:] = [j for j in _JOBS if j.command != command]


def job(command: str) -> Job:
    """The job of ``command`` ("probe geometry"); a KeyError naming the commands there are."""
    for j in _JOBS:
        if j.command == command:
            return j
    raise KeyError(f"no job {command!r}; accepted: " + ", ".join(j.command for j in _JOBS))


def job_for_run(command: str) -> Job | None:
    """The job whose report section reads a run that ``run.json`` says ``command`` wrote, or None."""
    for j in _JOBS:
        if command in j.reported_commands:
            return j
    return None


def report_catalog() -> ReportCatalog:
    """What the report needs of the registry: each run.json command a job reports -> the job's ReportSection, and
    -> the order of the job's demo stage (a demo folder's stage subfolders are shown in that order)."""
    sections = {command: j.report for j in _JOBS if j.report is not None for command in j.reported_commands}
    order = {command: j.demo.order for j in _JOBS if j.demo is not None for command in j.reported_commands}
    return ReportCatalog(sections=sections, demo_order=order)
