"""``mcicl compare``'s config and job declaration (torch-free: the command line is built from it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from mcicl.core.configuration import require
from mcicl.core.jobs import CsvTable, DemoStage, Job, ReportSection
from mcicl.core.options import doc
from mcicl.core.resampling import check_resampling, permutations_field


@dataclass
class CompareConfig:
    """The run folders to compare (synthetic and real are required), what to add (OOD map, matched world), nulls."""

    synthetic: str | None = field(default=None, metadata=doc("a `mcicl synthetic train` run folder (required)",
                                                             metavar="RUN"))
    real: str | None = field(default=None, metadata=doc("a `mcicl probe geometry` run folder (required)",
                                                        metavar="RUN"))
    icl: str | None = field(default=None, metadata=doc(
        "a `mcicl probe icl` run folder: its accuracies go beside the matched world's errors", metavar="RUN"))
    attention: str | None = field(default=None, metadata=doc(
        "a `mcicl probe attention` run folder: the real model's best heads go beside the synthetic model's "
        "correct attention (attention_compare.csv, figures/attention_compare.png)", metavar="RUN"))
    sweep: str | None = field(default=None, metadata=doc(
        "a `mcicl synthetic sweep` run over within_cosine x cross_overlap: draw the geometry-to-OOD map with the "
        "real spaces placed on it", metavar="RUN"))
    matched: bool = field(default=False, metadata=doc(
        "estimate the generator parameters from a real space's geometry and train that world"))
    matched_space: str | None = field(default=None, metadata=doc(
        "which real space the matched world copies (default: the last layer)", metavar="NAME"))
    umap: bool = field(default=True, metadata=doc(
        "draw the embedding figures with the PCA panel only (UMAP's first run compiles for ~10 s)",
        flag="--no-umap"))
    permutations: int = permutations_field(100, "label permutations per null")
    seed: int = 0

    def __post_init__(self) -> None:
        check_resampling(self)
        require(isinstance(self.seed, int) and self.seed >= 0, "seed", self.seed, "an integer >= 0")


COMPARE_JOB = Job(
    command="compare",
    help="synthetic vs real concept geometry, the OOD map, the matched world",
    description="The same statistics (within/cross-concept cosine, concept-direction |cos|, principal angles, "
                "polysemous sense cosines) with their nulls on the synthetic dictionary, sampled words, learned "
                "W_Q/W_K spaces and each real model space.",
    execute="mcicl.analysis.compare:execute",
    result="mcicl.analysis.compare:CompareResult",
    config=CompareConfig,
    fields={"inputs": ("synthetic", "real", "icl", "attention", "sweep"),
            "comparison": ("matched", "matched_space", "umap", "permutations")},
    report=ReportSection(
        title="Synthetic vs real: comparison, geometry-to-OOD map, matched world",
        text="The same statistics, computed by the same geometry engine, on every synthetic and real space.",
        csv_tables=(
            CsvTable("attention_compare.csv", "Correct attention: synthetic model vs the real model's heads",
                     "Per condition: the synthetic transformer's correct attention and the real model's top heads "
                     "(chosen on held-out episodes) and best head, with their nulls and the best head's max-T "
                     "corrected p-value."),
            CsvTable("matched.csv", "Matched world: synthetic errors beside the real model's ICL",
                     "Each row a condition: the matched synthetic model's 0-1 error and the real model's ICL "
                     "error (1 - accuracy, bootstrap 95% interval) on the matching condition."),
            CsvTable("agreement.csv", "Matched world against its controls",
                     "Per world (matched, unmatched default, deliberately mismatched; the same seeds): the mean "
                     "absolute difference of 0-1 error from the real model's ICL readouts over shared conditions, "
                     "its 95% bootstrap interval, and the matched world's value minus this one's with its interval."),
            CsvTable("estimate.csv", "Matched world: estimated generator parameters",
                     "The parameters, and the raw-cosine moments they reproduce (target: the real space)."),
            CsvTable("map_points.csv", "Real spaces placed on the geometry-to-OOD map",
                     "Each real space's estimated generator parameters and the moment-fit loss.")),
        # The side-by-side table leads, as before; the long per-cell comparison.csv stays a file.
        tables="mcicl.analysis.report:comparison_tables",
        skip=("table", "embedding_figures", "matched.conditions", "ood_map.points", "attention")),
    demo=DemoStage("comparison", "mcicl.analysis.compare:demo_stage", order=60),
)
