"""``mcicl probe dictionary``'s config and job declaration (torch-free: the command line is built from it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mcicl.core.configuration import ConfigError, names_or_none, require
from mcicl.core.jobs import CsvTable, Job, ReportSection
from mcicl.core.limits import require_count
from mcicl.core.options import doc
from mcicl.core.resampling import bootstrap_field, check_resampling, permutations_field
from mcicl.probing.extract_config import ExtractionConfig

MAX_ATOMS = 4096
BASELINES = ("random_weights", "random_blocks")  # models whose own dictionaries are nulls (as probe geometry)
SOLVERS = ("mod", "sae")


def parse_grid(text: str, field_name: str, low: int = 1, high: int = MAX_ATOMS) -> list[int]:
    """'16,32,64' -> [16, 32, 64]; a non-integer, a value out of range or an empty grid is a ConfigError."""
    accepted = f"comma-separated integers from {low} to {high}, e.g. '16,32,64'"
    try:
        values = [int(p) for p in str(text).split(",") if p.strip()]
    except ValueError:
        raise ConfigError(field_name, text, accepted) from None
    require(bool(values) and all(low <= v <= high for v in values), field_name, text, accepted)
    require(len(set(values)) == len(values), field_name, text, "each value once")
    return sorted(values)


@dataclass
class DictionaryConfig:
    """What to fit and how: the vectors (a model's layers or a saved file), the candidate sizes, the nulls."""

    extraction: ExtractionConfig = field(default_factory=lambda: ExtractionConfig(layers="0,-1"))
    vectors: str | None = field(default=None, metadata=doc(
        "fit a saved LabelledVectors file instead of a model (e.g. synthetic features.npz)", metavar="FILE.npz"))
    store: str | None = field(default=None, metadata=doc(
        "an activation store folder: the concept words are extracted into it (resumed; another model's store is "
        "refused) and fitted from it when its rows fit in memory", metavar="DIR"))
    truth: str | None = field(default=None, metadata=doc(
        "a known dictionary to recover (LabelledVectors .npz, e.g. a synthetic run's dictionary.npz): matched "
        "cosines and the Amari distance are reported", metavar="FILE.npz"))
    concepts: str = field(default="builtin", metadata=doc("builtin | wordnet | FILE (.json or .csv)"))
    polysemy: str | None = field(default=None, metadata=doc(
        'JSON {"word": ["concept_a", "concept_b"]} merged over the set\'s own polysemy inventory', metavar="FILE"))
    atoms: str = field(default="auto", metadata=doc(
        "candidate numbers of atoms, e.g. '16,32,64' ('auto': 1, 2 and 4 times the number of concepts)"))
    nonzeros: str = field(default="1,2,3", metadata=doc("candidate atoms per word (OMP sparsity), e.g. '1,2,3'"))
    iterations: int = field(default=30, metadata=doc("dictionary-learning iterations at most (per sparsity with "
                                                      "mod; epochs / 10 with sae)"))
    solver: Literal["mod", "sae"] = field(default="mod", metadata=doc(
        "mod: OMP codes and least-squares atoms, sparsity continuation, 3 starts (sizes of thousands of words); "
        "sae: a top-k sparse autoencoder in torch (sets too large for mod)"))
    center: bool = field(default=False, metadata=doc(
        "subtract the words' mean before fitting (off: the paper's model x = sum of features + noise has no mean "
        "term, and centring makes planted sparse words dense)", flag="--center"))
    baselines: list[str] = field(default_factory=lambda: list(BASELINES), metadata=doc(
        "baseline models whose own dictionaries are a null for atoms against concepts: random_weights (same "
        "architecture and tokenizer, re-initialised with --seed), random_blocks (trained embeddings through "
        "re-initialised blocks); 'none' for no baselines", metavar="LIST"))
    world: bool = field(default=False, metadata=doc(
        "also build the synthetic world from the last layer's fitted code (its generative parameters read off the "
        "atoms and codes of half the words) and compare it with the moment-matched world on the other half "
        "(worlds.csv; summary 'fitted_world')", flag="--world"))
    permutations: int = permutations_field(200, "label permutations and random rotations of the dictionary, "
                                                "per null")
    bootstrap: int = bootstrap_field(1000, "words")
    seed: int = 0

    def __post_init__(self) -> None:
        self.baselines = names_or_none(self.baselines, "baselines", BASELINES)
        require(self.solver in SOLVERS, "solver", self.solver, " or ".join(SOLVERS))
        if self.atoms != "auto":
            parse_grid(self.atoms, "atoms")
        parse_grid(self.nonzeros, "nonzeros", high=64)
        require_count(self.iterations, "iterations", low=1, high=1000)
        check_resampling(self)
        require(isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0, "seed",
                self.seed, "an integer >= 0")


DICTIONARY_JOB = Job(
    command="probe dictionary",
    help="the paper's sparse-coding model fitted to vectors: learned atoms against concepts, polysemous codes",
    description="Learn a sparse dictionary (OMP codes, least-squares atoms) on a model's word vectors per layer or "
                "on a saved vectors .npz, its size chosen on held-out reconstruction error; compare the atoms with "
                "the concept directions against randomly rotated dictionaries; ask whether polysemous words' codes "
                "load on atoms of their senses; with --truth, measure recovery of a known dictionary.",
    execute="mcicl.analysis.fitted_world:execute",  # probing's execute, plus --world (layer 3)
    result="mcicl.probing.dictionary:DictionaryResult",
    config=DictionaryConfig,
    fields={
        "model": ("extraction.model", "extraction.revision", "extraction.dtype", "extraction.device",
                  "extraction.trust_remote_code"),
        "what to fit": ("vectors", "store", "truth", "concepts", "polysemy", "extraction.space", "extraction.layers",
                        "extraction.pooling", "extraction.template", "extraction.batch_size",
                        "extraction.cache_dir"),
        "fit and nulls": ("atoms", "nonzeros", "solver", "center", "iterations", "baselines", "permutations",
                          "bootstrap", "world"),
    },
    report=ReportSection(
        title="Sparse dictionary of the word vectors",
        text="Atoms learned without labels, compared with the concept directions against randomly rotated "
             "dictionaries of the same spectrum; polysemous words' codes against monosemous controls and chance.",
        csv_tables=(CsvTable("layers.csv", "Per layer", "Chosen size, held-out error, atoms vs concepts with "
                                                          "their rotation null, purity, sense recall."),
                    CsvTable("sizes.csv", "Held-out reconstruction error per size",
                             "Relative error on the held-out 25% of words; the chosen size is marked.")),
        skip=("per_layer",)),
)
