"""``mcicl probe icl``'s config and job declaration (torch-free: the command line is built from it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from mcicl.core.configuration import require
from mcicl.core.jobs import CsvTable, DemoStage, Job, ReportSection
from mcicl.core.options import doc
from mcicl.core.resampling import bootstrap_field, check_resampling, permutations_field
from mcicl.probing.extract_config import ExtractionConfig
from mcicl.probing.icl.episodes import RENAMED_TO_PROMPTS, EpisodeConfig

READOUTS = ("auto", "lm", "in_prompt", "attention_vote", "static_kernel")
KERNEL_READOUTS = ("in_prompt", "static_kernel")  # readouts with an inverse temperature beta
BASELINES = ("static_kernel", "random_weights")
SCORING_METHODS = ("auto", "cached", "naive")  # probing.icl.scoring's methods, named here without torch
DEFAULT_BETAS = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)


@dataclass
class IclConfig:
    """Everything that defines an ICL probe run (recorded as config.yaml); ``extraction`` says which model to
    load and, for the attention readout, how word vectors are extracted (layer, word template, pooling);
    ``prompts`` how the episodes are sampled (shared with ``probe attention``)."""

    # Files written before the prompts section (flat shots:, episodes:, ...; n_boot:) still load, with a warning.
    RENAMED: ClassVar[dict[str, str]] = {**RENAMED_TO_PROMPTS, "n_boot": "bootstrap"}

    extraction: ExtractionConfig = field(default_factory=lambda: ExtractionConfig(layers="last"))
    prompts: EpisodeConfig = field(default_factory=lambda: EpisodeConfig(shots=[0, 1, 2, 4, 8, 16], episodes=25))
    readout: Literal["auto", "lm", "in_prompt", "attention_vote", "static_kernel"] = field(
        default="auto", metadata=doc(
            "lm: label log-probs of a causal LM; in_prompt: the whole prompt through the model, the query's state "
            "against the demonstrations' states (softmax(beta*cos) mass per label); attention_vote: the model's own "
            "heads' attention from the query on the demonstrations, label-weighted (heads chosen on held-out "
            "episodes); static_kernel: softmax(beta*cos) between out-of-context word vectors (the model never sees "
            "the prompt); auto: lm for a causal LM, in_prompt otherwise"))
    baselines: list[str] = field(default_factory=lambda: list(BASELINES), metadata=doc(
        "baselines scored on the same prompts, each with a paired interval: static_kernel (the out-of-context "
        "kernel) and random_weights (the same architecture and tokenizer, weights re-initialised with --seed)"))
    contexts: str = field(default="builtin", metadata=doc(
        "sense-tagged sentences for the polysemous_in_context conditions: builtin, semcor:PATH (SemCor 3.0: queries "
        "in real sentences, labelled by their tagged supersense; with --suite supersenses), dataset:PATH, "
        "hf:NAME[:CONFIG][@SPLIT] or a .csv/.json contexts file (see mcicl probe contexts)"))
    columns: str = field(default="", metadata=doc(
        "dataset inputs (--suite, --contexts): ROLE=COLUMN,... naming the columns for the roles word, sense, "
        "context, start, source (default: columns named after the roles)"))
    # attention readout
    betas: list[float] = field(default_factory=lambda: list(DEFAULT_BETAS), metadata=doc(
        "inverse temperatures swept (in_prompt, static_kernel); chosen on held-out episodes: the median of the "
        "betas within one standard error of the best"))
    tune_episodes: int = 25  # held-out in-distribution episodes per shots, for choosing beta and heads
    top_heads: int = field(default=3, metadata=doc(
        "attention_vote: heads pooled, ranked by held-out accuracy"))
    # lm readout
    scoring: Literal["auto", "cached", "naive"] = field(default="auto", metadata=doc(
        "auto: cached where it is exact for this model (checked against naive on the longest prompt), else "
        "naive; cached: each prefix once, its KV cache reused (refused where not exact: ALiBi, sliding window); "
        "naive: one forward per label. summary.json records it"))
    batch_size: int = field(default=32, metadata=doc("prefixes / rows per forward pass"))
    # statistics
    bootstrap: int = bootstrap_field(1000, "cluster bootstrap: episodes x query words x query concepts")
    permutations: int = permutations_field(1000, "episode-level sign flips for the paired p-value against each "
                                                 "baseline")
    seed: int = 0

    def __post_init__(self) -> None:
        require(isinstance(self.seed, int) and self.seed >= 0, "seed", self.seed, "an integer >= 0")
        require(self.readout in READOUTS, "readout", self.readout, "one of " + ", ".join(READOUTS)
                + (" (readout 'attention' is now 'static_kernel')" if self.readout == "attention" else ""))
        bad = [b for b in self.baselines if b not in BASELINES]
        require(not bad, "baselines", bad, "a comma-separated subset of " + ", ".join(BASELINES))
        require(self.top_heads >= 1, "top_heads", self.top_heads, "an integer >= 1")
        require(len(self.betas) > 0 and all(b >= 0 for b in self.betas), "betas", self.betas,
                "a non-empty list of non-negative inverse temperatures")
        require(self.tune_episodes >= 1, "tune_episodes", self.tune_episodes, "an integer >= 1")
        require(self.scoring in SCORING_METHODS, "scoring", self.scoring, "one of " + ", ".join(SCORING_METHODS))
        require(self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1")
        check_resampling(self, permutations_low=100, bootstrap_low=100)


MODEL_FIELDS = ("extraction.model", "extraction.revision", "extraction.dtype", "extraction.device",
                "extraction.trust_remote_code")
TEMPLATE_FIELDS = ("prompts.template.header", "prompts.template.query", "prompts.template.context_query",
                   "prompts.template.label", "prompts.template.separator")

ICL_JOB = Job(
    command="probe icl",
    help="in-context concept classification: in-distribution vs OOD, polysemous queries",
    description="Concept-classification ICL probes. A causal LM is scored by the log-probability of each "
                "candidate label (--readout lm, cached prefixes); an encoder reads the whole prompt (--readout "
                "in_prompt: the query's in-prompt state against the demonstrations'; --readout attention_vote: its "
                "own heads' attention on the demonstrations, label-weighted). Every run scores the baselines on the "
                "same prompts (--baselines: the out-of-context kernel static_kernel, the re-initialised "
                "random_weights model) with paired intervals. Writes results.csv, summary.json and "
                "figures/accuracy_vs_shots.png.",
    execute="mcicl.probing.icl.run:execute",
    result="mcicl.probing.icl.run:IclResult",
    config=IclConfig,
    fields={
        "model": MODEL_FIELDS,
        "ICL task": ("prompts.suite", "prompts.polysemy", "readout", "prompts.shots", "prompts.conditions",
                     "contexts", "columns", "prompts.ways", "prompts.episodes", "prompts.queries_per_episode",
                     *TEMPLATE_FIELDS),
        "readouts": ("baselines", "betas", "top_heads", "extraction.layers", "permutations"),
        "causal-LM scoring": ("scoring", "batch_size"),
    },
    flags={"extraction.layers": "--layer"},
    # The accuracy trees ({condition: {shots: {mean, ci_low, ci_high}}}) are shown by the report as wide tables;
    # that table builder (analysis.report) is a higher layer than this module, so ``tables`` is left unset.
    report=ReportSection(
        title="Real model: in-context learning probes",
        text="In-context learning probes on the real model: accuracy per condition and number of shots.",
        csv_tables=(CsvTable("scoring_conventions.csv", "LM readout under three scoring conventions",
                             "Per condition and shots: accuracy (95% cluster-bootstrap interval) when the label is "
                             "the argmax of its summed log-prob (acc), of that sum per character of the label "
                             "(acc_norm, as lm-evaluation-harness), and of that sum minus the label's log-prob "
                             "after an empty context (acc_calibrated, lm-eval's acc_mutual_info)."),),
        skip=("accuracy", "majority_label", "follows_majority", "scoring_conventions")),
    reports=("probe icl", "demo icl"),
    demo=DemoStage("ICL probes (in-prompt readout)", "mcicl.probing.icl.run:demo_stage", order=40),
)
