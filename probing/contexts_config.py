"""``mcicl probe contexts``'s config and job declaration (torch-free: the command line is built from it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mcicl.core.configuration import require
from mcicl.core.jobs import CsvTable, DemoStage, Job, ReportSection
from mcicl.core.options import doc
from mcicl.core.resampling import bootstrap_field, check_resampling, permutations_field
from mcicl.probing.extract_config import ExtractionConfig

BASELINES = ("neutral", "alone")
# Frames the out-of-context baseline draws from (one at random per context, seeded): no sense cue in any of them.
NEUTRAL_FRAMES = ("{word}", "This is {word}.", "Here is the word {word}.", "They said {word}.", "Think of {word}.",
                  "{word} again.", "The next word is {word}.", "I wrote down {word}.")
CONTEXT_SOURCES = ("'builtin', 'wordnet' (WordNet example sentences; needs a WordNet concept set), 'semcor:PATH' "
                   "(SemCor 3.0 sense-tagged text), 'dataset:PATH' (a datasets save_to_disk folder or "
                   "parquet/csv/json file), 'hf:NAME[:CONFIG][@SPLIT]' (the Hub), or a .json/.csv file")


@dataclass
class ContextsConfig:
    """What to measure: the extraction (model, layers, pooling, batching, ...), contexts source, concept set,
    nulls."""

    # Sentences are longer than words alone: smaller batches than a word extraction's 64.
    extraction: ExtractionConfig = field(default_factory=lambda: ExtractionConfig(batch_size=32))
    contexts: str = field(default="builtin", metadata=doc(
        "builtin | wordnet (WordNet example sentences; with --concepts wordnet) | semcor:PATH (SemCor 3.0) | "
        "dataset:PATH | hf:NAME[:CONFIG][@SPLIT] (datasets) | FILE (.csv with "
        "word,sense,context or .json {word: {sense: [sentences]}})"))
    concepts: str = field(default="builtin", metadata=doc(
        "builtin | wordnet | supersenses | dataset:PATH | hf:NAME[:CONFIG][@SPLIT] | FILE (.json or .csv)"))
    columns: str = field(default="", metadata=doc(
        "dataset inputs: ROLE=COLUMN,... naming the columns for the roles word, sense, context, start, source "
        "(default: columns named after the roles)"))
    store: str | None = field(default=None, metadata=doc(
        "an activation store folder: the contextual vectors (one pooled row per context, per layer) are written to "
        "it (resumed when it exists; a store of another model, config or contexts is refused) and measured a shard "
        "at a time, never a whole layer in memory (the run folder then names the store instead of copying the "
        "vectors)", metavar="DIR"))
    vectors_dataset: bool = field(default=False, metadata=doc(
        "also write the contextual vectors as a datasets Arrow dataset (vectors/dataset, save_to_disk; with --store "
        "this reads every layer whole)"))
    center: bool = field(default=True, metadata=doc(
        "raw cosines (default: centroids and out-of-context vectors centred on the concept-word mean, contextual "
        "vectors on the contexts' mean)", flag="--no-center"))
    min_per_sense: int = field(default=3, metadata=doc(
        "contexts each (word, sense) needs (default: 3; WordNet senses with fewer are dropped)"))
    permutations: int = permutations_field(1000, "within-word sense shuffles for the null")
    bootstrap: int = bootstrap_field(1000, "words")
    baseline: Literal["neutral", "alone"] = field(default="neutral", metadata=doc(
        "the out-of-context vector: neutral (the word in a neutral frame drawn at random per context, so the "
        "baseline varies across a word's contexts) or alone (the word by itself: one vector per word)"))
    seed: int = 0

    def __post_init__(self) -> None:
        require(isinstance(self.seed, int) and self.seed >= 0, "seed", self.seed, "an integer >= 0")
        require(isinstance(self.contexts, str) and bool(self.contexts.strip()), "contexts", self.contexts,
                CONTEXT_SOURCES)
        require(isinstance(self.min_per_sense, int) and self.min_per_sense >= 1, "min_per_sense",
                self.min_per_sense, "an integer >= 1")
        require(self.store is None or (isinstance(self.store, str) and bool(self.store.strip())), "store",
                self.store, "a folder path, or none")
        check_resampling(self)
        require(self.baseline in BASELINES, "baseline", self.baseline, "one of " + ", ".join(BASELINES))


CONTEXTS_JOB = Job(
    command="probe contexts",
    help="polysemous words inside sense-tagged sentences: sense accuracy, shift, pair AUC per layer",
    description="Read each polysemous word's hidden state at its occurrence in sense-tagged sentences and "
                "measure, per layer, whether it is nearer its tagged sense's concept centroid than its other "
                "senses' (vs the word out of context), how far the context moves it, and whether same-sense "
                "contexts are more alike than different-sense ones; nulls shuffle senses within each word.",
    execute="mcicl.probing.contextual:execute",
    result="mcicl.probing.contextual:ContextsResult",
    config=ContextsConfig,
    fields={
        "model": ("extraction.model", "extraction.revision", "extraction.dtype", "extraction.device",
                  "extraction.trust_remote_code"),
        "what to measure": ("contexts", "concepts", "columns", "store", "vectors_dataset", "extraction.layers",
                            "extraction.pooling", "min_per_sense",
                            "center", "baseline", "extraction.batch_size", "extraction.cache_dir"),
        "statistics": ("permutations", "bootstrap"),
    },
    report=ReportSection(
        title="Real model: polysemous words in context",
        text="Polysemous words read inside sense-tagged sentences: per layer, whether the hidden state moves "
             "toward the tagged sense's concept centroid, against the same word out of context and a null "
             "with senses shuffled within each word. Best-layer numbers are corrected for choosing the layer.",
        csv_tables=(CsvTable("context_layers.csv", "Contextual statistics per layer",
                             "Each statistic per layer and group (polysemous words, monosemous controls) with its "
                             "null band (senses shuffled within words), bootstrap 95% interval over words and "
                             "p-value."),),
        skip=("per_layer",)),
    demo=DemoStage("polysemous words in context", "mcicl.probing.contextual:demo_stage", order=30),
)
