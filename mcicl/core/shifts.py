"""One table of distribution shifts: each synthetic OOD scenario beside its real-model ICL analogue condition.

The synthetic world (``synthetic/config.py`` SCENARIOS) and the ICL probe (``probing/icl/tasks.py`` CONDITIONS)
name their shifts independently; this table is the one place that says which are the same shift, so the
matched world (:mod:`mcicl.analysis.matched`) and the docs read the pairing from here. ``"none"`` on either side:
that world has no analogue. ``shots_factor``: the real condition's number of shots relative to the synthetic
prompt length L (a length shift is the same condition at other shot counts). Torch- and numpy-free.
"""

from __future__ import annotations

from dataclasses import dataclass

NONE = "none"


@dataclass(frozen=True)
class Shift:
    """A synthetic scenario, its real ICL condition (or ``"none"``), how their shot counts relate, and what it is."""

    scenario: str
    condition: str
    shots_factor: float
    description: str


SHIFTS: tuple[Shift, ...] = (
    # "in_distribution" is the synthetic training distribution itself (its final test), not an OOD scenario.
    Shift("in_distribution", "in_distribution", 1.0, "no shift: prompts as in training"),
    Shift("length_short", "in_distribution", 0.5, "half as many demonstrations (L/2)"),
    Shift("length_long", "in_distribution", 2.0, "twice as many demonstrations (2L)"),
    Shift("length_long_4x", "in_distribution", 4.0, "four times as many demonstrations (4L)"),
    # The real ``skewed`` condition skews the demonstration labels 80/20, the synthetic one the concept prior
    # 80/20: the closest pair, not the same shift (docs/analysis.md says so).
    Shift("skewed_concepts", "skewed", 1.0, "an 80/20 skew (synthetic: concept prior; real: demonstration labels)"),
    Shift("uniform_concepts", NONE, 1.0, "a uniform test prior after a skewed training prior"),
    Shift("switched_features", NONE, 1.0, "the query concept's semantic direction replaced by a fresh one"),
    Shift("switched_cooccurrence", NONE, 1.0, "concept combinations and sign patterns never seen in training"),
    Shift("flipped_labels", "flipped_labels", 1.0, "demonstrations map each word to the opposite label"),
    Shift("polysemous_query", "polysemous_query", 1.0, "the query carries two task concepts at once"),
    Shift("noise_x2", NONE, 1.0, "word noise sigma doubled"),
    Shift("noise_x5", NONE, 1.0, "word noise sigma times five"),
    Shift("unseen_concept", NONE, 1.0, "word and label directions never trained on"),
    # Opt-in on both sides (synthetic scenarios / ICL --conditions): the context effect side by side.
    Shift("polysemous_in_context", "polysemous_in_context", 1.0,
          "a polysemous query read in a context that selects the task sense"),
    Shift("polysemous_in_context_adversarial", "polysemous_in_context_adversarial", 1.0,
          "a polysemous query read in a context that selects the other sense"),
    # Real-model conditions without a synthetic scenario.
    Shift(NONE, "arbitrary_labels", 1.0, "labels replaced by arbitrary tokens (A B C ...)"),
    Shift(NONE, "novel_pair", 1.0, "concept pairs never seen together in the demonstrations' pool"),
    Shift(NONE, "zero_shot", 1.0, "no demonstrations: the query alone"),
    Shift(NONE, "polysemous_in_context_zero_shot", 1.0,
          "a polysemous query read in its (real) sentence, with no demonstrations"),
    Shift(NONE, "shuffled_labels", 1.0, "demonstration labels shuffled (no word-label mapping left)"),
)


def matching() -> tuple[tuple[str, str, float], ...]:
    """(synthetic scenario, real condition, shots factor) of every shift that both worlds have."""
    return tuple((s.scenario, s.condition, s.shots_factor) for s in SHIFTS
                 if s.scenario != NONE and s.condition != NONE)
