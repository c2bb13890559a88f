"""``mcicl probe circuits``'s config and job declaration (torch-free: the command line is built from it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from mcicl.core.configuration import require
from mcicl.core.jobs import CsvTable, Job, ReportSection
from mcicl.core.options import doc
from mcicl.core.resampling import bootstrap_field, check_resampling, permutations_field
from mcicl.probing.extract_config import ExtractionConfig
from mcicl.probing.icl.episodes import CONDITIONS, EpisodeConfig
from mcicl.probing.icl.icl_config import MODEL_FIELDS

DIRECTION_SOURCES = ("mean", "diff", "lda")


@dataclass
class CircuitsConfig:
    """Everything that defines a circuits run (recorded as config.yaml): the model, the ICL episodes (one condition,
    set in a config file; the largest of ``prompts.shots`` is measured), how concept directions are estimated, the
    role probe, the readout and the nulls."""

    RENAMED: ClassVar[dict[str, str]] = {}

    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)
    prompts: EpisodeConfig = field(default_factory=lambda: EpisodeConfig(
        shots=[4], episodes=24, conditions=["in_distribution"]))
    directions: Literal["mean", "diff", "lda"] = field(default="diff", metadata=doc(
        "how concept directions are estimated from the direction episodes' in-prompt word states (the geometry "
        "engine's concept_directions): mean, diff (one-vs-rest) or lda"))
    beta: float = field(default=20.0, metadata=doc(
        "inverse temperature of the encoders' in-prompt readout, softmax(beta * cos(query, demo)) per label"))
    role_sequences: int = field(default=16, metadata=doc("repeated random token sequences for the head-role scores"))
    role_period: int = field(default=20, metadata=doc("random tokens per half of a repeated sequence"))
    permutations: int = permutations_field(1000, "null draws (random directions, permuted concepts, rank "
                                                 "correlations)")
    bootstrap: int = bootstrap_field(1000, "episodes")
    alpha: float = 0.05  # family-wise level over heads (max-T corrected p-values)
    batch_size: int = field(default=16, metadata=doc("prompts per forward pass"))
    seed: int = 0

    def __post_init__(self) -> None:
        p = self.prompts
        require(len(p.conditions) == 1 and p.conditions[0] in CONDITIONS and not CONDITIONS[p.conditions[0]].zero_shot
                and CONDITIONS[p.conditions[0]].query != "in_context", "prompts.conditions", p.conditions,
                "one condition with demonstrations and a word query, e.g. in_distribution")
        require(all(s >= 1 for s in p.shots), "prompts.shots", p.shots,
                "numbers of demonstrations >= 1 (the largest is measured)")
        require(p.episodes >= 2, "prompts.episodes", p.episodes,
                "an integer >= 2 (the position-matched null pairs prompts of different episodes)")
        require(self.directions in DIRECTION_SOURCES, "directions", self.directions,
                "one of " + ", ".join(DIRECTION_SOURCES))
        require(isinstance(self.beta, (int, float)) and self.beta >= 0, "beta", self.beta, "a number >= 0")
        require(isinstance(self.role_sequences, int) and 1 <= self.role_sequences <= 1000, "role_sequences",
                self.role_sequences, "an integer from 1 to 1000")
        require(isinstance(self.role_period, int) and 2 <= self.role_period <= 200, "role_period", self.role_period,
                "an integer from 2 to 200")
        check_resampling(self, permutations_low=100, bootstrap_low=100)
        require(0 < self.alpha < 1, "alpha", self.alpha, "a number in (0, 1)")
        require(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", self.batch_size,
                "an integer >= 1")
        require(isinstance(self.seed, int) and self.seed >= 0, "seed", self.seed, "an integer >= 0")


CIRCUITS_JOB = Job(
    command="probe circuits",
    help="QK concept products per head from the weights, head roles, and heads' causal effects on the ICL readout",
    description="For every layer and head: the paper's concept product <W_Q mu_k, W_K mu_k> and complement product "
                "(the other concepts' directions) from the weights, with concept directions estimated on in-prompt "
                "word states of one episode set, against random directions of the same norm and permuted concept "
                "labels (max-T over heads); previous-token, duplicate-token and induction scores on repeated random "
                "token sequences; the head's same-concept attention on a disjoint episode set; and its causal "
                "effect on the ICL readout (zero- and mean-ablation, and patching its query-position output from "
                "prompts whose concepts carry another concept's label), with episode-bootstrap intervals. Writes "
                "heads.csv, summary.json and figures.",
    execute="mcicl.probing.mechanism.circuits:execute",
    result="mcicl.probing.mechanism.circuits:CircuitsResult",
    config=CircuitsConfig,
    fields={
        "model": MODEL_FIELDS,
        "ICL prompts (as in `probe icl`)": (
            "prompts.suite", "prompts.polysemy", "prompts.shots", "prompts.ways",
            "prompts.episodes", "prompts.queries_per_episode"),
        "measurement": ("directions", "beta", "role_sequences", "role_period", "permutations", "bootstrap",
                        "batch_size"),
    },
    report=ReportSection(
        title="Real model: QK concept products, head roles and causal effects per head",
        text="Per head, the paper's concept and complement products computed from W_Q and W_K with the concept "
             "directions of that layer's input, against random and permuted-concept directions; the head's role "
             "scores (previous-token, duplicate-token, induction) beside its same-concept attention; and its "
             "causal effect on the ICL readout margin (zero-ablation, mean-ablation, patching from label-rotated "
             "prompts).",
        csv_tables=(CsvTable("heads.csv", "Per head", "One row per (layer, head): products with null quantiles and "
                                                      "p-values, attention, role scores, causal effects with 95% "
                                                      "episode-bootstrap intervals."),),
        skip=("heads", "correlations", "top_causal")),
)
