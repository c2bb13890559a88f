"""Property-based checks (hypothesis): generated concept files, word lists and configs never give a traceback,
and every concept or word given is either used or listed as dropped with a reason (issue 15, item 6).

Bounded: a few examples each, no deadline; CLI commands run in-process through ``main``.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from mcicl.app.cli import main
from mcicl.core.configuration import ConfigError, load_config
from mcicl.core.io import read_json
from mcicl.core.vectors import LabelledVectors
from mcicl.probing.datasets import load_concept_set
from mcicl.probing.datasets.concepts import ConceptSetError
from mcicl.probing.extraction_job import read_words_file
from mcicl.probing.tiny import build_tiny_model
from mcicl.synthetic.config import SyntheticConfig

CORPUS = "cat dog horse cow bread rice milk tea red blue green car bus"
WORDS = st.sampled_from(CORPUS.split() + ["", " ", "zq", "Cat ", "xylophonic"])
CONCEPTS = st.sampled_from(["animals", "food", "colours", "vehicles", "pets"])
# A JSON object as key/value pairs, so a key may repeat (what json.dumps of a dict can never produce).
ENTRIES = st.lists(st.tuples(CONCEPTS, st.one_of(st.lists(WORDS, max_size=6), st.just("cat"), st.just(3))),
                   min_size=1, max_size=5)
FAST = ["--permutations", "5", "--bootstrap", "0", "--shuffles", "0", "--no-probes", "--quiet"]
SETTINGS = settings(max_examples=5, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def json_object(entries: list[tuple[str, object]]) -> str:
    return "{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in entries) + "}"


class Records(logging.Handler):
    """Collects the 'mcicl' logger's messages while a check runs."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def __enter__(self) -> Records:
        logger = logging.getLogger("mcicl")
        self.before = (list(logger.handlers), logger.level, logger.propagate)
        logger.handlers[:] = [self]
        logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        logger = logging.getLogger("mcicl")
        logger.handlers[:], level, logger.propagate = self.before
        logger.setLevel(level)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return build_tiny_model("bert", tmp_path_factory.mktemp("tiny") / "bert", corpus=[CORPUS])


@settings(SETTINGS, max_examples=60)
@given(entries=ENTRIES)
@example(entries=[("animals", ["cat", "dog", "cat", " ", ""]), ("food", ["bread", "rice"])])  # repeats, empties
@example(entries=[("animals", ["cat", "dog"]), ("animals", ["horse", "cow"])])  # a repeated key
def test_concept_files_load_fully_or_fail_with_a_message(tmp_path, entries):
    path = tmp_path / "concepts.json"
    path.write_text(json_object(entries))
    keys = [k for k, _ in entries]
    with Records() as records:
        try:
            cs = load_concept_set(path)
        except (ConceptSetError, FileNotFoundError) as err:
            assert str(path) in str(err) or "concept" in str(err)
            if len(set(keys)) < len(keys):  # a repeated key is always the reason named first
                assert "more than once" in str(err)
            return
    assert len(set(keys)) == len(keys), "a repeated JSON key was silently merged"
    assert list(cs.concepts) == keys
    for concept, words in entries:
        kept = list(dict.fromkeys(w.strip() for w in words if w.strip()))
        assert cs.concepts[concept] == kept
        # Every word given but not kept as written is named in a warning: repeats by name, empties by count.
        for word in {w.strip() for w in words if w.strip() and [x.strip() for x in words].count(w.strip()) > 1}:
            assert any(repr(word) in line and concept in line for line in records.lines), (word, records.lines)
        if any(not w.strip() for w in words):
            assert any("empty word" in line and concept in line for line in records.lines), records.lines


@settings(SETTINGS, max_examples=4)
@example(entries=[("pets", ["cat", "dog", "cow"]), ("animals", ["cat", "dog"]), ("food", ["cow", "horse"])])
@given(entries=st.lists(st.tuples(CONCEPTS, st.lists(st.sampled_from(CORPUS.split() * 3 + ["", "zq"]), min_size=2,
                                                     max_size=5)), min_size=2, max_size=4,
                        unique_by=lambda entry: entry[0]))
def test_geometry_uses_or_lists_every_concept_and_word(tmp_path_factory, tiny_bert, capsys, entries):
    folder = tmp_path_factory.mktemp("geo")
    path = folder / "concepts.json"
    path.write_text(json_object(entries))
    out = folder / "run"
    code = main(["probe", "geometry", "--model", str(tiny_bert), "--concepts", str(path), "--layers", "last",
                 "--out", str(out), *FAST])
    err = capsys.readouterr().err
    assert code in (0, 2)
    event(f"exit {code}")
    if code == 2:
        last = err.strip().splitlines()[-1]
        event(last[:70])
        assert last.startswith("E mcicl: ") and "Traceback" not in err and not out.exists()
        return
    summary = read_json(out / "summary.json")
    layer = summary["layer"]
    measured = LabelledVectors.load(out / "vectors" / f"{layer}.npz")
    used_concepts = set(measured.labels.tolist())
    dropped = set(summary["dropped_concepts"].get(layer, []))
    left_out = {w for ws in summary["words_left_out"].values() for w in ws}
    moved = summary["words_in_several_concepts"]
    for concept, words in entries:
        assert concept in used_concepts or concept in dropped, (concept, summary["dropped_concepts"])
        for word in (w.strip() for w in words if w.strip()):
            placed = moved[word]["measured_in"] if word in moved else concept
            in_run = word in set(measured.words[measured.labels == placed].tolist())
            assert in_run or word in left_out or placed in dropped, (word, concept, summary["words_left_out"])


@SETTINGS
@given(lines=st.lists(st.sampled_from(CORPUS.split() + ["", "  ", "dog"]), min_size=1, max_size=8))
def test_extract_uses_or_reports_every_word_of_a_word_list(tmp_path_factory, tiny_bert, capsys, lines):
    folder = tmp_path_factory.mktemp("ext")
    words = folder / "w.txt"
    words.write_text("\n".join(lines) + "\n")
    out = folder / "run"
    code = main(["probe", "extract", "--words", str(words), "--model", str(tiny_bert), "--layers", "last",
                 "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code in (0, 2)
    event(f"exit {code}")
    if code == 2:
        last = err.strip().splitlines()[-1]
        assert last.startswith("E mcicl: ") and "accepted" in last and not out.exists()
        return
    given_words = read_words_file(words)
    summary = read_json(out / "summary.json")
    extracted = (out / "words.txt").read_text().splitlines()
    reported = summary["report"]
    # Each line is extracted once, or counted in exactly the report list that says why it is not.
    assert len(given_words) == len(extracted) + sum(len(reported[k]) for k in ("empty", "unrepresentable",
                                                                               "duplicates"))
    with open(out / "labels.csv", newline="") as fh:
        assert [r["word"] for r in csv.DictReader(fh)] == extracted


@settings(max_examples=80, deadline=None, derandomize=True)
@given(overrides=st.dictionaries(st.sampled_from(["K", "d", "L", "lr", "seeds", "steps", "sigma", "within_cosine",
                                                   "scenarios", "dtype", "nonsense"]),
                                 st.one_of(st.integers(-3, 40).map(str), st.sampled_from(
                                     ["0.5", "-1", "nan", "inf", "x", "", "1e30", "noise_x2", "float64"])),
                                 max_size=3))
def test_config_overrides_build_or_name_the_field(overrides):
    try:
        config = load_config(SyntheticConfig, None, overrides)
    except ConfigError as err:
        assert err.field.split(".")[0].split("[")[0] in overrides, (err.field, overrides)
        assert "accepted" in str(err)
        return
    for key, value in overrides.items():  # every value given is the one used
        got = getattr(config, key)
        if isinstance(got, float):
            assert got == float(value) or (np.isnan(got) and value == "nan")
        elif isinstance(got, int):
            assert got == int(value)
