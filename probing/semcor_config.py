"""``mcicl probe semcor``'s config and job declaration (torch-free: the command line is built from it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from mcicl.core.configuration import require
from mcicl.core.jobs import CsvTable, Job, ReportSection
from mcicl.core.options import doc
from mcicl.core.resampling import bootstrap_field, check_resampling, permutations_field
from mcicl.probing.extract_config import ExtractionConfig


@dataclass
class SemcorConfig:
    """SemCor 3.0 polysemous nouns labelled by WordNet supersense: sense counts, accuracy and pair AUC per layer."""

    extraction: ExtractionConfig = field(default_factory=lambda: ExtractionConfig(batch_size=32))
    corpus: str = field(default="auto", metadata=doc(
        "SemCor 3.0 folder (brown1/brown2/brownv), tagfiles/ folder or tag file; auto: ../shared/data/semcor3.0"))
    max_files: int = field(default=0, metadata=doc("read only the first N tag files, in name order (0: all)"))
    min_per_sense: int = field(default=5, metadata=doc("occurrences each (word, supersense) needs"))
    max_per_sense: int = field(default=10, metadata=doc(
        "occurrences kept per (word, supersense), a seeded draw (the rest are counted as over_cap)"))
    wic: str = field(default="", metadata=doc(
        "also measure WiC pairs (label 'wic' in pair_auc.csv): a SuperGLUE WiC .jsonl, or a WiC *.data.txt with its "
        "*.gold.txt beside it"))
    random_baseline: bool = field(default=True, metadata=doc(
        "also measure the same architecture with random weights (seeded init) as a baseline",
        flag="--no-random-baseline"))
    permutations: int = permutations_field(200, "within-word sense shuffles for the accuracy null")
    bootstrap: int = bootstrap_field(1000, "clusters of words; accuracy and pair AUC")
    seed: int = 0

    def __post_init__(self) -> None:
        require(isinstance(self.corpus, str) and bool(self.corpus.strip()), "corpus", self.corpus,
                "'auto' or a SemCor 3.0 folder or tag file")
        require(isinstance(self.wic, str), "wic", self.wic, "'' or a WiC .jsonl / *.data.txt file")
        check_resampling(self)
        for name, low in (("max_files", 0), ("min_per_sense", 1), ("max_per_sense", 1), ("seed", 0)):
            value = getattr(self, name)
            require(isinstance(value, int) and value >= low, name, value, f"an integer >= {low}")
        require(self.max_per_sense >= self.min_per_sense, "max_per_sense", self.max_per_sense,
                f"an integer >= min_per_sense ({self.min_per_sense})")


SEMCOR_JOB = Job(
    command="probe semcor",
    help="SemCor 3.0 polysemous nouns by WordNet supersense: sense counts, accuracy and WiC-style pair AUC",
    description="Read SemCor 3.0 (real, sense-tagged Brown Corpus text), label each polysemous noun's "
                "occurrences by the supersense of its tagged sense, and measure per layer: supersense accuracy in "
                "and out of context, and the AUC of the contextual cosine for same- vs different-supersense (and "
                "synset) pairs of one word, against the same architecture with random weights.",
    execute="mcicl.probing.semcor_job:execute",
    result="mcicl.probing.semcor_job:SemcorResult",
    config=SemcorConfig,
    fields={
        "model": ("extraction.model", "extraction.revision", "extraction.dtype", "extraction.device"),
        "what to measure": ("corpus", "max_files", "min_per_sense", "max_per_sense", "wic", "random_baseline",
                            "extraction.layers",
                            "extraction.batch_size", "extraction.cache_dir"),
        "statistics": ("permutations", "bootstrap"),
    },
    report=ReportSection(
        title="Real text: SemCor supersenses",
        text="Polysemous nouns in SemCor 3.0, each occurrence labelled by its tagged sense's WordNet supersense: "
             "how skewed the senses are in text, whether the contextual vector finds the supersense, and whether "
             "two occurrences of a word are more alike when they share a supersense (pair AUC, cluster bootstrap "
             "over words), beside the same architecture with random weights.",
        csv_tables=(CsvTable("pair_auc.csv", "Pair AUC per layer",
                             "Pooled AUC of the cosine of same- vs different-label pairs of one word's occurrences, "
                             "95% cluster-bootstrap interval over words; trained and random weights."),
                    CsvTable("sense_accuracy.csv", "Supersense accuracy per layer",
                             "In context and out of context (the word alone), polysemous words and monosemous "
                             "controls, 95% bootstrap interval over words."),
                    CsvTable("sense_counts.csv", "Occurrences per word and supersense",
                             "Found in the corpus (before the cap) and kept."))),
)
