"""The synthetic counterpart of a polysemous word in context: a context feature gamma * a_k on the query."""

from __future__ import annotations

import pytest
import torch

from mcicl.analysis.matched import matched_rows
from mcicl.core.configuration import ConfigError
from mcicl.synthetic.config import CONTEXT_SCENARIOS, SyntheticConfig, default_scenarios
from mcicl.synthetic.data import build_dictionary, sample_prompts, scenario_spec


@pytest.mark.parametrize("name,selects_task", [("polysemous_in_context", True),
                                               ("polysemous_in_context_adversarial", False)])
def test_context_feature_adds_gamma_along_the_selected_concept(name, selects_task):
    # Noise-free words, no co-occurring features: the query is mu_k* + mu_k' + gamma a_selected exactly.
    gamma = 1.5
    cfg = SyntheticConfig(K=4, K_irr=0, d=40, sigma=0.0, polysemy_rate=0.0, seeds=1, context_strength=gamma,
                          scenarios=[name])
    dic = build_dictionary(cfg)
    p = sample_prompts(dic, scenario_spec(cfg, name), 1, 300, torch.Generator().manual_seed(3))
    coef = p.xq[0] @ (dic.a / dic.a.norm(dim=1, keepdim=True) ** 2).T  # (n, K): weight of each a_j
    rows = torch.arange(coef.shape[0])
    task = coef[rows, p.concept[0]]
    assert torch.allclose(task, torch.full_like(task, 1 + gamma if selects_task else 1.0), atol=1e-4)
    others = coef.clone()
    others[rows, p.concept[0]] = 0
    other = others.max(dim=1).values  # the second concept k' != k*
    assert torch.allclose(other, torch.full_like(other, 1.0 if selects_task else 1 + gamma), atol=1e-4)
    # Without context (gamma = 0) both scenarios are the polysemous query: every present concept weighs 1.
    flat = SyntheticConfig(**{**cfg.__dict__, "context_strength": 0.0})
    q0 = sample_prompts(dic, scenario_spec(flat, name), 1, 50, torch.Generator().manual_seed(3)).xq[0]
    c0 = q0 @ (dic.a / dic.a.norm(dim=1, keepdim=True) ** 2).T
    assert torch.allclose(c0.max(dim=1).values, torch.ones(50, dtype=c0.dtype), atol=1e-4)


def test_context_scenarios_are_opt_in_and_validated():
    assert not set(CONTEXT_SCENARIOS) & set(default_scenarios())
    with pytest.raises(ConfigError, match="context_strength"):
        SyntheticConfig(context_strength=-1.0)
    with pytest.raises(ConfigError, match="polysemous_in_context"):
        SyntheticConfig(K=1, scenarios=["polysemous_in_context"])


def test_matched_rows_put_synthetic_and_real_context_effects_side_by_side():
    syn = {"final": {"test_zero_one": 0.01},
           "ood": {"polysemous_in_context": {"test_zero_one": 0.012},
                   "polysemous_in_context_adversarial": {"test_zero_one": 0.011}}}
    icl = {"accuracy": {"polysemous_in_context": {"8": {"mean": 0.94, "ci_low": 0.87, "ci_high": 1.0, "n": 120}},
                        "polysemous_in_context_adversarial": {"8": {"mean": 0.82, "ci_low": 0.69, "ci_high": 0.92,
                                                                    "n": 120}}}}
    rows = {r["synthetic_condition"]: r for r in matched_rows(syn, icl, L=8)}
    same, adv = rows["polysemous_in_context"], rows["polysemous_in_context_adversarial"]
    assert (same["synthetic_error"], same["real_condition"], same["real_shots"]) == (0.012, "polysemous_in_context", 8)
    assert same["real_error"] == pytest.approx(0.06) and adv["real_error"] == pytest.approx(0.18)
    assert adv["real_error_low"] == pytest.approx(0.08) and adv["synthetic_error"] == 0.011
    # Without the scenarios in the synthetic run, no rows for them (older runs are compared as before).
    assert "polysemous_in_context" not in {r["synthetic_condition"] for r in matched_rows({"final": {}}, icl, 8)}
