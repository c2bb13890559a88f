"""``mcicl probe checkpoints``'s config and job declaration (torch-free: the command line is built from it).

The same ICL probe (``probe icl``'s :class:`~mcicl.probing.icl.icl_config.IclConfig`, its ``icl:`` section) is run
on each training checkpoint of one model: Hub revisions of ``--model`` (Pythia's ``step1000`` branches) or local
checkpoint folders; the ICL error over training steps is then fitted with the synthetic world's convergence
statistics (:mod:`mcicl.synthetic.convergence`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mcicl.core.configuration import require
from mcicl.core.jobs import CsvTable, Job, Option, ReportSection
from mcicl.core.options import doc
from mcicl.probing.extract_config import ExtractionConfig
from mcicl.probing.icl.episodes import EpisodeConfig
from mcicl.probing.icl.icl_config import TEMPLATE_FIELDS, IclConfig

DEFAULT_ERROR_LEVELS = (0.4, 0.25, 0.1)
CONVENTIONS = ("acc", "acc_norm", "acc_calibrated")  # probing.icl.scoring's, named here without torch


def _default_icl() -> IclConfig:
    """The sweep's ICL probe: the LM readout's default cells, fewer shots, no per-checkpoint baselines (the step-0
    checkpoint, when swept, is the untrained reference of every other)."""
    return IclConfig(extraction=ExtractionConfig(layers="last"),
                     prompts=EpisodeConfig(shots=[0, 1, 4, 8], episodes=25), baselines=[])


@dataclass
class CheckpointsConfig:
    """The checkpoints to sweep, how their steps are known, the error levels whose crossing is reported, and the
    ICL probe run on each (``icl:``; its model is the Hub repository the revisions belong to)."""

    checkpoints: list[str] = field(default_factory=list, metadata=doc(
        "the checkpoints, in any order: revisions (branches, tags, commits) of the Hub --model, such as "
        "step1000,step143000, or local checkpoint folders (save_pretrained); or one text file listing them, one "
        "per line (# comments) (default: none; required)", metavar="A,B,..."))
    steps: list[int] = field(default_factory=list, metadata=doc(
        "the training step of each checkpoint, in the order given (default: the last number in each name: "
        "step_1000, step1000, checkpoint-1000)"))
    convention: Literal["acc", "acc_norm", "acc_calibrated"] = field(default="acc", metadata=doc(
        "which accuracy the rows, the fit and the figure use: acc (the readout's own; every readout), or, for the "
        "lm readout, acc_norm (per character of the label) or acc_calibrated (minus the label's log-prob after an "
        "empty context); cells.csv has all three either way"))
    error_levels: list[float] = field(default_factory=lambda: list(DEFAULT_ERROR_LEVELS), metadata=doc(
        "ICL error levels: the first step each (condition, shots) curve reaches each one is reported, "
        "interpolated in log error between checkpoints"))
    icl: IclConfig = field(default_factory=_default_icl)
    seed: int = 0  # the probe's seed (icl.seed follows it): every checkpoint is probed on the same prompts

    def __post_init__(self) -> None:
        require(all(isinstance(c, str) and c.strip() for c in self.checkpoints), "checkpoints", self.checkpoints,
                "non-empty revisions or folders")
        require(all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in self.steps), "steps",
                self.steps, "integers >= 0, one per checkpoint")
        require(bool(self.error_levels) and all(0 < e < 1 for e in self.error_levels), "error_levels",
                self.error_levels, "a non-empty list of error fractions in (0, 1)")
        require(self.convention in CONVENTIONS, "convention", self.convention, "one of " + ", ".join(CONVENTIONS))
        require(isinstance(self.seed, int) and self.seed >= 0, "seed", self.seed, "an integer >= 0")
        require(self.icl.seed in (0, self.seed), "icl.seed", self.icl.seed,
                f"the sweep's --seed ({self.seed}) or unset: the sweep's seed is the probe's")
        self.icl.seed = self.seed
        require(self.icl.extraction.revision is None, "icl.extraction.revision", self.icl.extraction.revision,
                "none: the sweep sets each checkpoint's revision from --checkpoints")


CHECKPOINTS_JOB = Job(
    command="probe checkpoints",
    help="the ICL probe over training checkpoints (Hub revisions or folders), its error fitted over steps",
    description="Run the same ICL probe (probe icl: same prompts, same readout) on each training checkpoint of one "
                "model: Hub revisions of --model (--checkpoints step1000,step2000,...) or local checkpoint folders "
                "(--checkpoints run/step_0,run/step_100,...). Writes one row per checkpoint (checkpoints.csv: step, "
                "accuracy per condition and shots with cluster-bootstrap intervals), the long table cells.csv, the "
                "ICL error over steps fitted per cell with the synthetic convergence fit (binomial and "
                "quasi-binomial GLM, exponential vs power law; convergence.csv) and figures/accuracy_vs_step.png. "
                "Each checkpoint's probe is kept in checkpoints/step_<N>/; --resume keeps finished ones.",
    execute="mcicl.analysis.checkpoint_sweep:execute",
    result="mcicl.analysis.checkpoint_sweep:CheckpointSweepResult",
    config=CheckpointsConfig,
    fields={
        "checkpoints": ("checkpoints", "steps", "convention", "error_levels"),
        "model": ("icl.extraction.model", "icl.extraction.dtype", "icl.extraction.device",
                  "icl.extraction.trust_remote_code"),
        "ICL task": ("icl.prompts.suite", "icl.prompts.polysemy", "icl.readout", "icl.prompts.shots",
                     "icl.prompts.conditions", "icl.prompts.ways", "icl.prompts.episodes",
                     "icl.prompts.queries_per_episode", "icl.bootstrap",
                     *(f"icl.{path}" for path in TEMPLATE_FIELDS)),
        "causal-LM scoring": ("icl.scoring", "icl.batch_size"),
    },
    options=(Option(("--resume",), "continue the sweep in --out: checkpoints already probed there (same settings) "
                                   "are kept, the others are probed", {"action": "store_true"}),),
    report=ReportSection(
        title="Real model: ICL over training checkpoints",
        text="The same ICL probe on each training checkpoint; the ICL error over steps fitted with the synthetic "
             "world's convergence statistics (binomial GLM on error counts, exponential against power law).",
        csv_tables=(
            CsvTable("checkpoints.csv", "ICL accuracy per checkpoint",
                     "One row per checkpoint, in step order: accuracy per condition and shots (column "
                     "condition@shots) with its 95% cluster-bootstrap interval; which weights (random init, "
                     "tiny-trained, pretrained checkpoint)."),
            CsvTable("convergence.csv", "ICL error over training steps, fitted",
                     "Per condition and shots: the binomial GLM of error counts over checkpoints with step > 0 "
                     "(synthetic.convergence.fit_tail over the whole curve): rate of logit(error) per step with "
                     "binomial and quasi-binomial standard errors, Pearson dispersion, power-law exponent, "
                     "exponential vs power law by QAIC, and the steps where the error first crosses each level.")),
        skip=("checkpoints", "convergence", "crossing")),
)
