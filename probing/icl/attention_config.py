"""``mcicl probe attention``'s config and job declaration (torch-free: the command line is built from it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from mcicl.core.configuration import require
from mcicl.core.jobs import DemoStage, Job, ReportSection
from mcicl.core.limits import MAX_DRAWS, require_count
from mcicl.core.options import doc
from mcicl.core.resampling import bootstrap_field, check_resampling, permutations_field
from mcicl.probing.extract_config import ExtractionConfig
from mcicl.probing.icl.episodes import CONDITIONS, RENAMED_TO_PROMPTS, EpisodeConfig
from mcicl.probing.icl.icl_config import MODEL_FIELDS

QUERY_POSITIONS = ("auto", "last", "word")
ATTENTION_CONDITIONS = ("in_distribution", "polysemous_query", "flipped_labels", "arbitrary_labels", "skewed")


@dataclass
class AttentionConfig:
    """Everything that defines an attention probe run (recorded as config.yaml); ``prompts`` as in ``probe icl``
    (with fewer shots and episodes by default). ``extraction`` says which model to load and how (model, dtype,
    device, remote code)."""

    # Files written before the prompts section (flat shots:, ...; n_permutations:, n_boot:) still load.
    RENAMED: ClassVar[dict[str, str]] = {**RENAMED_TO_PROMPTS, "n_permutations": "permutations",
                                         "n_boot": "bootstrap"}

    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)
    prompts: EpisodeConfig = field(default_factory=lambda: EpisodeConfig(
        shots=[2, 4, 8], episodes=20, conditions=list(ATTENTION_CONDITIONS)))
    query_position: Literal["auto", "last", "word"] = field(default="auto", metadata=doc(
        "where the query attends from: last (the last prompt token), word (the query word's tokens), auto: last "
        "for a causal LM, word for an encoder"))
    permutations: int = permutations_field(1000, "episode-level permutations per null")
    bootstrap: int = bootstrap_field(1000, "episodes")
    alpha: float = 0.05  # family-wise level over heads (max-T corrected p-values)
    top_k: int = field(default=3, metadata=doc(
        "heads chosen on held-out episodes for the curves and the knockout"))
    knockout_draws: int = 5  # random k-head sets knocked out for comparison (causal LMs)
    batch_size: int = field(default=16, metadata=doc("prompts per forward pass"))
    seed: int = 0

    def __post_init__(self) -> None:
        # The prompts section checks what holds for every command; the attention probe needs more of it.
        p = self.prompts
        bad = [c for c in p.conditions if c not in CONDITIONS or CONDITIONS[c].zero_shot]
        require(not bad and len(p.conditions) > 0, "prompts.conditions", bad or p.conditions,
                "a non-empty list of: " + ", ".join(c for c in CONDITIONS if not CONDITIONS[c].zero_shot)
                + " (zero_shot has no demonstrations to attend to)")
        require(all(s >= 1 for s in p.shots), "prompts.shots", p.shots,
                "a non-empty list of numbers of demonstrations >= 1, e.g. 2,4,8")
        require(p.episodes >= 2, "prompts.episodes", p.episodes,
                "an integer >= 2 (the position-matched null pairs prompts of different episodes)")
        require(isinstance(self.seed, int) and self.seed >= 0, "seed", self.seed, "an integer >= 0")
        require(self.query_position in QUERY_POSITIONS, "query_position", self.query_position,
                "one of " + ", ".join(QUERY_POSITIONS))
        check_resampling(self, permutations_low=100, bootstrap_low=100)
        require(0 < self.alpha < 1, "alpha", self.alpha, "a number in (0, 1)")
        require(self.top_k >= 1, "top_k", self.top_k, "an integer >= 1")
        require_count(self.knockout_draws, "knockout_draws", low=1, high=MAX_DRAWS)
        require(self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1")


ATTENTION_JOB = Job(
    command="probe attention",
    help="correct attention per layer and head: the query's attention on same-concept demos",
    description="On the ICL prompts of `probe icl` (same conditions, same seeds), the attention mass from the "
                "query position onto demonstrations whose concept matches the query's, divided by the mass on "
                "all demonstrations, for every layer and head; word and label tokens separately. Nulls: "
                "concepts permuted within the prompt, the same demonstration slots in prompts of other "
                "episodes, and the queries of one episode trading concepts; p-values max-T corrected over "
                "heads. For causal LMs, the top heads' attention "
                "against right answers and the accuracy after knocking them out. Writes attention.csv, "
                "prompts.csv, summary.json and figures/attention_heatmap.png, attention_top_heads.png.",
    execute="mcicl.probing.icl.attention:execute",
    result="mcicl.probing.icl.attention:AttentionResult",
    config=AttentionConfig,
    fields={
        "model": MODEL_FIELDS,
        "ICL prompts (as in `probe icl`)": (
            "prompts.suite", "prompts.polysemy", "prompts.shots", "prompts.conditions", "prompts.ways",
            "prompts.episodes", "prompts.queries_per_episode", "prompts.template.header", "prompts.template.query",
            "prompts.template.label", "prompts.template.separator"),
        "measurement": ("query_position", "permutations", "top_k", "batch_size"),
    },
    # The per-cell table of the top heads (analysis.report's _attention_cells) is built by the report, a higher
    # layer than this module, so ``tables`` is left unset.
    report=ReportSection(
        title="Real model: attention on same-concept demonstrations",
        text="The paper's correct attention weight in the real model, per layer and head: the share of the "
             "query's attention on demonstrations of its own concept, on the ICL prompts, against three nulls.",
        tables="mcicl.probing.icl.attention:report_tables", skip=("cells", "top_heads")),
    demo=DemoStage("attention on same-concept demonstrations", "mcicl.probing.icl.attention:demo_stage",
                   order=50),
)
