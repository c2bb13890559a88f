"""``mcicl probe steer``'s config and job declaration (torch-free: the command line is built from it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mcicl.core.configuration import require
from mcicl.core.jobs import CsvTable, Job, ReportSection
from mcicl.core.limits import MAX_EPISODES, MAX_QUERIES, MAX_SHOTS, require_count
from mcicl.core.options import doc
from mcicl.core.resampling import bootstrap_field, check_resampling
from mcicl.probing.extract_config import ExtractionConfig
from mcicl.probing.icl.episodes import PromptTemplate

STEER_READOUTS = ("auto", "lm", "in_prompt")
DIRECTION_KINDS = ("sense", "random", "unrelated")  # the steered direction and its two controls
DIRECTION_METHODS = ("diff", "mean", "lda")  # analysis.engine.measures.concept_directions' methods
DEFAULT_ALPHAS = (0.0, 0.1, 0.25, 0.5, 1.0, 4.0)
MAX_ALPHA = 1000.0


@dataclass
class SteerConfig:
    """Everything that defines a steering run: the model and steered layers (``extraction``; its template and
    pooling also give the word vectors the concept directions are estimated from), the sense-choice episodes, the
    readout and the dose grid."""

    extraction: ExtractionConfig = field(default_factory=lambda: ExtractionConfig(layers="all"))
    suite: str = field(default="polysemy", metadata=doc(
        "'polysemy' (built-in concepts with polysemous words) or a concept-set file with a polysemy inventory"))
    polysemy: str | None = field(default=None, metadata=doc("polysemy JSON {word: [concept, ...]}", metavar="FILE"))
    shots: int = field(default=8, metadata=doc("demonstrations per episode, split evenly between the two senses"))
    episodes: int = field(default=40, metadata=doc("episodes (a sense pair and its demonstrations)"))
    queries_per_episode: int = field(default=2, metadata=doc(
        "polysemous query words sharing an episode (words with both senses)"))
    prompt_template: PromptTemplate = field(default_factory=PromptTemplate)
    readout: Literal["auto", "lm", "in_prompt"] = field(default="auto", metadata=doc(
        "lm: label log-probs of a causal LM; in_prompt: the query's last-layer state against the demonstrations' "
        "(softmax(beta*cos) mass per label); auto: lm for a causal LM, in_prompt otherwise"))
    alphas: list[float] = field(default_factory=lambda: list(DEFAULT_ALPHAS), metadata=doc(
        "steering strengths, in units of the median norm of the query word's state at the steered layer (0, the "
        "bare run, is always added)"))
    direction_method: Literal["diff", "mean", "lda"] = field(default="diff", metadata=doc(
        "concept directions of the geometry engine: diff (one-vs-rest mean difference), mean or lda"))
    beta: float = field(default=10.0, metadata=doc("in_prompt readout's inverse temperature (fixed, not tuned)"))
    batch_size: int = field(default=32, metadata=doc("prompts per forward pass"))
    bootstrap: int = bootstrap_field(1000, "two-way cluster bootstrap: episodes x query words")
    seed: int = 0

    def __post_init__(self) -> None:
        require(isinstance(self.seed, int) and self.seed >= 0, "seed", self.seed, "an integer >= 0")
        require_count(self.shots, "shots", low=2, high=MAX_SHOTS, what="at least one demonstration per sense")
        require_count(self.episodes, "episodes", low=2, high=MAX_EPISODES, what="an interval needs two episodes")
        require_count(self.queries_per_episode, "queries_per_episode", low=1, high=MAX_QUERIES)
        require(self.readout in STEER_READOUTS, "readout", self.readout, "one of " + ", ".join(STEER_READOUTS))
        require(self.direction_method in DIRECTION_METHODS, "direction_method", self.direction_method,
                "one of " + ", ".join(DIRECTION_METHODS))
        ok = bool(self.alphas) and all(isinstance(a, (int, float)) and 0 <= a <= MAX_ALPHA for a in self.alphas)
        require(ok, "alphas", self.alphas, f"a non-empty list of strengths from 0 to {MAX_ALPHA:g}, e.g. 0,0.25,1,4")
        require(any(a > 0 for a in self.alphas), "alphas", self.alphas,
                "at least one strength above 0 (alpha 0, the bare run, is always measured)")
        require(isinstance(self.beta, (int, float)) and self.beta >= 0, "beta", self.beta, "a number >= 0")
        require(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", self.batch_size,
                "an integer >= 1")
        check_resampling(self, bootstrap_low=1)


STEER_CAPTION_TEXT = (
    "Share of steered readings whose answer is the target sense, against the steering strength alpha (in units of "
    "the median norm of the query word's state at that layer), one panel per steered layer: along the target sense's "
    "direction minus the other sense's (sense), along matched-norm random directions (random) and along the "
    "difference of two concepts unrelated to either sense (unrelated); bands are 95% two-way cluster bootstrap "
    "intervals (episodes x query words). Each query is steered toward each of its two senses, so every curve starts "
    "at 0.5 and a direction that does nothing stays there.")

STEER_JOB = Job(
    command="probe steer",
    help="sense steering: push a polysemous ICL query along a concept direction, measure the answer's move",
    description="Causal test of concept directions. Each episode asks a model to choose between two senses of a "
                "polysemous query word (demonstrations of both senses); at the query word's tokens, alpha times "
                "the unit direction of sense A minus sense B (the geometry engine's concept directions at the same "
                "layer, estimated on monosemous concept words, never the query words) is added to the residual "
                "stream, and the rate at which the answer becomes A is measured against alpha, per layer, beside "
                "matched-norm random directions and unrelated concept-pair directions. Works with the lm readout "
                "(causal LMs) and the in_prompt readout (encoders). Writes steering.csv, summary.json and "
                "figures/dose_response.png.",
    execute="mcicl.probing.mechanism.steering:execute",
    result="mcicl.probing.mechanism.steering:SteerResult",
    config=SteerConfig,
    fields={
        "model": ("extraction.model", "extraction.dtype", "extraction.device", "extraction.trust_remote_code"),
        "episodes": ("suite", "polysemy", "shots", "episodes", "queries_per_episode", "prompt_template.header",
                     "prompt_template.query", "prompt_template.label", "prompt_template.separator"),
        "steering": ("extraction.layers", "alphas", "direction_method", "extraction.template",
                     "extraction.pooling", "readout", "beta", "batch_size", "bootstrap"),
    },
    report=ReportSection(
        title="Sense steering of polysemous ICL queries",
        text="Rate at which the answer moves to the target sense when the query word's residual state is pushed "
             "along the sense-difference direction, per layer and strength, beside matched-norm random and "
             "unrelated concept-pair directions.",
        csv_tables=(CsvTable("steering.csv", "Dose response per layer",
                             "Rate toward the target sense per (layer, direction kind, alpha), with its 95% "
                             "cluster-bootstrap interval and the number of steered readings."),),
        skip=("per_layer",)),
)
