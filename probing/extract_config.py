"""What an extraction reads and how (torch-free): :class:`ExtractionConfig`, layer specs, word templates.

Every probe nests an ``ExtractionConfig`` (its ``extraction:`` section); the command line offers its fields as
options (``--model``, ``--layers``, ...), generated from the field docs below. ``mcicl probe extract``'s own config
(:class:`ExtractConfig`) and job declaration (:data:`EXTRACT_JOB`) are here too.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from mcicl.core.configuration import ConfigError, require
from mcicl.core.jobs import CsvTable, Job, ReportSection
from mcicl.core.options import doc
from mcicl.probing.templates import WORD_SLOT, check_template

SPACES = ("hidden", "input", "unembed")
POOLINGS = ("mean", "last")
DTYPES = ("float32", "float16", "bfloat16")
PADDING_SIDES = ("auto", "left", "right")
POOLING_RULE = ("{pooling} over the tokens whose character offsets (fast tokenizer offset_mapping) overlap the "
                "word inside its template (slow tokenizers: the tokens the text shares with the text cut after the "
                "word and not with the text cut before it); template, special and lone space tokens excluded")
LAYERS_ACCEPTED = "'all', 'last', or layer indices such as '0,3,-1' (0 = embedding output, -1 = last layer)"


def parse_layers(spec: str | Sequence[int]) -> str | list[int]:
    """'all', 'last', or a list of layer indices, from a layers spec (a string such as '0,3,-1' or a list)."""
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text in ("all", "last"):
            return text
        parts = [p.strip() for p in text.split(",") if p.strip()]
        try:
            out = [int(p) for p in parts]
        except ValueError:
            raise ConfigError("layers", spec, LAYERS_ACCEPTED) from None
    elif isinstance(spec, Iterable):
        out = list(spec)
        require(all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in out), "layers", spec,
                LAYERS_ACCEPTED)
        out = [int(i) for i in out]
    else:
        raise ConfigError("layers", spec, LAYERS_ACCEPTED)
    require(len(out) > 0, "layers", spec, LAYERS_ACCEPTED)
    return out


def resolve_layers(spec: str | Sequence[int], n_layers: int) -> list[int]:
    """Hidden-state indices 0..n_layers (0 = embedding output) named by ``spec``, in order, no repeats."""
    parsed = parse_layers(spec)
    if parsed == "all":
        return list(range(n_layers + 1))
    if parsed == "last":
        return [n_layers]
    out = []
    for i in parsed:
        require(-(n_layers + 1) <= i <= n_layers, "layers", spec,
                f"indices from 0 to {n_layers} (or -1 to -{n_layers + 1}); this model has {n_layers} layers "
                "and hidden state 0 is the embedding output")
        out.append(i % (n_layers + 1))
    return list(dict.fromkeys(out))


@dataclass
class ExtractionConfig:
    """What to extract and how: model, space, layers, template, pooling, batching, dtype, device, cache."""

    model: str = field(default="default", metadata=doc(
        "'default' (the embedded all-MiniLM-L6-v2), a local model folder, or a Hugging Face Hub id such as "
        "EleutherAI/pythia-160m"))
    revision: str | None = field(default=None, metadata=doc(
        "Hub models: the branch, tag or commit to load (e.g. Pythia's training checkpoint step143000); config, "
        "weights and tokenizer all come from it, and it is part of the cache key (none: the default branch; "
        "refused with 'default' or a local folder)", metavar="REV"))
    space: Literal["hidden", "input", "unembed"] = field(default="hidden", metadata=doc(
        "hidden states of every layer, input-embedding rows, or unembedding rows"))
    layers: str | list[int] = field(default="all", metadata=doc(
        "'all', 'last' or a comma list such as 0,3,-1 (0 = embedding output)"))
    template: str = field(default=WORD_SLOT, metadata=doc("context template with {word}, e.g. 'A {word}.'"))
    pooling: Literal["mean", "last"] = field(default="mean", metadata=doc("multi-token words: mean or last token"))
    batch_size: int | str = field(default=64, metadata=doc(
        "words per forward pass, or 'auto' (the largest that fits: halved on out-of-memory, then kept)"))
    dtype: Literal["float32", "float16", "bfloat16"] = field(default="float32", metadata=doc("weights dtype"))
    device: str = field(default="auto", metadata=doc(
        "'auto' (cuda, then mps, then cpu), 'cpu', 'cuda', 'cuda:1', 'mps', or 'balanced' for device_map='auto' "
        "across GPUs for models larger than one"))
    trust_remote_code: bool = field(default=False, metadata=doc(
        "allow model repositories to run their own code (off unless you ask)"))
    cache_dir: str | None = field(default=None, metadata=doc("extraction cache folder (none: no cache)"))

    def __post_init__(self) -> None:
        require(isinstance(self.model, str) and bool(self.model.strip()), "model", self.model,
                "'default', a local model folder, or a Hub id")
        require(self.revision is None or (isinstance(self.revision, str) and bool(self.revision.strip())
                                          and not any(c.isspace() for c in self.revision)),
                "revision", self.revision, "a Hub branch, tag or commit such as step143000, or none")
        require(self.space in SPACES, "space", self.space, "one of " + ", ".join(SPACES))
        require(self.pooling in POOLINGS, "pooling", self.pooling, "one of " + ", ".join(POOLINGS))
        require(self.batch_size == "auto" or (isinstance(self.batch_size, int) and not isinstance(self.batch_size, bool)
                                              and self.batch_size >= 1), "batch_size", self.batch_size,
                "an integer >= 1 or 'auto'")
        require(self.dtype in DTYPES, "dtype", self.dtype, "one of " + ", ".join(DTYPES))
        require(isinstance(self.device, str) and bool(self.device.strip()), "device", self.device,
                "'auto', 'cpu', 'cuda', 'cuda:N', 'mps' or 'balanced'")
        check_template(self.template, example="A {word}.")
        parse_layers(self.layers)


def refuse_ignored(sources: dict[str, str], space: str, *, prefix: str = "extraction.") -> None:
    """Options the user set that this space would ignore are an error, not silence: layers belong to hidden
    states only (``--layers 99 --space input`` used to pass without a word)."""
    path = prefix + "layers"
    if space != "hidden" and path in sources:
        raise ValueError(f"--layers (from {sources[path]}) is set, but --space {space} has no layers; accepted: "
                         "--layers only with --space hidden")


@dataclass
class ExtractConfig:
    """``mcicl probe extract``'s config: the extraction and where the words come from (a words file, or a concept
    set with an optional polysemy file)."""

    # Before the command was a job its config file was flat (model, layers, ... beside words); those keys still
    # load, moved into the extraction section with a deprecation warning.
    RENAMED: ClassVar[dict[str, str]] = {name: f"extraction.{name}" for name in (
        "model", "space", "layers", "template", "pooling", "batch_size", "dtype", "device", "trust_remote_code",
        "cache_dir")}

    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)
    words: str | None = field(default=None, metadata=doc("text file, one word per line", metavar="FILE"))
    concepts: str | None = field(default=None, metadata=doc(
        "a concept set: 'builtin', 'wordnet', or a JSON/CSV file (labels come from it)", metavar="SPEC"))
    polysemy: str | None = field(default=None, metadata=doc(
        'with --concepts: JSON {"word": ["concept_a", "concept_b"]} of polysemous words, merged over the set\'s '
        "own inventory (polysemous words are extracted too)", metavar="FILE"))


EXTRACT_JOB = Job(
    command="probe extract",
    help="save word vectors of a model, per layer (npz + words + labels)",
    description="Extract pooled word vectors from a Hugging Face model: input-embedding rows, unembedding rows "
                "(models with an LM head) or hidden states of every layer, for each word alone or in a "
                "template. Words the tokenizer cannot represent, empty lines and duplicates are reported in "
                "summary.json.",
    execute="mcicl.probing.extraction_job:execute",
    result="mcicl.probing.extract:Extraction",
    config=ExtractConfig,
    fields={
        "words": ("words", "concepts", "polysemy"),
        "extraction": ("extraction.space", "extraction.layers", "extraction.template", "extraction.pooling",
                       "extraction.batch_size", "extraction.cache_dir"),
        "model": ("extraction.model", "extraction.revision", "extraction.dtype", "extraction.device",
                  "extraction.trust_remote_code"),
    },
    seed=False,  # extraction is deterministic: no --seed
    report=ReportSection(
        title="Real model: extracted word vectors",
        text="Word vectors pooled from a model's own tokens of each word, per layer, saved for other tools; the "
             "words left out (empty, unrepresentable, duplicates) are in the headline numbers.",
        csv_tables=(CsvTable("layers.csv", "Vectors per layer",
                             "Mean vector norm and anisotropy (mean cosine between distinct words; 0 = isotropic) "
                             "per layer."),),
        skip=("report", "vector_files", "polysemy", "controls", "pooling_rule")),
)
