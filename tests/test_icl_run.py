"""ICL probe runs: attention readout on the real MiniLM and the built-in sets; the LM path; the CLI."""

from __future__ import annotations

import csv
import json
import math
import warnings

import pytest

from mcicl.core.configuration import from_dict
from mcicl.core.io import read_json
from mcicl.core.runs import RunFolder
from mcicl.probing.extract import ExtractionConfig
from mcicl.probing.icl.episodes import EpisodeConfig
from mcicl.probing.icl.run import IclConfig, choose_readout, run_icl
from mcicl.probing.tiny import build_tiny_model
from tests.conftest import mcicl_cli
from tests.icl_fixtures import small_concept_set


def test_minilm_attention_readout_learns_in_context_on_builtin_sets(minilm, tmp_path):
    """8-shot in-distribution accuracy beats chance with a bootstrap interval excluding it (real weights)."""
    prompts = EpisodeConfig(suite="polysemy", shots=[8], conditions=["in_distribution", "polysemous_query"],
                            episodes=20)
    config = IclConfig(extraction=ExtractionConfig(layers="last", device="cpu"), prompts=prompts,
                       readout="static_kernel", baselines=[], tune_episodes=10, seed=0)
    summary = run_icl(config, RunFolder.create(tmp_path / "run", "probe icl"), loaded=minilm)
    ind = summary["accuracy"]["in_distribution"]["8"]
    poly = summary["accuracy"]["polysemous_query"]["8"]
    print(f"MiniLM attention readout, 8 shots: in-distribution {ind}, polysemous query {poly}, "
          f"beta {summary['beta']['best']}")
    assert summary["readout"] == "static_kernel" and summary["chance"] == 0.5 and not summary["random_weights"]
    assert ind["n"] == 80 and ind["ci_low"] > summary["chance"]
    assert poly["n"] > 0 and 0.0 <= poly["ci_low"] <= poly["mean"] <= poly["ci_high"] <= 1.0  # reported beside it
    rows = list(csv.DictReader(open(tmp_path / "run" / "results.csv")))
    assert {r["condition"] for r in rows} == {"in_distribution", "polysemous_query"}
    assert len(rows) == ind["n"] + poly["n"]
    assert all(r["predicted"] in json.loads(r["labels"]) for r in rows)
    sweep = list(csv.DictReader(open(tmp_path / "run" / "beta_sweep.csv")))
    assert {float(r["beta"]) for r in sweep} == set(config.betas)


def test_lm_readout_on_tiny_random_gpt2(tmp_path):
    """The causal-LM path end to end (random weights: mechanics only, and the outputs say so)."""

    folder = build_tiny_model("gpt2", tmp_path / "tiny-gpt2")
    config = IclConfig(extraction=ExtractionConfig(model=str(folder), layers="last", device="cpu"),
                       prompts=EpisodeConfig(shots=[0, 2], episodes=2, queries_per_episode=2,
                                             conditions=["in_distribution", "arbitrary_labels", "zero_shot"]),
                       bootstrap=100, permutations=100)
    run = RunFolder.create(tmp_path / "run", "probe icl")
    summary = run_icl(config, run, concept_set=small_concept_set())
    assert summary["readout"] == "lm" and summary["random_weights"] is True
    assert summary["scoring"]["method"] == "cached" and summary["scoring"]["requested"] == "auto"
    assert summary["scoring"]["check"]["max_abs_difference"] < 1e-4  # cached vs naive on the longest prompt
    assert set(summary["accuracy"]) == {"in_distribution", "arbitrary_labels", "zero_shot"}
    assert set(summary["accuracy"]["zero_shot"]) == {"0"} and set(summary["accuracy"]["in_distribution"]) == {"2"}
    rows = list(csv.DictReader(open(tmp_path / "run" / "results.csv")))
    assert len(rows) == 12
    for r in rows:
        logprobs = json.loads(r["label_logprobs"])
        assert set(logprobs) == set(json.loads(r["labels"]))
        assert all(v < 0 and math.isfinite(v) for v in logprobs.values())
        assert r["predicted"] == max(logprobs, key=logprobs.get)
    assert (run.figures / "accuracy_vs_shots.png").is_file()


def test_attention_readout_with_only_zero_shots_tunes_beta_on_zero_shot_prompts(minilm, tmp_path):
    config = IclConfig(extraction=ExtractionConfig(layers="last", device="cpu"), readout="static_kernel", baselines=[],
                       prompts=EpisodeConfig(shots=[0], conditions=["zero_shot"], episodes=2, queries_per_episode=2),
                       tune_episodes=2, bootstrap=100)
    summary = run_icl(config, RunFolder.create(tmp_path / "run", "probe icl"), loaded=minilm,
                      concept_set=small_concept_set())
    assert summary["beta"]["tuning_prompts"] == 4 and summary["beta"]["best"] in config.betas
    assert set(summary["accuracy"]) == {"zero_shot"} and summary["accuracy"]["zero_shot"]["0"]["n"] == 4


def test_bad_input_errors(tmp_path):
    with pytest.raises(ValueError, match="readout=.lm. needs a causal language model.*encoder"):
        choose_readout(IclConfig(readout="lm"))
    with pytest.raises(ValueError, match="accepted: shots <= 22"):
        run_icl(IclConfig(prompts=EpisodeConfig(shots=[32], conditions=["in_distribution"])),
                RunFolder.create(tmp_path / "a", "probe icl"), concept_set=small_concept_set())
    with pytest.raises(ValueError, match="conditions"):
        IclConfig(prompts=EpisodeConfig(conditions=["in_distribution", "sideways"]))


def test_cli_writes_results_summary_and_figure(tmp_path):
    out = tmp_path / "icl"
    proc = mcicl_cli("probe", "icl", "--model", "default", "--shots", "0,2", "--episodes", "3",
                     "--conditions", "in_distribution,zero_shot,skewed", "--betas", "0,10",
                     "--baselines", "static_kernel", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert f"output is in {out}" in proc.stdout
    summary = read_json(out / "summary.json")
    for cond, shots in (("in_distribution", "2"), ("zero_shot", "0"), ("skewed", "2")):
        cell = summary["accuracy"][cond][shots]
        assert set(cell) == {"mean", "ci_low", "ci_high", "n"} and cell["n"] == 12
    assert summary["chance"] == 0.5 and summary["beta"]["grid"] == [0.0, 10.0] and summary["readout"] == "in_prompt"
    assert set(summary["versus"]) == {"static_kernel"}
    assert "p_value" in summary["versus"]["static_kernel"]["skewed"]["2"]
    header = next(csv.reader(open(out / "results.csv")))
    assert {"task", "condition", "shots", "query", "gold", "predicted", "label_logprobs"} <= set(header)
    assert (out / "figures" / "accuracy_vs_shots.png").is_file() and (out / "config.yaml").is_file()
    bad = mcicl_cli("probe", "icl", "--model", "default", "--readout", "lm", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "needs a causal language model" in bad.stderr


def test_old_flat_keys_load_with_a_warning_naming_the_new_key():
    old = {"shots": [0, 2], "conditions": ["in_distribution", "zero_shot"], "episodes": 5, "ways": 3,
           "queries_per_episode": 2, "template": {"query": "{word} =", "label": " {label}"}, "n_boot": 200}
    with pytest.warns(DeprecationWarning) as caught:
        config = from_dict(IclConfig, old)
    said = " ".join(str(w.message) for w in caught)
    for key in ("shots", "conditions", "episodes", "ways", "queries_per_episode", "template"):
        assert f"config key '{key}' is deprecated; use 'prompts.{key}'" in said
    assert "use 'bootstrap'" in said
    nested = {"prompts": {k: v for k, v in old.items() if k != "n_boot"}, "bootstrap": 200}
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert from_dict(IclConfig, nested) == config
    assert config.prompts.template.query == "{word} =" and config.extraction.layers == "last"
    with pytest.raises(ValueError, match="only one of shots .deprecated. and prompts.shots"):
        from_dict(IclConfig, {"shots": [2], "prompts": {"shots": [4]}})


def test_cli_config_file_option_precedence_and_type_errors(tmp_path):
    cfg = tmp_path / "icl.yaml"
    cfg.write_text("prompts:\n  episodes: 9\n  template:\n    query: 'Q {word}:'\nextraction:\n  layers: '2'\n")
    res = mcicl_cli("probe", "icl", "--config", str(cfg), "--layer", "3", "--print-config")
    assert res.returncode == 0, res.stderr
    assert "episodes: 9  # from config file" in res.stdout and "query: 'Q {word}:'  # from config file" in res.stdout
    assert "layers: '3'  # from --layer" in res.stdout
    res = mcicl_cli("probe", "icl", "--config", str(cfg), "--episodes", "4", "--query-template", "{word} =>",
                    "--print-config")
    assert "episodes: 4  # from --episodes" in res.stdout and "query: '{word} =>'  # from --query-template" \
        in res.stdout
    res = mcicl_cli("probe", "icl", "--shots", "0,two", "--print-config")
    assert res.returncode == 2 and "--shots 'two': accepted: an integer" in res.stderr
    res = mcicl_cli("probe", "icl", "--query-template", "no slot", "--print-config")
    assert res.returncode == 2 and "--query-template 'no slot': accepted: a string containing {word}" in res.stderr
    cfg.write_text("prompts:\n  ways: two\n")
    res = mcicl_cli("probe", "icl", "--config", str(cfg), "--print-config")
    assert res.returncode == 2 and f"config file {cfg}: prompts.ways='two'; accepted: an integer" in res.stderr
