"""``mcicl probe steer`` and its residual-stream hook: the site of hidden state l is what output_hidden_states[l]
reports, alpha = 0 is the bare run, no hook outlives an intervention (also after an error), the statistics equal a
hand computation, and on a constructed encoder whose concept words carry planted directions steering along the
planted sense direction moves the answer monotonically while random directions of the same norm do not.

Every model here has random weights (tiny models built from a config); the constructed one has planted embedding
rows on top of them. They test mechanics and the planted answer, never a real model's behaviour."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from mcicl.app.cli import main
from mcicl.probing.extract import model_body
from mcicl.probing.extract_config import ExtractionConfig
from mcicl.probing.icl.in_prompt import prompt_spans, read_prompts
from mcicl.probing.icl.readout import state_probabilities
from mcicl.probing.icl.scoring import ScoringPrompt, score_naive
from mcicl.probing.icl.stats import cluster_bootstrap
from mcicl.probing.icl.tasks import IclSampler
from mcicl.probing.mechanism import steering
from mcicl.probing.mechanism.residual import add_to_residual, capture_residual, check_sites, hook_count
from mcicl.probing.mechanism.steer_config import SteerConfig
from mcicl.probing.models import load_model
from mcicl.probing.tiny import RANDOM_WEIGHTS_MARKER, build_tiny_model, build_tiny_tokenizer
from tests.icl_fixtures import SMALL_CONCEPTS, small_concept_set

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("steer")
    return {arch: load_model(build_tiny_model(arch, root / arch, hidden=32, heads=2, layers=2), device="cpu")
            for arch in ("gpt2", "llama", "bert")}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A tiny random-weight BERT whose concept words' embedding rows carry 3 * e_c (one axis per concept): every
    layer's state of a concept word points along its concept's axis, so the sense direction decides the readout."""
    folder = tmp_path_factory.mktemp("planted") / "bert"
    words = [w for ws in SMALL_CONCEPTS.values() for w in ws]
    tok = build_tiny_tokenizer([" ".join(words + ["bat", "orange", "club", "jaguar"])] * 50, vocab_size=1500)
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=64, pad_token_id=tok.pad_token_id))
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        for axis, ws in enumerate(SMALL_CONCEPTS.values()):
            for w in ws:
                for t in tok(w, add_special_tokens=False)["input_ids"]:
                    emb[t, axis] += 3.0
    model.eval()
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    (folder / RANDOM_WEIGHTS_MARKER).write_text("tiny bert, random weights with planted concept rows\n")
    return load_model(folder, device="cpu")


def _ids(loaded, text="dog -> animal\nbat ->"):
    return torch.tensor([loaded.tokenizer(text)["input_ids"]])


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bert"])
def test_site_is_the_hidden_state_and_alpha_zero_is_the_bare_run(tiny, arch):
    loaded = tiny[arch]
    model, ids = loaded.model, _ids(loaded)
    check_sites(model, ids)  # every layer's site carries output_hidden_states[layer]
    before = hook_count(model)
    body = model_body(model)
    with torch.inference_mode():
        bare = body(input_ids=ids, output_hidden_states=True).hidden_states[-1]
        v = torch.randn(32, generator=torch.Generator().manual_seed(1))
        for layer in range(3):
            with add_to_residual(model, layer, [[1]], v, 0.0):
                zero = body(input_ids=ids, output_hidden_states=True).hidden_states[-1]
            assert torch.equal(zero, bare), "alpha = 0 reproduces the bare run bitwise"
            with add_to_residual(model, layer, [[1]], v, 2.0):
                moved = body(input_ids=ids, output_hidden_states=True).hidden_states[-1]
            assert not torch.allclose(moved[0, 1], bare[0, 1]), "the edit reaches the last layer"
            if arch != "bert":  # causal: tokens before the edited one are untouched
                assert torch.equal(moved[0, 0], bare[0, 0])
            with capture_residual(model, layer) as seen, add_to_residual(model, layer, [[1]], v, 2.0):
                body(input_ids=ids)
            assert len(seen) == 1
    assert hook_count(model) == before, "no hook left after the interventions"


def test_hooks_are_removed_after_an_error(tiny):
    model = tiny["gpt2"].model
    before = hook_count(model)
    with pytest.raises(RuntimeError, match="inside"), add_to_residual(model, 1, [[0]], np.ones(32), 1.0):
        assert hook_count(model) == before + 1
        raise RuntimeError("an error inside the context")
    assert hook_count(model) == before
    with pytest.raises(ValueError, match="batch rows"), add_to_residual(model, 1, [[0], [1]], np.ones(32), 1.0):
        model_body(model)(input_ids=_ids(tiny["gpt2"]))  # the hook itself raises during the forward
    assert hook_count(model) == before
    with pytest.raises(ValueError, match="layer=9"):
        add_to_residual(model, 9, [[0]], np.ones(32)).__enter__()
    assert hook_count(model) == before


def _prompts(n=3):
    return steering.sense_choice_prompts(small_concept_set(), shots=4, episodes=n, queries_per_episode=2, seed=0)


def test_lm_choice_at_alpha_zero_equals_the_naive_scorer(tiny):
    """Random-weight causal LMs: the steering scorer with zero vectors equals probing.icl.scoring's reference."""
    for arch in ("gpt2", "llama"):
        loaded = tiny[arch]
        prompts, t = _prompts(), SteerConfig().prompt_template
        got = steering.lm_choice(loaded, prompts, t, 1, np.zeros((len(prompts), 32), np.float32), batch_size=4)
        ref = score_naive(loaded.model, loaded.tokenizer, [ScoringPrompt(t.prefix(p.demos), t.query_text(p.query),
                                                                         tuple(t.option(lab) for lab in p.labels))
                                                           for p in prompts])
        np.testing.assert_allclose(got, np.stack(ref), atol=1e-4)
        push = np.random.default_rng(0).normal(size=(len(prompts), 32)).astype(np.float32) * 5  # not along ones,
        moved = steering.lm_choice(loaded, prompts, t, 1, push, batch_size=4)  # which LayerNorm removes
        assert np.abs(moved - got).max() > 1e-4, "a non-zero vector changes the scores"


def test_in_prompt_choice_at_alpha_zero_equals_the_bare_readout(tiny):
    loaded = tiny["bert"]
    prompts, t = _prompts(), SteerConfig().prompt_template
    got = steering.in_prompt_choice(loaded, prompts, t, 1, np.zeros((len(prompts), 32), np.float32), 10.0, 2)
    readings = read_prompts(loaded.model, loaded.tokenizer, [prompt_spans(p, t) for p in prompts], 2,
                            attention=False, batch_size=2)
    bare = state_probabilities(prompts, np.stack([r.query for r in readings]), [r.demos for r in readings], [10.0])
    np.testing.assert_array_equal(got, bare[:, 0])


def test_sense_choice_prompts_ask_between_two_senses_of_the_query():
    cs = small_concept_set()
    prompts = _prompts(12)
    sampler = IclSampler(cs, ways=2)
    words, _ = steering.direction_words(cs)
    for p in prompts:
        a, b = p.task.split("|")
        assert {a, b} <= set(cs.polysemy[p.query]), "both task concepts are senses of the query word"
        assert b not in sampler.family[a]
        assert sorted(p.demo_concepts.count(c) for c in (a, b)) == [2, 2], "demonstrations split evenly"
        assert all(w not in cs.polysemy for w, _ in p.demos)
    assert not {p.query for p in prompts} & set(words), "directions are estimated on other words than the queries"


def test_directions_are_the_one_vs_rest_mean_difference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 5))
    labels = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    got = steering.layer_directions(x, labels, "diff")
    xc = x - x.mean(0)
    for i, c in enumerate("abc"):
        diff = xc[4 * i:4 * i + 4].mean(0) - np.delete(xc, range(4 * i, 4 * i + 4), axis=0).mean(0)
        np.testing.assert_allclose(got[c], diff / np.linalg.norm(diff), atol=1e-10)


def _readings():
    """Hand-made readings: 2 episodes x 2 queries x 2 targets; bare answers, then sense/random/unrelated at 1."""
    rows = []
    bare = {(0, "bat"): 0, (0, "club"): 1, (1, "bat"): 0, (1, "orange"): 0}
    sense = {(0, "bat", 0): 1, (0, "bat", 1): 1, (0, "club", 0): 1, (0, "club", 1): 0, (1, "bat", 0): 1,
             (1, "bat", 1): 1, (1, "orange", 0): 0, (1, "orange", 1): 1}
    for (e, q), ans in bare.items():
        for target in (0, 1):
            rows.append({"episode": e, "query": q, "target": target, "kind": "bare", "layer": -1, "alpha": 0.0,
                         "toward_target": int(ans == target)})
            rows.append({"episode": e, "query": q, "target": target, "kind": "sense", "layer": 3, "alpha": 1.0,
                         "toward_target": sense[(e, q, target)]})
            rows.append({"episode": e, "query": q, "target": target, "kind": "random", "layer": 3, "alpha": 1.0,
                         "toward_target": int(ans == target)})
            rows.append({"episode": e, "query": q, "target": target, "kind": "unrelated", "layer": 3, "alpha": 1.0,
                         "toward_target": int(target == 0)})
    return rows


def test_summary_statistics_match_a_hand_computation():
    rows = _readings()
    table, per_layer = steering.summarise(rows, [3], [0.0, 1.0], n_boot=200, seed=0)
    cell = {(r["kind"], r["alpha"]): r for r in table}
    assert cell[("sense", 0.0)]["rate_toward_target"] == 0.5, "bare: each query counts once toward each sense"
    assert cell[("sense", 1.0)]["rate_toward_target"] == pytest.approx(6 / 8)
    # flip rate: among the 4 readings whose bare answer was not the target, the sense readings toward it:
    # (0,bat,1)=1, (0,club,0)=1, (1,bat,1)=1, (1,orange,1)=1 -> 4/4
    assert cell[("sense", 1.0)]["flip_rate"] == 1.0 and cell[("sense", 1.0)]["n_flippable"] == 4
    assert cell[("random", 1.0)]["rate_toward_target"] == 0.5 and cell[("random", 1.0)]["flip_rate"] == 0.0
    diff = per_layer["3"]["sense_minus_random"]["1"]
    assert diff["mean"] == pytest.approx(6 / 8 - 4 / 8)
    sense = sorted((r for r in rows if r["kind"] == "sense"), key=steering._order)
    rand = sorted((r for r in rows if r["kind"] == "random"), key=steering._order)
    d = [a["toward_target"] - b["toward_target"] for a, b in zip(sense, rand, strict=True)]
    ref = cluster_bootstrap(d, [[r["episode"] for r in sense], [r["query"] for r in sense]], n_boot=200, seed=0)
    assert (diff["ci_low"], diff["ci_high"]) == (ref.ci_low, ref.ci_high), "clusters: episodes x query words"
    assert per_layer["3"]["sense_minus_unrelated"]["1"]["mean"] == pytest.approx(6 / 8 - 4 / 8)


def test_planted_sense_direction_flips_the_answer_monotonically(planted):
    cfg = SteerConfig(extraction=ExtractionConfig(model="planted", layers="0,2", device="cpu"), shots=4,
                      episodes=24, queries_per_episode=2, alphas=[0, 0.25, 1, 4], bootstrap=100)
    before = hook_count(planted.model)
    result = steering.steer(cfg, loaded=planted, concept_set=small_concept_set())
    assert hook_count(planted.model) == before, "no hook left after the job"
    assert result.summary["random_weights"] is True
    for layer in ("0", "2"):
        cells = result.summary["per_layer"][layer]
        sense = [cells["sense"][a]["mean"] for a in ("0", "0.25", "1", "4")]
        assert sense[0] == 0.5
        assert all(b >= a - 1e-9 for a, b in zip(sense, sense[1:], strict=False)), f"layer {layer}: monotone {sense}"
        assert sense[-1] >= 0.95, f"layer {layer}: the planted direction decides the answer {sense}"
        rand = cells["random"]["4"]
        assert abs(rand["mean"] - 0.5) <= 0.3 and rand["mean"] < sense[-1] - 0.3, f"random: {rand}"
        assert cells["sense_minus_random"]["4"]["ci_low"] > 0


def test_no_hook_left_after_an_error_inside_the_job(planted, monkeypatch):
    def failing(model, tok, spans, layer, *, intervene=None, **kw):
        with intervene([0], [[1]]):
            assert hook_count(model) == 1
            raise RuntimeError("failed inside the steered forward")

    before = hook_count(planted.model)
    monkeypatch.setattr(steering, "read_prompts", failing)
    cfg = SteerConfig(extraction=ExtractionConfig(model="planted", layers="1", device="cpu"), shots=2, episodes=2,
                      alphas=[0, 1], bootstrap=10)
    with pytest.raises(RuntimeError, match="steered forward"):
        steering.steer(cfg, loaded=planted, concept_set=small_concept_set())
    assert hook_count(planted.model) == before


def test_cli_writes_the_run_folder(planted, tmp_path: Path):
    folder = Path(planted.ref.location)
    out = tmp_path / "run"
    assert main(["probe", "steer", "--model", str(folder), "--layers", "2", "--episodes", "3", "--shots", "2",
                 "--alphas", "0,2", "--bootstrap", "50", "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["readout"] == "in_prompt" and summary["layers"] == [2]
    lines = (out / "steering.csv").read_text().splitlines()
    assert lines[0].startswith("layer,kind,alpha,rate_toward_target,ci_low,ci_high,n")
    assert len(lines) == 1 + 3 * 2
    assert (out / "figures" / "dose_response.png").is_file() and (out / "config.yaml").is_file()
