"""Contextual extraction and geometry on the real MiniLM (all 7 hidden states), and ``mcicl probe contexts``."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from mcicl.app.cli import main
from mcicl.probing import contextual
from mcicl.probing.contexts import ContextSet, builtin_contexts, make_context
from mcicl.probing.contextual import ContextsConfig, extract_contexts, measure_contexts
from mcicl.probing.datasets import builtin_concepts

SENTENCES = [("bat", "animals", "The bat flew out of the cave at dusk."),
             ("bat", "sports_equipment", "He swung the bat."),
             ("jaguar", "animals", "A jaguar is a large spotted cat that swims well in the rivers of the forest."),
             ("bat", "animals", "The bat saw a [bat].")]


def _bare(lm, text: str, start: int, word: str) -> list[np.ndarray]:
    """The word's mean hidden state per layer from a bare forward pass; its tokens found from the prefix."""
    tok = lm.tokenizer
    first = 1 + len(tok.tokenize(text[:start]))           # after [CLS] and the prefix's tokens
    n = len(tok.tokenize(text[start:start + len(word)]))
    enc = tok(text, return_tensors="pt")
    assert tok.convert_tokens_to_string(tok.convert_ids_to_tokens(enc["input_ids"][0, first:first + n])) == \
        word.lower()
    with torch.inference_mode():
        hidden = lm.model(**enc, output_hidden_states=True).hidden_states
    return [h[0, first:first + n].mean(0).numpy() for h in hidden]


@pytest.fixture(scope="module")
def contexts():
    return [make_context(w, s, t) for w, s, t in SENTENCES]


def test_contextual_vector_equals_a_bare_forward_pass_batched_or_single(minilm, contexts):
    batched = extract_contexts(minilm.model, minilm.tokenizer, contexts, batch_size=4, show_progress=False)
    single = extract_contexts(minilm.model, minilm.tokenizer, contexts, batch_size=1, show_progress=False)
    assert batched.layers == [str(i) for i in range(7)]
    for k, c in enumerate(contexts):
        bare = _bare(minilm, c.context, c.start, c.word)
        for layer in batched.layers:
            assert np.allclose(batched.vectors[layer][k], bare[int(layer)], atol=1e-5), (c.context, layer)
            assert np.allclose(single.vectors[layer][k], batched.vectors[layer][k], atol=1e-5)
    assert batched.n_tokens[2] == len(minilm.tokenizer.tokenize("jaguar"))
    # The marked second "bat" is read, not the first: a different vector from the first occurrence's.
    first = _bare(minilm, contexts[3].context, 4, "bat")
    assert not np.allclose(batched.vectors["6"][3], first[6], atol=1e-3)


def test_cache_reads_back_without_computing(minilm, contexts, tmp_path, monkeypatch):
    a = extract_contexts(minilm.model, minilm.tokenizer, contexts, layers="0,6", cache_dir=str(tmp_path),
                         show_progress=False)

    def refuse(*args, **kwargs):
        raise AssertionError("computed although cached")

    monkeypatch.setattr(contextual, "pool_vectors", refuse)
    b = extract_contexts(minilm.model, minilm.tokenizer, contexts, layers="0,6", cache_dir=str(tmp_path),
                         show_progress=False)
    for layer in ("0", "6"):
        assert np.array_equal(a.vectors[layer], b.vectors[layer])
    with pytest.raises(AssertionError, match="computed although cached"):  # other contexts are not in the cache
        extract_contexts(minilm.model, minilm.tokenizer, contexts[:2], layers="0,6", cache_dir=str(tmp_path),
                         show_progress=False)


@pytest.fixture(scope="module")
def measured(minilm):
    return measure_contexts(ContextsConfig(permutations=300, bootstrap=300), loaded=minilm, quiet=True)


def test_minilm_sense_accuracy_beats_out_of_context_baseline(measured):
    """The issue's claim: at the best layer (max over layers, the null and the bootstrap take the same max),
    in-context sense accuracy exceeds the out-of-context baseline, its 95% interval above chance."""
    best = measured.polysemous.best
    acc, base = best["sense_accuracy"], best["baseline_accuracy"]
    assert acc.value > base.value
    assert acc.ci_low > acc.null_mean and acc.ci_low > base.value
    assert acc.p_value < 0.01
    assert measured.info["n_polysemous_words"] == 69 and acc.n == 69


def test_minilm_embedding_layer_is_the_control_that_fails(measured):
    """Hidden state 0 is token + position embeddings: no context, so no sense signal and no shift."""
    layer0 = measured.polysemous.per_layer["0"]
    assert layer0["sense_accuracy"].p_value > 0.05
    assert layer0["sense_accuracy"].ci_low <= layer0["sense_accuracy"].null_mean
    assert abs(layer0["shift"].value) < 0.01 and layer0["pair_auc"].p_value > 0.05
    top = measured.polysemous.per_layer[measured.polysemous.best_layer]
    assert top["pair_auc"].ci_low > 0.6 and top["shift"].ci_low > 0


def test_probe_contexts_cli_writes_a_run_folder(tmp_path):
    cs = builtin_contexts()
    subset = ContextSet("s", [c for c in cs.contexts if c.word in ("bat", "mouse", "bass", "toucan", "argon")])
    path = tmp_path / "ctx.csv"

    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["word", "sense", "context"])
        writer.writeheader()
        writer.writerows({"word": c.word, "sense": c.sense, "context": c.context} for c in subset.contexts)
    # A small concept set holding the senses, so the CLI extracts few concept words.
    concepts = tmp_path / "concepts.json"
    full = builtin_concepts()
    concepts.write_text(json.dumps({c: full.concepts[c][:6] for c in (
        "animals", "sports_equipment", "computer_hardware", "fish", "musical_instruments", "birds",
        "chemical_elements")}))
    out = tmp_path / "run"
    assert main(["probe", "contexts", "--contexts", str(path), "--concepts", str(concepts), "--layers", "0,-1",
                 "--permutations", "50",
                 "--bootstrap", "50", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_polysemous_words"] == 3 and summary["n_control_words"] == 2
    assert set(summary["per_layer"]["polysemous"]["per_layer"]) == {"0", "6"}
    assert summary["best_layer"] in ("0", "6") and set(summary["controls"]) == {"sense_accuracy",
                                                                                 "baseline_accuracy", "shift"}
    rows = (out / "context_layers.csv").read_text().splitlines()
    assert rows[0].startswith("layer,group,stat,value") and len(rows) == 1 + 2 * 4 + 2 * 3
    assert (out / "figures" / "context_layers.png").is_file() and (out / "figures" / "context_pca.png").is_file()
    assert (out / "vectors" / "contexts_6.npz").is_file()
    bad = tmp_path / "bad.csv"
    bad.write_text("word,sense,context\nbat,colours,The bat flew.\n")
    assert main(["probe", "contexts", "--contexts", str(bad), "--out", str(tmp_path / "no"), "--quiet"]) != 0
    assert not (tmp_path / "no").exists()
