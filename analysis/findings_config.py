"""``mcicl findings``'s config and job declaration (torch-free: the command line is built from it).

A findings run measures every headline number of the README at publication settings, each as a record with its
interval, controls, selection rule and replication (:mod:`mcicl.analysis.findings`). ``--fast`` runs the same
code at tiny settings (:func:`fast_settings`), for tests and for timing the groups.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from mcicl.core.configuration import require
from mcicl.core.jobs import Job, Option, ReportSection
from mcicl.core.options import doc
from mcicl.core.resampling import bootstrap_field, check_resampling, permutations_field

GROUPS = ("synthetic", "synthetic_random_readout", "geometry", "icl", "attention", "contexts", "dictionary",
          "semcor", "circuits", "steer", "map", "matched")
NEEDS = {"matched": "icl"}  # group -> the group whose findings it reads (run before it, or saved for --resume)

# The settings each group reads: --resume reuses a saved group when these (and only these) are unchanged, so adding
# a group or a setting another group reads does not recompute it. tests/test_findings.py checks every group's
# ``cfg.<name>`` reads against this table. A group missing here is compared on every setting.
_COMMON = ("model", "fast", "seed", "replication_seed", "permutations", "bootstrap")
_ICL = ("icl_episodes", "shots", "icl_sets", "tune_episodes")
GROUP_SETTINGS: dict[str, tuple[str, ...]] = {
    "synthetic": (*_COMMON, "seeds", "steps", "n_test", "n_test_ood"),
    "synthetic_random_readout": (*_COMMON, "seeds", "steps", "random_readout_steps", "n_test", "n_test_ood"),
    "geometry": (*_COMMON, "shuffles"),
    "icl": (*_COMMON, *_ICL),
    "attention": (*_COMMON, "attention_episodes", "attention_shots", "icl_sets"),
    "contexts": _COMMON,
    "dictionary": (*_COMMON, "matched_per_sign"),
    "semcor": (*_COMMON, "icl_episodes", "tune_episodes"),
    "circuits": (*_COMMON, "attention_episodes"),
    "steer": (*_COMMON, "icl_episodes"),
    "map": (*_COMMON, "seeds", "n_test", "map_within", "map_cross", "map_max_steps"),
    "matched": (*_COMMON, "seeds", "steps", "matched_n_test", "matched_per_sign", *_ICL),  # + the icl group's
}
# Rough relative cost of each group at publication settings (measured group seconds, rounded): with --jobs > 1 the
# costliest start first, so the longest group does not start last. Only the order depends on it, never a number.
GROUP_COST = {"icl": 10.0, "attention": 7.0, "dictionary": 4.5, "synthetic": 2.5, "semcor": 1.5, "geometry": 1.0,
              "circuits": 1.0, "synthetic_random_readout": 1.0, "steer": 1.0, "map": 0.6, "matched": 0.3,
              "contexts": 0.1}


@dataclass
class FindingsConfig:
    """Publication settings of every finding group: seeds, episodes, permutations, bootstrap resamples."""

    model: str = field(default="default", metadata=doc(
        "the real model probed: 'default' (the embedded all-MiniLM-L6-v2), a local folder or a Hub id"))
    groups: list[str] = field(default_factory=lambda: list(GROUPS), metadata=doc(
        "finding groups to run, of: " + ", ".join(GROUPS)))
    seeds: int = field(default=5, metadata=doc("synthetic models trained per replication (one batched program)"))
    steps: int = field(default=400, metadata=doc("synthetic training steps (warm-started readout)"))
    random_readout_steps: int = 2000  # the random-readout run needs longer to converge at all
    n_test: int = 10000  # synthetic in-distribution test prompts per seed
    n_test_ood: int = 2000  # synthetic test prompts per OOD scenario and seed
    icl_episodes: int = field(default=200, metadata=doc("ICL episodes per condition and shot count"))
    shots: list[int] = field(default_factory=lambda: [0, 1, 2, 4, 8, 16], metadata=doc(
        "ICL shot counts (every one is reported)"))
    icl_sets: int = field(default=5, metadata=doc(
        "independent episode sets: ICL splits the main set's episodes into this many disjoint sets and measures "
        "each statistic on each (beside the separately drawn replication set); the attention probe draws this "
        "many sets for the heads' stability"))
    tune_episodes: int = 50  # held-out in-distribution ICL episodes for choosing beta
    attention_episodes: int = field(default=25, metadata=doc(
        "attention-probe episodes per cell (and as many held out for choosing the heads)"))
    attention_shots: list[int] = field(default_factory=lambda: [2, 4, 8])
    map_within: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9], metadata=doc(
        "the map's within_cosine values"))
    map_cross: list[float] = field(default_factory=lambda: [0.0, 0.2], metadata=doc(
        "the map's cross_overlap values"))
    map_max_steps: int = field(default=1600, metadata=doc(
        "the map's step budget: a cell trains to 1% test error or this many steps (then it is censored)"))
    matched_n_test: int = 2000  # test prompts per seed (in distribution and per scenario) of each matched world
    matched_per_sign: int = 80  # simulated words per concept sign when the matched world's moments are fitted
    permutations: int = permutations_field(1000, "permutations for every quoted p-value")
    bootstrap: int = bootstrap_field(1000, "of the unit each finding names")
    shuffles: int = 10  # shuffled-embedding null draws of the geometry
    replication_seed: int = 1000  # the replication's seed: far from seed, seed + 1 (ICL's beta tuning episodes)
    jobs: int = field(default=1, metadata=doc(
        "groups run at once, each in a process of its own with an equal share of the cores (1: one after another "
        "in this process); the numbers do not depend on it"))
    fast: bool = field(default=False, metadata=doc(
        "tiny settings (structure check, minutes on 2 cores): the same code, numbers not for quoting"))
    seed: int = 0

    def __post_init__(self) -> None:
        for name in self.groups:
            require(name in GROUPS, "groups", name, "names from " + ", ".join(GROUPS))
        require(isinstance(self.jobs, int) and not isinstance(self.jobs, bool) and 1 <= self.jobs <= len(GROUPS),
                "jobs", self.jobs, f"an integer from 1 to {len(GROUPS)} (the number of groups)")
        require(isinstance(self.icl_sets, int) and self.icl_sets >= 2, "icl_sets", self.icl_sets,
                "an integer >= 2 (an interval across sets needs two)")
        for name, needed in NEEDS.items():
            if name in self.groups:
                require(needed in self.groups[:self.groups.index(name)], "groups", ",".join(self.groups),
                        f"{needed} listed before {name} ({name} reads {needed}'s findings)")
        require(bool(self.map_within) and all(0.0 <= w < 1.0 for w in self.map_within), "map_within",
                self.map_within, "a non-empty list of within_cosine values in [0, 1)")
        require(bool(self.map_cross) and all(0.0 <= c < 1.0 for c in self.map_cross), "map_cross", self.map_cross,
                "a non-empty list of cross_overlap values in [0, 1)")
        require(self.icl_sets <= self.icl_episodes, "icl_sets", self.icl_sets,
                f"at most icl_episodes ({self.icl_episodes}): each set needs an episode")
        for name in ("seeds", "steps", "random_readout_steps", "n_test", "n_test_ood", "icl_episodes",
                     "tune_episodes", "shuffles", "map_max_steps", "matched_n_test", "matched_per_sign"):
            value = getattr(self, name)
            require(isinstance(value, int) and value >= 1, name, value, "an integer >= 1")
        check_resampling(self, bootstrap_low=1)
        require(self.seeds >= 2, "seeds", self.seeds, "an integer >= 2 (an interval across seeds needs two)")
        require(self.attention_episodes >= 2, "attention_episodes", self.attention_episodes,
                "an integer >= 2 (the position-matched null pairs prompts of different episodes)")
        require(bool(self.attention_shots) and all(s >= 1 for s in self.attention_shots), "attention_shots",
                self.attention_shots, "a non-empty list of shot counts >= 1")
        require(self.replication_seed not in (self.seed, self.seed + 1), "replication_seed", self.replication_seed,
                "a seed other than seed and seed + 1 (those draw the main and the held-out episodes)")


def fast_settings(cfg: FindingsConfig) -> FindingsConfig:
    """``cfg`` at the tiny settings of ``--fast`` (the groups, model and seeds as given)."""
    return dataclasses.replace(cfg, seeds=2, steps=250, random_readout_steps=100, n_test=500, n_test_ood=200,
                               icl_episodes=4, icl_sets=3, shots=[0, 2, 8], tune_episodes=4, attention_episodes=4,
                               attention_shots=[8], permutations=100, bootstrap=100, shuffles=1,
                               map_within=[0.1, 0.9], map_cross=[0.0], map_max_steps=60, matched_n_test=200,
                               matched_per_sign=20)


FINDINGS_JOB = Job(
    command="findings",
    help="every headline number of the README with its interval, controls and a replication",
    description="Run every headline measurement at publication settings (>= 200 ICL episodes, >= 5 seeds, "
                ">= 1,000 permutations) and write findings.json, findings.md and a forest plot. Each finished group "
                "is saved as groups/<name>.json; --resume with the same --out skips them. --readme renders the "
                "README's findings block from docs/findings.json instead.",
    execute="mcicl.analysis.findings:execute",
    result="mcicl.analysis.findings:FindingsResult",
    config=FindingsConfig,
    fields={"settings": ("model", "groups", "jobs", "seeds", "steps", "icl_episodes", "icl_sets", "shots",
                         "attention_episodes", "permutations", "bootstrap", "fast")},
    options=(Option(("--resume",), "continue the run in --out: groups already saved there are kept",
                    {"action": "store_true"}),
             Option(("--readme",), "write the README's findings block from docs/findings.json (no run)",
                    {"action": "store_true"})),
    report=ReportSection(title="Findings", text="Every headline number with its interval, controls and "
                                                "replication (findings.md holds the full table).",
                         skip=("findings",)),
)
