"""Extraction: batched == single == bare forward (MiniLM, tiny random-weight GPT-2 and Llama), spaces, pooling,
the report of words left out, the cache, and the ``mcicl probe extract`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from transformers import RobertaConfig, RobertaModel, T5Config, T5Model

import mcicl.probing.extract as extract_module
import mcicl.probing.forward as forward
from mcicl.app.cli import main
from mcicl.core.configuration import ConfigError, from_dict
from mcicl.core.io import read_json
from mcicl.core.vectors import LabelledVectors
from mcicl.probing.extract import (
    Extraction,
    ExtractionConfig,
    extract,
    extract_words,
    prepare_words,
    resolve_layers,
)
from mcicl.probing.extraction_job import read_words_file
from mcicl.probing.models import ModelNotFoundError, load_model
from mcicl.probing.tiny import build_tiny_model, build_tiny_tokenizer
from tests.conftest import mcicl_cli

TOL = {"rtol": 1e-5, "atol": 1e-5}
# Single-token and multi-token words, a two-word phrase, an accent the tokenizer normalises.
WORDS = ["dog", "hippopotamus", "New York", "cat", "Zürich", "xylophone", "bat"]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Tiny random-weight GPT-2 and Llama (causal LMs, for left padding and unembedding rows)."""

    root = tmp_path_factory.mktemp("tiny")
    return {arch: load_model(str(build_tiny_model(arch, root / arch))) for arch in ("gpt2", "llama")}


def bare_pooled(model, tokenizer, text: str, positions: list[int]) -> list[np.ndarray]:
    """Every hidden state of an unpadded, unbatched plain ``model(...)`` call, mean over ``positions``."""
    enc = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc, output_hidden_states=True).hidden_states
    return [h[0, positions].mean(0).numpy() for h in hidden]


# ---- config and layer specs -------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value", [("space", "logits"), ("pooling", "max"), ("template", "A word."),
                                         ("template", "{word} {word}"), ("batch_size", 0), ("layers", "1,x"),
                                         ("dtype", "int8")])
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ConfigError) as err:
        from_dict(ExtractionConfig, {field: value})
    assert err.value.field == field and repr(value) in str(err.value)


def test_layer_specs_resolve_against_the_model_depth():
    assert resolve_layers("all", 6) == [0, 1, 2, 3, 4, 5, 6]
    assert resolve_layers("last", 6) == [6]
    assert resolve_layers("0, -1, 3, 6", 6) == [0, 6, 3]  # -1 and 6 are the same layer: kept once
    assert resolve_layers([1, 2], 6) == [1, 2]
    with pytest.raises(ConfigError, match="from 0 to 6"):
        resolve_layers("7", 6)


# ---- padding safety and equality with a bare forward pass -------------------------------------------------

@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_pool_vectors_batched_equals_single(tiny_models, arch, pooling):
    """The public seam itself (probing.forward.pool_vectors): items of different lengths padded into one batch
    (left padding with position ids for these causal LMs) get the vectors each gets alone."""
    loaded = tiny_models[arch]
    model, tokenizer = loaded.model, loaded.tokenizer
    _, items, _ = prepare_words(tokenizer, WORDS, "A {word}.")
    side, pad = forward.padding_for(model), forward.padding_token_id(tokenizer)
    assert side == "left" and extract_module.pool_vectors is forward.pool_vectors
    layers = list(range(forward.model_body(model).config.num_hidden_layers + 1))
    batched = forward.pool_vectors(model, items, "hidden", layers, pooling, len(items), side, pad, False)
    for i, item in enumerate(items):
        alone = forward.pool_vectors(model, [item], "hidden", layers, pooling, 1, side, pad, False)
        for layer in batched:
            np.testing.assert_allclose(batched[layer][i], alone[layer][0], **TOL)
    rows = forward.pool_vectors(model, items, "input", [], pooling, 2, "none", pad, False)["input"]
    assert rows.shape == (len(items), model.config.hidden_size)


@pytest.mark.parametrize("template,offset", [("{word}", 1), ("A {word}.", 2)])
def test_minilm_batched_equals_single_and_bare_forward(minilm, template, offset):
    model, tokenizer = minilm.model, minilm.tokenizer
    batched = extract(model, tokenizer, WORDS, template=template, batch_size=3, show_progress=False)
    assert batched.words == WORDS and batched.layers == [str(i) for i in range(7)]
    assert batched.meta["padding_side"] == "right"
    assert batched.meta["n_tokens"][WORDS.index("hippopotamus")] == 4  # hip ##pop ##ota ##mus
    for i, word in enumerate(WORDS):
        alone = extract(model, tokenizer, [word], template=template, show_progress=False)
        # Independent of the offset logic: [CLS] (+ "a") precede the word, and the template tail + [SEP] follow.
        n_word = len(tokenizer(word, add_special_tokens=False)["input_ids"])
        positions = list(range(offset, offset + n_word))
        bare = bare_pooled(model, tokenizer, template.replace("{word}", word), positions)
        for layer in batched.layers:
            np.testing.assert_allclose(batched.vectors[layer][i], alone.vectors[layer][0], **TOL)
            np.testing.assert_allclose(batched.vectors[layer][i], bare[int(layer)], **TOL)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_causal_lm_left_padding_equals_single_and_bare_forward(tiny_models, arch):
    _loaded = tiny_models[arch]
    model, tokenizer = _loaded.model, _loaded.tokenizer
    template = "A {word}."
    batched = extract(model, tokenizer, WORDS, template=template, batch_size=4, show_progress=False)
    assert batched.meta["padding_side"] == "left" and batched.meta["random_weights"]
    right = extract(model, tokenizer, WORDS, template=template, batch_size=4, padding_side="right",
                    show_progress=False)
    for i, word in enumerate(WORDS):
        # Bare forward of the full LM (with its head) on the unpadded text; positions from token counts.
        text = template.replace("{word}", word)
        ids = tokenizer(text)["input_ids"]
        n_prefix = len(tokenizer("A", add_special_tokens=False)["input_ids"])
        # The word's tokens lie between "A" and the final "."; a lone leading space token "Ġ" (the tiny BPE has
        # no merge for " hippopotamus") is not part of the word (a space inside "New York" is).
        positions = list(range(n_prefix, len(ids) - 1))
        if tokenizer.convert_ids_to_tokens(ids[positions[0]]) == "Ġ":
            positions = positions[1:]
        assert len(positions) == batched.meta["n_tokens"][i]
        bare = bare_pooled(model, tokenizer, text, positions)
        for layer in batched.layers:
            np.testing.assert_allclose(batched.vectors[layer][i], bare[int(layer)], **TOL)
            np.testing.assert_allclose(right.vectors[layer][i], bare[int(layer)], **TOL)


def test_naive_left_padding_without_position_ids_would_fail(tiny_models):
    """The control that shows the equality test can fail: GPT-2 with left padding and default positions."""
    _loaded = tiny_models["gpt2"]
    model, tokenizer = _loaded.model, _loaded.tokenizer
    tokenizer.padding_side = "left"
    try:
        padded = tokenizer(["A hippopotamus.", "A cat."], return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = "right"
    with torch.no_grad():
        naive = model(**padded, output_hidden_states=True).hidden_states[-1][1, -2]
        alone = model(**tokenizer(["A cat."], return_tensors="pt"), output_hidden_states=True).hidden_states[-1][0, -2]
    ours = extract(model, tokenizer, ["hippopotamus", "cat"], template="A {word}.", layers="last",
                   show_progress=False).vectors[str(model.config.n_layer)][1]
    assert (naive - alone).abs().max() > 1e-2
    np.testing.assert_allclose(ours, alone.numpy(), **TOL)


# ---- spaces, pooling, layers -----------------------------------------------------------------------------

def test_input_and_unembedding_rows(minilm, tiny_models):
    model, tokenizer = minilm.model, minilm.tokenizer
    ex = extract(model, tokenizer, ["hippopotamus", "dog"], space="input", show_progress=False)
    ids = tokenizer("hippopotamus", add_special_tokens=False)["input_ids"]
    rows = model.get_input_embeddings().weight.detach().numpy()
    assert ex.layers == ["input"]
    np.testing.assert_allclose(ex.vectors["input"][0], rows[ids].mean(0), **TOL)
    with pytest.raises(ValueError, match="no LM head"):
        extract(model, tokenizer, ["dog"], space="unembed")
    _loaded = tiny_models["llama"]  # untied: unembedding rows differ from input rows
    lm, tok = _loaded.model, _loaded.tokenizer
    un = extract(lm, tok, ["hippopotamus"], space="unembed", pooling="last", show_progress=False)
    last_id = tok("hippopotamus", add_special_tokens=False)["input_ids"][-1]
    np.testing.assert_allclose(un.vectors["unembed"][0], lm.lm_head.weight[last_id].detach().numpy(), **TOL)


def test_last_pooling_and_layer_selection(minilm):
    model, tokenizer = minilm.model, minilm.tokenizer
    ex = extract(model, tokenizer, ["hippopotamus"], layers="0,-1", pooling="last", show_progress=False)
    assert ex.layers == ["0", "6"]
    bare = tokenizer("hippopotamus", return_tensors="pt")
    with torch.no_grad():
        hidden = model(**bare, output_hidden_states=True).hidden_states
    np.testing.assert_allclose(ex.vectors["6"][0], hidden[6][0, 4].numpy(), **TOL)  # [CLS] hip ##pop ##ota ##mus
    np.testing.assert_allclose(ex.vectors["0"][0], hidden[0][0, 4].numpy(), **TOL)


# ---- words left out are reported ------------------------------------------------------------------------

def test_report_of_empty_unrepresentable_and_duplicate_words(minilm):
    tokenizer = minilm.tokenizer
    words = ["dog", "", "  ", "☃", "\x01", "dog", "cat", "dog ☃"]
    kept, items, report = prepare_words(tokenizer, words, "A {word}.")
    assert kept == ["dog", "cat", "dog ☃"] and len(items) == 3
    assert report["empty"] == ["", "  "]
    assert report["unrepresentable"] == ["☃", "\x01"]  # all-[UNK]; dropped by the normaliser
    assert report["duplicates"] == ["dog"]
    assert report["partially_unknown"] == ["dog ☃"]  # kept, but flagged
    with pytest.raises(ValueError, match="must be strings"):
        prepare_words(tokenizer, ["dog", 3])


def test_labelled_rows_follow_labels_and_pairs():
    ex = Extraction(["bat", "dog"], ["3"], {"3": np.eye(2, dtype=np.float32)}, {}, {"model": "m", "n_tokens": [1, 1]})
    lv = ex.labelled("3", [("bat", "animal"), ("bat", "sport"), ("dog", "animal"), ("ghost", "x")])
    assert list(lv.words) == ["bat", "bat", "dog"] and list(lv.labels) == ["animal", "sport", "animal"]
    np.testing.assert_array_equal(lv.vectors[1], [1, 0])
    assert lv.meta["layer"] == "3" and "n_tokens" not in lv.meta
    assert list(ex.labelled(3, {"dog": "animal"}).labels) == ["", "animal"]
    with pytest.raises(LookupError, match="extracted layers: 3"):
        ex.labelled("5")


# ---- cache, loading errors --------------------------------------------------------------------------------

def test_cache_second_run_reads_back_and_interrupted_run_resumes(tiny_models, tmp_path, monkeypatch):

    loaded = tiny_models["gpt2"]
    calls = []
    real = extract_module.pool_vectors
    monkeypatch.setattr(extract_module, "pool_vectors", lambda m, items, *a, **k: calls.append(len(items)) or
                        real(m, items, *a, **k))
    words = [f"{w}{i}" for i in range(12) for w in ("dog", "cat")]  # 24 words, 3 chunks of 8 at batch size 1
    config = ExtractionConfig(model="unused", layers="all", batch_size=1, cache_dir=str(tmp_path / "cache"))
    first = extract_words(words, config, loaded=loaded, show_progress=False)
    assert sorted(calls) == [8, 8, 8]
    calls.clear()
    second = extract_words(words, config, loaded=loaded, show_progress=False)
    assert calls == []  # all read back
    for layer in first.layers:
        np.testing.assert_array_equal(first.vectors[layer], second.vectors[layer])
    # Interrupt: one chunk's last layer never got written -> only that chunk is recomputed.
    victim = sorted((tmp_path / "cache").glob("*/*/2.npy"))[0]
    victim.unlink()
    third = extract_words(words, config, loaded=loaded, show_progress=False)
    assert calls == [8]
    np.testing.assert_allclose(third.vectors["2"], first.vectors["2"], **TOL)
    # Another template is another key: nothing read back.
    calls.clear()
    extract_words(words[:3], ExtractionConfig(template="A {word}.", batch_size=1, cache_dir=config.cache_dir),
                  loaded=loaded, show_progress=False)
    assert calls == [3]
    no_cache = extract(loaded.model, loaded.tokenizer, words, batch_size=5, show_progress=False)
    np.testing.assert_allclose(no_cache.vectors["2"], first.vectors["2"], **TOL)


def test_missing_model_is_a_clear_error(tmp_path):

    with pytest.raises(ModelNotFoundError, match="does not exist"):
        extract_words(["dog"], ExtractionConfig(model=str(tmp_path / "nope"), device="cpu"))
    with pytest.raises(ValueError, match="device='tpu'"):
        extract_words(["dog"], ExtractionConfig(device="tpu"))


# ---- the command ---------------------------------------------------------------------------------------

def test_probe_extract_command_writes_vectors_words_labels_and_report(tiny_models, tmp_path):

    folder = tiny_models["gpt2"].model.config._name_or_path
    words = tmp_path / "words.txt"
    words.write_text("dog\n\ncat\ndog\nhippopotamus\n\n", encoding="utf-8")
    assert read_words_file(words) == ["dog", "", "cat", "dog", "hippopotamus"]
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_words_file(tmp_path / "bad.txt")
    out = tmp_path / "run"
    res = mcicl_cli("probe", "extract", "--model", folder, "--words", str(words), "--layers", "0,-1",
                    "--template", "A {word}.", "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    assert f"output is in {out}" in res.stdout
    summary = read_json(out / "summary.json")
    assert summary["layers"] == ["0", "2"] and summary["random_weights"]
    assert summary["report"]["empty"] == [""] and summary["report"]["duplicates"] == ["dog"]
    assert summary["n_words_represented"] == 3 and summary["pooling"] == "mean"
    assert (out / "words.txt").read_text().split() == ["dog", "cat", "hippopotamus"]
    per_layer = LabelledVectors.load(out / "vectors" / "2.npz")
    main = LabelledVectors.load(out / "vectors.npz")
    assert per_layer.vectors.shape == (3, 64) and main.meta["layer"] == "2"
    np.testing.assert_array_equal(per_layer.vectors, main.vectors)
    assert (out / "config.yaml").is_file() and (out / "figures" / "extraction_overview.png").is_file()


def test_probe_extract_with_a_concept_file_labels_every_word_and_sense(tiny_models, tmp_path):


    folder = tiny_models["llama"].model.config._name_or_path
    concepts = tmp_path / "concepts.json"
    concepts.write_text(json.dumps({"animal": ["dog", "cat", "bat"], "sport": ["bat", "ball", "net"],
                                    "fruit": ["apple", "orange", "pear"], "company": ["google", "apple", "ibm"]}))
    out = tmp_path / "run"
    assert main(["probe", "extract", "--model", folder, "--concepts", str(concepts), "--space", "unembed",
                 "--out", str(out), "--quiet"]) == 0
    lv = LabelledVectors.load(out / "vectors" / "unembed.npz")
    rows = list(zip(lv.words.tolist(), lv.labels.tolist(), strict=True))
    assert ("bat", "animal") in rows and ("bat", "sport") in rows and ("apple", "company") in rows
    assert len(rows) == 12 and len(set(lv.words.tolist())) == 10  # a shared word: one vector, a row per label
    bats = [i for i, (w, _) in enumerate(rows) if w == "bat"]
    np.testing.assert_array_equal(lv.vectors[bats[0]], lv.vectors[bats[1]])
    summary = read_json(out / "summary.json")
    assert summary["layers"] == ["unembed"] and summary["n_concepts"] == 4
    assert summary["report"]["duplicates"] == []  # a word under two concepts is not a duplicate
    # With a polysemy file the polysemous words leave the concept lists but are still extracted (label "").
    polysemy = tmp_path / "poly.json"
    polysemy.write_text(json.dumps({"bat": ["animal", "sport"], "apple": ["fruit", "company"]}))
    out2 = tmp_path / "run2"
    assert main(["probe", "extract", "--model", folder, "--concepts", str(concepts), "--polysemy", str(polysemy),
                 "--space", "input", "--out", str(out2), "--quiet"]) == 0
    lv2 = LabelledVectors.load(out2 / "vectors.npz")
    assert {w: lab for w, lab in zip(lv2.words.tolist(), lv2.labels.tolist(), strict=True)}["bat"] == ""
    assert read_json(out2 / "summary.json")["polysemy"]["bat"] == ["animal", "sport"]
    assert main(["probe", "extract", "--model", folder, "--polysemy", str(polysemy), "--words", str(concepts),
                 "--out", str(tmp_path / "bad"), "--quiet"]) == 2
    assert not (tmp_path / "bad").exists()


def test_encoder_decoder_uses_its_encoder_padding_safely():
    """A tiny random-weight T5: hidden states are the encoder's; batched == alone == bare encoder forward."""


    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(0)
    model = T5Model(T5Config(vocab_size=len(tokenizer), d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=16,
                             pad_token_id=tokenizer.pad_token_id,
                             decoder_start_token_id=tokenizer.pad_token_id)).eval()
    batched = extract(model, tokenizer, ["cat", "hippopotamus"], batch_size=2, show_progress=False)
    assert batched.layers == ["0", "1", "2"] and batched.meta["padding_side"] == "right"
    enc = tokenizer("hippopotamus", return_tensors="pt")
    with torch.no_grad():
        hidden = model.encoder(**enc, output_hidden_states=True).hidden_states
    for layer in batched.layers:  # "{word}" alone, no special tokens: every token is the word's
        np.testing.assert_allclose(batched.vectors[layer][1], hidden[int(layer)][0].mean(0).numpy(), **TOL)


def test_roberta_right_padding_keeps_its_own_position_numbering(tmp_path):
    """A tiny random-weight RoBERTa numbers positions from padding_idx + 1: batched == alone == bare forward."""


    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(0)
    RobertaModel(RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=64,
                               pad_token_id=tokenizer.pad_token_id)).eval().save_pretrained(tmp_path / "roberta")
    tokenizer.save_pretrained(tmp_path / "roberta")
    loaded = load_model(str(tmp_path / "roberta"))
    model, tokenizer = loaded.model, loaded.tokenizer
    words = ["cat", "hippopotamus", "New York"]
    batched = extract(model, tokenizer, words, batch_size=3, show_progress=False)
    assert batched.meta["padding_side"] == "right"
    for i, word in enumerate(words):  # "{word}" alone, no special tokens: every token is the word's
        alone = extract(model, tokenizer, [word], show_progress=False)
        n = len(tokenizer(word)["input_ids"])
        bare = bare_pooled(model, tokenizer, word, list(range(n)))
        for layer in batched.layers:
            np.testing.assert_allclose(batched.vectors[layer][i], alone.vectors[layer][0], **TOL)
            np.testing.assert_allclose(batched.vectors[layer][i], bare[int(layer)], **TOL)


def test_cache_misses_when_a_deep_weight_changes_in_memory(tmp_path, monkeypatch):

    loaded = load_model(str(build_tiny_model("bert", tmp_path / "bert", hidden=32, heads=2)))
    calls = []
    real = extract_module.pool_vectors
    monkeypatch.setattr(extract_module, "pool_vectors", lambda m, items, *a, **k: calls.append(len(items)) or
                        real(m, items, *a, **k))
    config = ExtractionConfig(model="unused", layers="last", cache_dir=str(tmp_path / "cache"))
    first = extract_words(["dog", "cat"], config, loaded=loaded, show_progress=False)
    extract_words(["dog", "cat"], config, loaded=loaded, show_progress=False)
    assert calls == [2]  # read back
    with torch.no_grad():  # the last layer only: the input embeddings stay as they were
        loaded.model.encoder.layer[-1].output.dense.weight.mul_(2.0)
    second = extract_words(["dog", "cat"], config, loaded=loaded, show_progress=False)
    assert calls == [2, 2]
    assert np.abs(second.vectors["2"] - first.vectors["2"]).max() > 1e-3


def test_words_from_config_and_concepts_from_the_command_line_conflict(tmp_path, capsys):

    (tmp_path / "words.txt").write_text("dog\ncat\n", encoding="utf-8")
    (tmp_path / "config.yaml").write_text(f"words: {tmp_path / 'words.txt'}\n", encoding="utf-8")
    assert main(["probe", "extract", "--model", "default", "--config", str(tmp_path / "config.yaml"),
                 "--concepts", "builtin", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "from --config" in err and "concepts 'builtin' (from the command line)" in err
    assert not (tmp_path / "run").exists()


# ---- the job: config file, options, precedence ------------------------------------------------------------

def test_probe_extract_config_file_survives_untyped_options_and_typed_ones_win(tmp_path, capsys):
    (tmp_path / "run.yaml").write_text("words: w.txt\nextraction:\n  layers: last\n  batch_size: 8\n",
                                       encoding="utf-8")
    assert main(["probe", "extract", "--config", str(tmp_path / "run.yaml"), "--batch-size", "4",
                 "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["words"] == "w.txt" and printed["extraction"]["layers"] == "last"  # from the file
    assert printed["extraction"]["batch_size"] == 4  # typed: overrides the file
    # The flat keys the command read before it was a job still load (moved into extraction:, with a warning).
    (tmp_path / "flat.yaml").write_text("words: w.txt\nlayers: last\n", encoding="utf-8")
    with pytest.warns(DeprecationWarning, match="extraction.layers"):
        assert main(["probe", "extract", "--config", str(tmp_path / "flat.yaml"), "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["extraction"]["layers"] == "last"


@pytest.mark.parametrize("argv,named", [
    (["--batch-size", "many"], "--batch-size 'many'"),
    (["--config", "{cfg}"], "extraction.batch_size='lots'"),
])
def test_probe_extract_wrong_types_give_one_error_naming_them(tmp_path, capsys, argv, named):
    (tmp_path / "bad.yaml").write_text("extraction:\n  batch_size: lots\n", encoding="utf-8")
    argv = [a.replace("{cfg}", str(tmp_path / "bad.yaml")) for a in argv]
    assert main(["probe", "extract", *argv, "--print-config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0]
