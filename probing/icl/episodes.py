"""The ICL prompts' vocabulary (torch-free): conditions, the prompt template and :class:`EpisodeConfig`, the one
config section (``prompts:``) that says how ``probe icl`` and ``probe attention`` sample their episodes.

Both commands draw their prompts from :class:`mcicl.probing.icl.tasks.IclSampler` with the same settings, so the
settings are declared and validated once here; each command keeps its own defaults (``probe attention``: fewer
shots and episodes) by giving its ``prompts`` field its own default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mcicl.core.configuration import require
from mcicl.core.limits import MAX_EPISODES, MAX_PROMPTS, MAX_QUERIES, MAX_SHOTS, require_count
from mcicl.core.options import doc
from mcicl.probing.templates import check_template, fill


@dataclass(frozen=True)
class Condition:
    """How an episode is drawn: which concept combinations, which labels, which demonstrations and query."""

    combos: Literal["seen", "novel", "any"] = "seen"
    labels: Literal["semantic", "arbitrary", "flipped"] = "semantic"
    majority_fraction: float | None = None  # share of demonstrations with one label; None: balanced
    shuffle_labels: bool = False
    query: Literal["monosemous", "polysemous", "in_context"] = "monosemous"
    zero_shot: bool = False
    context_sense: Literal["task", "other"] = "task"  # in_context queries: the sense their sentence selects


CONDITIONS: dict[str, Condition] = {
    "in_distribution": Condition(),
    "polysemous_query": Condition(combos="any", query="polysemous"),
    "skewed": Condition(majority_fraction=0.8),
    "flipped_labels": Condition(labels="flipped"),
    "arbitrary_labels": Condition(labels="arbitrary"),
    "novel_pair": Condition(combos="novel"),
    "zero_shot": Condition(zero_shot=True),
    "shuffled_labels": Condition(shuffle_labels=True),
    "polysemous_in_context": Condition(combos="any", query="in_context"),
    "polysemous_in_context_adversarial": Condition(combos="any", query="in_context", context_sense="other"),
    "polysemous_in_context_zero_shot": Condition(combos="any", query="in_context", zero_shot=True),
}
# The twin conditions (same episodes, sentences selecting the task's sense vs another sense).
CONTEXT_CONDITIONS = ("polysemous_in_context", "polysemous_in_context_adversarial")
# Conditions that need sense-tagged contexts; opt-in (--conditions), so default runs are unchanged.
SENTENCE_CONDITIONS = (*CONTEXT_CONDITIONS, "polysemous_in_context_zero_shot")
DEFAULT_CONDITIONS = tuple(c for c in CONDITIONS if c not in SENTENCE_CONDITIONS)
# A twin draws its episodes from its twin's random stream, so the two differ only in the query sentences.
STREAM_OF = {"polysemous_in_context_adversarial": "polysemous_in_context"}
DEFAULT_ARBITRARY_LABELS = ("A B C D E F", "foo bar baz qux quux corge", "X Y Z W V U")


@dataclass(frozen=True)
class PromptTemplate:
    """How a prompt is written: ``header`` + demonstrations + query; each label is scored as a continuation.

    A demonstration is ``query`` with its ``{word}`` slot filled, then ``label`` with ``{label}`` filled, then
    ``separator``; the prompt ends with the query's line (a query in a sentence: ``context_query`` with
    ``{context}`` and ``{word}``); candidate continuations are the filled ``label``. Every line follows the one
    word-template rule of :mod:`mcicl.probing.templates` (each slot exactly once, no other braces).
    """

    header: str = field(default="", metadata=doc("text before the demonstrations (default: none)"))
    query: str = field(default="{word} ->", metadata=doc("query line, with {word}", flag="--query-template"))
    label: str = field(default=" {label}", metadata=doc("scored label continuation, with {label}",
                                                        flag="--label-template"))
    separator: str = field(default="\n", metadata=doc("text after each demonstration (default: newline)"))
    context_query: str = field(default="{context} {word} ->", metadata=doc(
        "query line of a word inside a sentence, with {context} and {word}", flag="--context-query-template"))

    def __post_init__(self) -> None:
        # Bare field names: a config file's prompts.template section prefixes them (prompts.template.query).
        check_template(self.query, "query", example="{word} ->")
        check_template(self.context_query, "context_query", ("context", "word"), example="{context} {word} ->")
        check_template(self.label, "label", ("label",), example=" {label}")

    def prefix(self, demos: tuple[tuple[str, str], ...]) -> str:
        """Header plus the demonstrations."""
        return self.header + "".join(fill(self.query, word=w) + fill(self.label, label=lab) + self.separator
                                     for w, lab in demos)

    def query_text(self, word: str) -> str:
        """The query line, ending where the label starts."""
        return fill(self.query, word=word)

    def query_in_context(self, context: str, word: str) -> str:
        """The query line of a word inside a sentence, ending where the label starts."""
        return fill(self.context_query, context=context, word=word)

    def option(self, label: str) -> str:
        """The continuation scored for ``label``."""
        return fill(self.label, label=label)


@dataclass
class EpisodeConfig:
    """How ICL episodes are sampled: the concept set, the conditions, shots, ways, episodes, the template.

    Checks that hold for every command are here; a command narrows them in its own config (``probe attention``:
    shots >= 1, episodes >= 2, no zero_shot).
    """

    suite: str = field(default="polysemy", metadata=doc(
        "'polysemy' (built-in concepts with polysemous words), 'concepts' (built-in, no polysemous words) or a "
        "concept-set file (the JSON/CSV of `probe geometry --concepts`)"))
    polysemy: str | None = field(default=None, metadata=doc("polysemy JSON {word: [concept, ...]}", metavar="FILE"))
    shots: list[int] = field(default_factory=lambda: [0, 1, 2, 4, 8, 16], metadata=doc(
        "numbers of demonstrations"))
    conditions: list[str] = field(default_factory=lambda: list(DEFAULT_CONDITIONS), metadata=doc(
        "comma-separated conditions, of: " + ", ".join(CONDITIONS)))
    ways: int = field(default=2, metadata=doc("concepts per task"))
    episodes: int = field(default=25, metadata=doc(
        "episodes (one set of demonstrations each) per condition and shots"))
    queries_per_episode: int = field(default=4, metadata=doc("queries sharing one episode"))
    novel_fraction: float = 0.25  # concept combinations held out for novel_pair
    template: PromptTemplate = field(default_factory=PromptTemplate)
    arbitrary_labels: list[str] = field(default_factory=lambda: list(DEFAULT_ARBITRARY_LABELS))

    def __post_init__(self) -> None:
        require(len(self.shots) > 0 and all(isinstance(s, int) and s >= 0 for s in self.shots), "shots",
                self.shots, "a non-empty list of non-negative numbers of demonstrations, e.g. 0,1,2,4,8,16")
        self.shots = sorted(set(self.shots))
        bad = [c for c in self.conditions if c not in CONDITIONS]
        require(not bad and len(self.conditions) > 0, "conditions", bad or self.conditions,
                "a non-empty list of: " + ", ".join(CONDITIONS))
        require(self.ways >= 2, "ways", self.ways, "an integer >= 2 (concepts per task)")
        require_count(self.episodes, "episodes", low=1, high=MAX_EPISODES)
        require(max(self.shots) <= MAX_SHOTS, "shots", self.shots, f"numbers of demonstrations up to {MAX_SHOTS}")
        require_count(self.queries_per_episode, "queries_per_episode", low=1, high=MAX_QUERIES)
        prompts = len(self.conditions) * len(self.shots) * self.episodes * self.queries_per_episode
        require(prompts <= MAX_PROMPTS, "episodes", self.episodes,
                f"at most {MAX_PROMPTS:,} prompts in all; {len(self.conditions)} conditions x {len(self.shots)} shots "
                f"x {self.episodes:,} episodes x {self.queries_per_episode:,} queries is {prompts:,} (fewer "
                "episodes, shots, conditions or queries per episode)")
        require(0 < self.novel_fraction < 1, "novel_fraction", self.novel_fraction, "a number in (0, 1)")
        fewest = min((len(set(labels.split())) for labels in self.arbitrary_labels), default=0)
        if "arbitrary_labels" in self.conditions:  # the ways must fit the arbitrary label sets, or say which is short
            require(self.ways <= fewest or fewest == 0, "ways", self.ways,
                    f"an integer from 2 to {fewest} (the size of the smallest arbitrary_labels set)")
        for labels in self.arbitrary_labels:
            require(len(set(labels.split())) >= 2, "arbitrary_labels", labels,
                    "space-separated label sets with at least 2 distinct non-empty labels each")


# The fields that were flat in IclConfig and AttentionConfig before the prompts section: old files still load.
EPISODE_KEYS = ("suite", "polysemy", "shots", "conditions", "ways", "episodes", "queries_per_episode",
                "novel_fraction", "template", "arbitrary_labels")
RENAMED_TO_PROMPTS = {key: f"prompts.{key}" for key in EPISODE_KEYS}
