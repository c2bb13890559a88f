"""A damaged extraction cache never changes the numbers: NaN, wrong-width, wrong-shape, unreadable or
mislabelled chunks are recomputed with a warning naming the file."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from mcicl.probing.cache import ExtractionCache

WORDS = ["dog", "cat", "horse"]


@pytest.fixture
def cache(tmp_path):
    c = ExtractionCache(tmp_path / "cache", {"model": "m"})
    c.save(WORDS, {"0": np.ones((3, 4), np.float32), "1": np.full((3, 4), 2.0, np.float32)})
    return c


def chunk_file(cache, layer="1"):
    return cache.folder / cache.chunk_key(WORDS) / f"{layer}.npy"


def test_a_clean_chunk_reads_back(cache):
    got = cache.load(WORDS, ["0", "1"])
    np.testing.assert_array_equal(got["1"], np.full((3, 4), 2.0))


@pytest.mark.parametrize(("bad", "says"), [
    (np.array([[1.0, np.nan, 1, 1]] * 3, np.float32), "NaN"),
    (np.ones((3, 5), np.float32), "width 5"),
    (np.ones((2, 4), np.float32), "shape (2, 4)"),
    (np.ones(12, np.float32), "shape (12,)"),
])
def test_a_bad_chunk_is_recomputed_with_a_warning(cache, bad, says, caplog):
    np.save(chunk_file(cache), bad)
    with caplog.at_level(logging.WARNING, logger="mcicl"):
        assert cache.load(WORDS, ["0", "1"]) is None
    assert says in caplog.text and str(chunk_file(cache)) in caplog.text


def test_a_truncated_chunk_is_recomputed(cache, caplog):
    chunk_file(cache).write_bytes(chunk_file(cache).read_bytes()[:40])
    with caplog.at_level(logging.WARNING, logger="mcicl"):
        assert cache.load(WORDS, ["1"]) is None
    assert "unreadable" in caplog.text


def test_a_chunk_holding_other_words_is_recomputed(cache, caplog):
    (cache.folder / cache.chunk_key(WORDS) / "words.json").write_text(json.dumps(["dog", "cat", "cow"]))
    with caplog.at_level(logging.WARNING, logger="mcicl"):
        assert cache.load(WORDS, ["1"]) is None
    assert "other words" in caplog.text


@pytest.mark.slow
def test_extraction_with_a_poisoned_cache_equals_a_clean_run(tmp_path):
    """End to end on the real MiniLM: poison one cached chunk with NaN; the second run recomputes it."""
    from mcicl.probing.extract import ExtractionConfig, extract_words

    words = ["dog", "cat", "apple", "pear", "river", "bank"]
    # The clean run batches as the cached one does: padding to another length moves float32 sums by ~1e-6.
    clean = extract_words(words, ExtractionConfig(layers="0,-1", device="cpu", batch_size=2), show_progress=False)
    config = ExtractionConfig(layers="0,-1", device="cpu", cache_dir=str(tmp_path / "cache"), batch_size=2)
    first = extract_words(words, config, show_progress=False)
    for path in sorted((tmp_path / "cache").glob("*/*/*.npy"))[:2]:
        arr = np.load(path)
        arr[0, 0] = np.nan
        np.save(path, arr)
    second = extract_words(words, config, show_progress=False)
    for layer in clean.vectors:
        np.testing.assert_allclose(second.vectors[layer], clean.vectors[layer], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(first.vectors[layer], clean.vectors[layer], rtol=1e-5, atol=1e-6)
        assert np.isfinite(second.vectors[layer]).all()
