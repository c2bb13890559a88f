"""``mcicl probe geometry``'s config and job declaration (torch-free: the command line is built from it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mcicl.core.configuration import names_or_none, require
from mcicl.core.jobs import CsvTable, DemoStage, Job, ReportSection
from mcicl.core.limits import MAX_DRAWS, require_count
from mcicl.core.options import doc
from mcicl.core.resampling import bootstrap_field, check_resampling, permutations_field
from mcicl.probing.extract_config import ExtractionConfig

WHITEN = ("none", "vocab", "unembed")
SIGNS = ("align", "ignore", "split")
BASELINES = ("random_weights", "embeddings", "random_blocks")


@dataclass
class GeometryConfig:
    """What to measure and how: the extraction (model, space, layers, ...) or saved vectors, concept set,
    whitening, nulls."""

    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)
    vectors: str | None = field(default=None, metadata=doc(
        "measure a saved LabelledVectors file instead of a model (e.g. synthetic features.npz; a sibling "
        "FILE.polysemy.npz is used for polysemy)", metavar="FILE.npz"))
    store: str | None = field(default=None, metadata=doc(
        "an activation store folder: the concept words are extracted into it (resumed when it exists; a store of "
        "another model or config is refused) and measured from it shard by shard; with nulls when its rows fit in "
        "memory, streamed statistics only when not", metavar="DIR"))
    concepts: str = field(default="builtin", metadata=doc("builtin | wordnet | FILE (.json or .csv)"))
    polysemy: str | None = field(default=None, metadata=doc(
        'JSON {"word": ["concept_a", "concept_b"]} merged over the set\'s own polysemy inventory', metavar="FILE"))
    whiten: Literal["none", "vocab", "unembed"] = field(default="none", metadata=doc(
        "inner product: none (centred), vocab (covariance of a vocabulary sample in the same space), unembed "
        "(covariance of the unembedding rows, Park et al.)"))
    whiten_sample: int = field(default=2000, metadata=doc("vocabulary words for --whiten vocab on hidden layers"))
    center: bool = field(default=True, metadata=doc("do not subtract the mean vector (raw cosines)",
                                                     flag="--no-center"))
    signs: Literal["align", "ignore", "split"] = field(default="align", metadata=doc(
        "saved vectors with signs (synthetic): align +/- words, ignore signs, or split each concept into "
        "concept+ and concept-"))
    permutations: int = permutations_field(200, "label permutations per statistic")
    bootstrap: int = bootstrap_field(1000, "concepts")
    shuffles: int = field(default=20, metadata=doc("shuffled-embedding null draws"))
    probes: bool = field(default=True, metadata=doc("skip the per-layer logistic-regression probes",
                                                    flag="--no-probes"))
    baselines: list[str] = field(default_factory=lambda: list(BASELINES), metadata=doc(
        "baselines measured beside every layer, reported as trained minus baseline with a concept-bootstrap "
        "interval: random_weights (same architecture and tokenizer, re-initialised, seeded), embeddings (the "
        "input embedding rows alone), random_blocks (trained embeddings through re-initialised blocks); 'none' "
        "for no baselines", metavar="LIST"))
    frequency_list: str | None = field(default=None, metadata=doc(
        "words in frequency order, one per line (first field; a GloVe .txt works): the matched null then also "
        "matches frequency-rank quartiles, beside token counts", metavar="FILE"))
    seed: int = 0

    def __post_init__(self) -> None:
        self.baselines = names_or_none(self.baselines, "baselines", BASELINES)
        require(self.whiten in WHITEN, "whiten", self.whiten, "one of " + ", ".join(WHITEN))
        require(self.signs in SIGNS, "signs", self.signs, "one of " + ", ".join(SIGNS))
        check_resampling(self)
        require_count(self.shuffles, "shuffles", low=0, high=MAX_DRAWS)
        require(isinstance(self.whiten_sample, int) and self.whiten_sample >= 2, "whiten_sample",
                self.whiten_sample, "an integer >= 2")
        require(isinstance(self.seed, int) and self.seed >= 0, "seed", self.seed, "an integer >= 0")


MODEL_FIELDS = ("extraction.model", "extraction.revision", "extraction.dtype", "extraction.device",
                "extraction.trust_remote_code")

GEOMETRY_JOB = Job(
    command="probe geometry",
    help="concept geometry per layer with nulls: within/cross cosines, directions, polysemy",
    description="Measure whether words of one concept are correlated and concepts near-orthogonal, per layer of a "
                "model (or on a saved vectors .npz such as synthetic features.npz), with permutation and "
                "shuffled-embedding nulls, bootstrap CIs, probes and polysemy.",
    execute="mcicl.probing.geometry:execute",
    result="mcicl.probing.geometry:GeometryResult",
    config=GeometryConfig,
    fields={
        "model": MODEL_FIELDS,
        "what to measure": ("vectors", "store", "concepts", "polysemy", "extraction.space", "extraction.layers",
                            "extraction.pooling", "extraction.template", "extraction.batch_size",
                            "extraction.cache_dir"),
        "statistics": ("whiten", "whiten_sample", "center", "signs", "permutations", "bootstrap", "shuffles",
                       "probes", "baselines", "frequency_list"),
    },
    report=ReportSection(
        title="Real model: concept geometry",
        text="The real model's concept geometry, measured by the geometry engine with permutation nulls.",
        csv_tables=(CsvTable("layers.csv", "Statistics per layer", "Every statistic with its null, CI and p-value."),
                    CsvTable("polysemy.csv", "Polysemous words",
                             "Cosine with each sense centroid against the null.")),
        skip=("per_layer",)),
    demo=DemoStage("real geometry", "mcicl.probing.geometry:demo_stage", order=20),
)
