"""The LM readout's scoring conventions (acc, acc_norm, acc_calibrated) against hand computation.

The model is a tiny GPT-2 with RANDOM WEIGHTS (probing.tiny), sharpened so the labels score differently:
mechanics only. Every log-prob the test expects is computed here with a plain forward pass of the whole string.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from mcicl.core.runs import RunFolder
from mcicl.probing.extract import ExtractionConfig
from mcicl.probing.icl.episodes import EpisodeConfig
from mcicl.probing.icl.run import IclConfig, run_icl
from mcicl.probing.icl.scoring import ScoringPrompt, convention_scores, score_prompts, unconditional_logprobs
from mcicl.probing.models import load_model
from mcicl.probing.tiny import build_tiny_model
from tests.icl_fixtures import small_concept_set

pytestmark = pytest.mark.usefixtures("one_torch_thread")
DEMOS = "dog -> animal\nhammer -> tool\ncat -> animal\n"
PROMPTS = [ScoringPrompt(DEMOS, "lion ->", (" animal", " tool", " foo bar")),
           ScoringPrompt(DEMOS, "saw ->", (" animal", " tool", " foo bar")),
           ScoringPrompt("", "tiger ->", (" A", " sports_equipment"))]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = build_tiny_model("gpt2", tmp_path_factory.mktemp("conv") / "gpt2", seed=5, hidden=32, layers=2,
                              heads=2)
    loaded = load_model(folder)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in loaded.model.parameters():
            if p.ndim == 2:
                p.add_(torch.randn(p.shape, generator=gen) * 0.2)
    return folder, loaded


def _sum_logprob(model, context_ids, scored_ids):
    """Plain forward of context + scored tokens; the scored tokens' summed log-probs."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([context_ids + scored_ids])).logits[0].double()
    logprobs = torch.log_softmax(logits, -1)
    return float(sum(logprobs[len(context_ids) - 1 + k, t] for k, t in enumerate(scored_ids)))


def test_conventions_equal_hand_computation(tiny):
    _, loaded = tiny
    model, tok = loaded.model, loaded.tokenizer
    bos = tok.bos_token_id
    expected = {"acc": [], "acc_norm": [], "acc_calibrated": []}
    for p in PROMPTS:
        context = p.prefix + p.query
        ctx_ids = tok(context)["input_ids"]
        rows = {k: [] for k in expected}
        for option in p.options:
            whole = tok(context + option)["input_ids"]
            assert whole[:len(ctx_ids)] == ctx_ids  # the option's tokens are the whole string's tail here
            acc = _sum_logprob(model, ctx_ids, whole[len(ctx_ids):])
            alone = tok(option, add_special_tokens=False)["input_ids"]
            unconditional = _sum_logprob(model, [bos], alone)  # lm-eval: the prefix token (BOS) as the context
            rows["acc"].append(acc)
            rows["acc_norm"].append(acc / len(option.lstrip()))  # per character, the delimiter ' ' excluded
            rows["acc_calibrated"].append(acc - unconditional)
        for k in expected:
            expected[k].append(np.array(rows[k]))
    scores = score_prompts(model, tok, PROMPTS, method="naive").scores
    unconditional = unconditional_logprobs(model, tok, [o for p in PROMPTS for o in p.options])
    got = convention_scores(scores, [p.options for p in PROMPTS], unconditional)
    for name in expected:
        for g, e in zip(got[name], expected[name], strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
    # Not vacuous: the conventions rank the labels differently somewhere.
    picks = {name: [int(np.argmax(r)) for r in got[name]] for name in got}
    assert picks["acc"] != picks["acc_norm"] or picks["acc"] != picks["acc_calibrated"], picks


def test_icl_summary_and_csv_report_the_conventions_side_by_side(tiny, tmp_path):
    folder, loaded = tiny
    config = IclConfig(extraction=ExtractionConfig(model=str(folder), layers="last", device="cpu"),
                       prompts=EpisodeConfig(shots=[0, 2], episodes=3, queries_per_episode=2,
                                             conditions=["in_distribution", "arbitrary_labels", "zero_shot"]),
                       baselines=[], bootstrap=100, permutations=100)
    run = RunFolder.create(tmp_path / "run", "probe icl")
    summary = run_icl(config, run, loaded=loaded, concept_set=small_concept_set())
    rows = list(csv.DictReader(open(run.path / "results.csv")))
    template = config.prompts.template
    disagree = 0
    for r in rows:
        logprobs, uncond = json.loads(r["label_logprobs"]), json.loads(r["label_logprobs_unconditional"])
        norm = {lab: v / len(template.option(lab).lstrip()) for lab, v in logprobs.items()}
        calibrated = {lab: v - uncond[lab] for lab, v in logprobs.items()}
        assert int(r["correct_acc_norm"]) == int(max(norm, key=norm.get) == r["gold"])
        assert int(r["correct_acc_calibrated"]) == int(max(calibrated, key=calibrated.get) == r["gold"])
        disagree += max(norm, key=norm.get) != max(logprobs, key=logprobs.get)
        disagree += max(calibrated, key=calibrated.get) != max(logprobs, key=logprobs.get)
    assert disagree > 0
    # One unconditional value by hand: the label alone after BOS.
    lab = rows[0]["gold"]
    ids = loaded.tokenizer(template.option(lab), add_special_tokens=False)["input_ids"]
    hand = _sum_logprob(loaded.model, [loaded.tokenizer.bos_token_id], ids)
    assert json.loads(rows[0]["label_logprobs_unconditional"])[lab] == pytest.approx(hand, abs=1e-5)
    conv = summary["scoring_conventions"]["accuracy"]
    assert conv["acc"] == summary["accuracy"]  # acc is the prediction of record
    for name, col in (("acc_norm", "correct_acc_norm"), ("acc_calibrated", "correct_acc_calibrated")):
        for cond, by_shots in conv[name].items():
            for shots, cell in by_shots.items():
                values = [int(r[col]) for r in rows if r["condition"] == cond and r["shots"] == shots]
                assert cell["mean"] == pytest.approx(np.mean(values)) and cell["n"] == len(values)
                assert cell["ci_low"] <= cell["mean"] <= cell["ci_high"]
    table = list(csv.DictReader(open(run.path / "scoring_conventions.csv")))
    assert len(table) == 3 and {"acc", "acc_norm", "acc_calibrated", "acc_norm_ci_low"} <= set(table[0])
    first = table[0]
    assert float(first["acc_calibrated"]) == pytest.approx(conv["acc_calibrated"][first["condition"]][first["shots"]]
                                                           ["mean"])
