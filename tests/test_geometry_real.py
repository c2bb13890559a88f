"""Geometry on real vectors (MiniLM, GloVe) and the `mcicl probe geometry` command: outputs, saved vectors, errors."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from mcicl.analysis.engine.measures import geometry_summary
from mcicl.app.cli import main  # in-process: the same handler, without another interpreter start
from mcicl.core.configuration import ConfigError
from mcicl.core.io import read_json
from mcicl.core.runs import RunFolder
from mcicl.core.vectors import LabelledVectors
from mcicl.probing.datasets import load_concept_set
from mcicl.probing.datasets.concepts import ConceptSet
from mcicl.probing.extract import ExtractionConfig
from mcicl.probing.geometry import GeometryConfig, _vocab_words, concept_pairs, run_geometry
from mcicl.probing.tiny import build_tiny_tokenizer
from tests.conftest import mcicl_cli

FAST = {"permutations": 100, "bootstrap": 200, "shuffles": 2}
EXTRACTION_FIELDS = {f.name for f in dataclasses.fields(ExtractionConfig)}


def _run(tmp_path, name, loaded, **overrides):

    extraction = {k: overrides.pop(k) for k in list(overrides) if k in EXTRACTION_FIELDS}
    cfg = GeometryConfig(extraction=ExtractionConfig(**extraction), **{**FAST, **overrides})
    run = RunFolder.create(tmp_path / name, "probe geometry")
    return run_geometry(cfg, run, loaded=loaded, quiet=True), run.path


def test_minilm_input_embeddings_within_exceeds_cross(tmp_path, minilm):
    summary, out = _run(tmp_path, "input", minilm, space="input", probes=False)
    w, c = summary["within_concept_cosine"], summary["cross_concept_cosine"]
    assert w["value"] > c["value"] + 0.05
    assert summary["within_minus_cross"]["p_value"] < 0.01 and w["p_value"] < 0.01
    assert summary["layer"] == "input" and summary["dim"] == 384 and summary["n_concepts"] >= 30
    assert set(summary["per_layer"]) == {"input"}


def test_minilm_last_layer_outputs_and_significance(tmp_path, minilm):
    summary, out = _run(tmp_path, "last", minilm, layers="-1")
    w, c = summary["within_concept_cosine"], summary["cross_concept_cosine"]
    assert summary["layer"] == "6" and w["value"] > c["value"]
    assert summary["within_minus_cross"]["p_value"] < 0.01 and w["p_value"] < 0.01
    for key in ("within_concept_cosine", "cross_concept_cosine", "concept_direction_abs_cos"):
        assert {"value", "null", "p_value", "ci_low", "ci_high"} <= set(summary[key])
    assert summary["concept_direction_abs_cos"]["isotropic"] == pytest.approx(math.sqrt(2 / (math.pi * 384)), rel=0.01)
    # Probes: concepts are linearly readable, the control task is not.
    assert summary["probe"]["accuracy"] > 0.5 > summary["probe"]["control_accuracy"]
    # Polysemy: the polysemous words are found near their senses' centroids more often than chance.
    poly = summary["polysemy"]
    assert poly["n_words"] >= 30 and poly["mean_top_k_recall"] > 3 * poly["chance_precision"]
    # Monosemous controls: the same measurement with their one concept, as the baseline sense cosine.
    controls = summary["controls"]
    assert controls["n_words"] >= 20 and controls["fraction_senses_significant"] > 0.5
    # Files for people and for downstream tools.
    for name in ("layers.csv", "per_concept.csv", "polysemy.csv", "probes.csv", "direction_abs_cos.csv",
                 "concepts.json", "config.yaml", "figures/geometry_layers.png", "figures/direction_heatmap.png"):
        assert (out / name).is_file(), name
    lv = LabelledVectors.load(out / "vectors" / "6.npz")
    pv = LabelledVectors.load(out / "vectors" / "6.polysemy.npz")
    assert lv.vectors.shape == (summary["n_words"], 384) and "animals" in set(lv.labels)
    assert all("|" in lab for lab in pv.labels) and "bat" in set(pv.words)
    concepts = read_json(out / "concepts.json")
    assert concepts["name"] == "builtin" and "animals" in concepts["concepts"]
    assert read_json(out / "summary.json")["within_concept_cosine"]["value"] == w["value"]


def test_whiten_unembed_on_an_encoder_without_lm_head_is_a_clear_error(tmp_path, minilm):
    with pytest.raises(ValueError, match="needs an unembedding.*accepted here: whiten=.none. or .vocab."):
        _run(tmp_path, "bad", minilm, space="input", whiten="unembed")


def _glove(glove_dir):
    vectors, bad_lines = {}, 0
    with open(glove_dir / "glove.6B.50d.top2445.txt", "rb") as fh:
        for raw in fh:
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:  # 5 lines hold Windows-1252 bytes: skipped (their words are not ours)
                bad_lines += 1
                continue
            word, *values = line.rstrip().split(" ")
            vectors[word] = np.array(values, dtype=np.float64)
    return vectors, bad_lines


def test_glove_within_exceeds_cross(glove_dir):

    glove, bad_lines = _glove(glove_dir)
    assert len(glove) > 2400 and bad_lines <= 5
    cs = load_concept_set("builtin")
    rows = [(w, c) for c, ws in cs.concepts.items() for w in ws if w in glove]
    labels = np.array([c for _, c in rows])
    names, counts = np.unique(labels, return_counts=True)
    keep = np.isin(labels, names[counts >= 3])
    X = np.stack([glove[w] for w, _ in rows])[keep]
    s = geometry_summary(X, labels[keep], n_permutations=100, n_bootstrap=200, n_shuffles=2, seed=0,
                         expensive_permutations=20, lda_permutations=5)
    assert len(set(labels[keep])) >= 5  # the 2,445-word GloVe file holds few of the built-in words
    assert s["within_concept_cosine"].value > s["cross_concept_cosine"].value
    assert s["within_minus_cross"].p_value < 0.01 and s["within_concept_cosine"].p_value < 0.01


def test_cli_on_saved_vectors_with_signs_and_polysemy(tmp_path):
    # The synthetic world's file format: features.npz (+ signs) and features.polysemy.npz.
    rng = np.random.default_rng(0)
    k, m, d = 5, 12, 16
    means = np.linalg.qr(rng.normal(size=(d, k)))[0].T
    signs = np.tile(np.repeat([1, -1], m // 2), k)
    X = (np.repeat(means, m, axis=0) + 0.3 * rng.normal(size=(k * m, d)) / 4) * signs[:, None]
    labels = np.repeat([f"concept{i}" for i in range(k)], m)
    LabelledVectors(X, [f"w{i}" for i in range(k * m)], labels, signs, {"layer": "features"}).save(
        tmp_path / "features.npz")
    P = means[[0, 1, 2]] + means[[1, 3, 4]]
    LabelledVectors(P, ["p0", "p1", "p2"], ["concept0|concept1", "concept1|concept3", "concept2|concept4"]).save(
        tmp_path / "features.polysemy.npz")
    out = tmp_path / "run"
    res = mcicl_cli("probe", "geometry", "--vectors", str(tmp_path / "features.npz"), "--out", str(out),
                    "--permutations", "100", "--bootstrap", "100", "--shuffles", "2", "--quiet")
    assert res.returncode == 0, res.stderr
    assert f"output is in {out}" in res.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["layer"] == "features" and summary["n_concepts"] == k
    assert summary["within_concept_cosine"]["value"] > 0.5 and summary["within_minus_cross"]["p_value"] < 0.01
    assert summary["polysemy"]["mean_recall"] == 1.0
    assert (out / "figures" / "geometry_layers.png").is_file()
    assert (out / "vectors" / "features.polysemy.npz").is_file()


def test_cli_bad_concept_file_is_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"animals": ["dog", "cat", "horse"], "tools": ["hammer"]}))
    res = mcicl_cli("probe", "geometry", "--concepts", str(bad), "--out", str(tmp_path / "r1"), "--quiet")
    assert res.returncode == 2
    assert "tools" in res.stderr and "at least 2" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "r1").exists()  # inputs are checked before the run folder is made

    assert main(["probe", "geometry", "--concepts", str(tmp_path / "missing.json"), "--out",
                 str(tmp_path / "r2"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "missing.json" in err and "accepted" in err


def test_config_errors_name_the_field():

    with pytest.raises(ConfigError, match="permutations=0"):
        GeometryConfig(permutations=0)
    with pytest.raises(ConfigError, match="whiten='pca'.*none, vocab, unembed"):
        GeometryConfig(whiten="pca")
    with pytest.raises(ConfigError, match="template"):
        GeometryConfig(extraction=ExtractionConfig(template="no slot"))


def test_nested_concept_sets_measure_each_word_in_its_most_specific_concept():

    cs = ConceptSet("nested", {"animal": ["dog", "cat", "eagle", "hawk", "fox"], "bird": ["eagle", "hawk"],
                               "pet": ["dog", "cat"]}, parents={"bird": "animal", "pet": "animal"})
    pairs, n_multi = concept_pairs(cs)
    assert dict(pairs) == {"dog": "pet", "cat": "pet", "eagle": "bird", "hawk": "bird", "fox": "animal"}
    assert n_multi == 4


def test_vocabulary_whitening_sample_is_whole_alphabetic_token_text(minilm):

    tokenizer = minilm.tokenizer
    words = _vocab_words(tokenizer, 200, seed=0)
    assert len(words) == 200 and words == _vocab_words(tokenizer, 200, seed=0)
    assert all(w.isalpha() and w == w.lower() and len(w) >= 3 for w in words)
    # Same sample as stripping WordPiece's markers by hand: "##" pieces left out, whole words kept.
    by_hand = sorted({t.lower() for t in tokenizer.get_vocab() if t.isalpha() and len(t) >= 3})
    rng = np.random.default_rng(0)
    assert words == [by_hand[i] for i in sorted(rng.choice(len(by_hand), size=200, replace=False))]
    bpe = _vocab_words(build_tiny_tokenizer(), 50, seed=0)  # byte-level BPE: "Ġcat" -> "cat"
    assert "animal" in _vocab_words(build_tiny_tokenizer(), 10_000, seed=0)
    assert bpe and all(w.isalpha() for w in bpe)
