"""The one table of distribution shifts names every synthetic scenario and every real ICL condition."""

from __future__ import annotations

from mcicl.analysis.matched import MATCHING
from mcicl.core.shifts import NONE, SHIFTS, matching
from mcicl.probing.icl.tasks import CONDITIONS
from mcicl.synthetic.config import SCENARIOS


def test_every_scenario_and_every_condition_is_in_the_table():
    scenarios = {s.scenario for s in SHIFTS}
    conditions = {s.condition for s in SHIFTS}
    assert set(SCENARIOS) <= scenarios, set(SCENARIOS) - scenarios
    assert set(CONDITIONS) <= conditions, set(CONDITIONS) - conditions
    # Nothing in the table that neither world has (a renamed scenario or condition would linger here).
    assert scenarios <= {*SCENARIOS, "in_distribution", NONE} and conditions <= {*CONDITIONS, NONE}
    assert len({s.scenario for s in SHIFTS if s.scenario != NONE}) == sum(s.scenario != NONE for s in SHIFTS)
    assert all(s.description and s.shots_factor > 0 for s in SHIFTS)


def test_the_matched_world_pairs_what_the_table_pairs():
    assert MATCHING == matching()
    assert ("length_long", "in_distribution", 2.0) in MATCHING and ("skewed_concepts", "skewed", 1.0) in MATCHING
    assert all(NONE not in (scenario, condition) for scenario, condition, _ in MATCHING)
