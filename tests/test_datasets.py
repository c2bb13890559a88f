"""Concept datasets: the built-in set's vocabulary and senses, user files, HF datasets, helpers."""

from __future__ import annotations

import json

import pytest

from mcicl.probing.datasets import (
    ConceptFileError,
    builtin_concepts,
    extension,
    from_hf_dataset,
    load_concept_set,
    load_polysemy,
    polysemous_task_pairs,
    proper_noun_concepts,
    vocabulary_problems,
)
from mcicl.probing.datasets.concepts import ConceptSet, ConceptSetError


@pytest.fixture(scope="module")
def builtin() -> ConceptSet:
    return builtin_concepts()


def test_builtin_sizes(builtin):
    assert len(builtin.concepts) >= 30
    short = {c: len(ws) for c, ws in builtin.concepts.items() if len(ws) < 15}
    assert not short, f"concepts with fewer than 15 words: {short}"
    assert len(builtin.polysemy) >= 60
    assert len(builtin.controls) >= 30
    assert all(len(set(s)) >= 2 for s in builtin.polysemy.values())


def test_builtin_passes_its_vocabulary_check(builtin):
    assert vocabulary_problems(builtin, proper_noun_concepts()) == []


def test_vocabulary_check_catches_each_rule(builtin):
    bad = ConceptSet("bad", {"animals": ["cat", "Dog", "two words", "bat"], "tools": ["hammer", "cat"],
                             "Countries": ["France", "Spain"]},
                     polysemy={"bat": ["animals", "tools"]}, controls={"hammer": "tools"})
    problems = vocabulary_problems(bad, ["Countries"])
    text = "\n".join(problems)
    assert "'Dog' is not a lowercase alphabetic word" in text
    assert "'two words'" in text
    assert "'cat' also appears in concept 'animals'" in text
    assert "polysemy: 'bat' also appears" in text
    assert "control of 'tools': 'hammer' also appears" in text
    assert "France" not in text  # proper nouns are fine in a declared proper-noun concept


@pytest.mark.parametrize("word,senses", [
    ("bat", {"animals", "sports_equipment"}), ("apple", {"fruits", "companies"}),
    ("jaguar", {"animals", "car_brands"}), ("python", {"reptiles", "programming_languages"}),
    ("mercury", {"celestial_bodies", "chemical_elements"}), ("java", {"drinks", "programming_languages"}),
    ("bank", {"buildings", "landforms"}), ("crane", {"birds", "machines"}),
    ("mouse", {"animals", "computer_hardware"}), ("orange", {"fruits", "colours"}),
])
def test_builtin_known_senses(builtin, word, senses):
    assert set(builtin.polysemy[word]) == senses


def test_builtin_controls_are_held_out_members(builtin):
    listed = {w.lower() for ws in builtin.concepts.values() for w in ws}
    for word in builtin.controls:
        assert word.lower() not in listed and word not in builtin.polysemy
    assert builtin.controls["antelope"] == "animals" and builtin.controls["Lisbon"] == "cities"
    # every concept has a control, so polysemous words can be compared with a monosemous word of each sense
    assert set(builtin.controls.values()) == set(builtin.concepts)


def test_hierarchy_extension(builtin):
    assert builtin.parents["birds"] == "animals" and builtin.parents["fruits"] == "foods"
    animals = extension(builtin, "animals")
    assert {"elephant", "eagle", "shark", "ant", "cobra"} <= set(animals)
    assert len(animals) == sum(len(builtin.concepts[c]) for c in
                               ("animals", "birds", "fish", "insects", "reptiles"))
    assert extension(builtin, "colours") == builtin.concepts["colours"]
    with pytest.raises(KeyError, match="unknown concept 'nope'"):
        extension(builtin, "nope")


def test_polysemous_task_pairs(builtin):
    triples = polysemous_task_pairs(builtin)
    bat = [t for t in triples if t[0] == "bat"]
    assert {t[1] for t in bat} == {"animals", "sports_equipment"}
    roots = {"birds": "animals", "fish": "animals", "insects": "animals", "reptiles": "animals",
             "fruits": "foods", "vegetables": "foods", "trees": "plants", "flowers": "plants",
             "car_brands": "companies"}
    for word, _sense, other in triples:
        assert other not in builtin.polysemy[word]
        sense_roots = {roots.get(s, s) for s in builtin.polysemy[word]}
        assert roots.get(other, other) not in sense_roots
    assert len({w for w, _, _ in triples}) == len(builtin.polysemy)


def test_json_and_csv_files(tmp_path):
    js = tmp_path / "mine.json"
    js.write_text(json.dumps({"pets": ["cat", "dog", "hamster"], "tools": ["saw", "drill"]}))
    cs = load_concept_set(js)
    assert cs.name == "mine" and cs.concepts["pets"] == ["cat", "dog", "hamster"]
    csv_file = tmp_path / "mine.csv"
    csv_file.write_text("word,concept,note\ncat,pets,x\ndog,pets,\nsaw,tools,\ndrill,tools,\n")
    assert load_concept_set(csv_file).concepts == {"pets": ["cat", "dog"], "tools": ["saw", "drill"]}
    poly = tmp_path / "poly.json"
    poly.write_text(json.dumps({"polysemy": {"dog": ["pets", "tools"]}, "controls": {"wrench": "tools"}}))
    with_poly = load_concept_set(js, polysemy=poly)
    assert with_poly.polysemy == {"dog": ["pets", "tools"]} and with_poly.controls == {"wrench": "tools"}
    assert "dog" not in with_poly.concepts["pets"]  # concept lists hold monosemous words
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"python": ["reptiles", "programming_languages"]}))
    assert load_polysemy(flat, builtin_concepts()).polysemy["python"] == ["reptiles", "programming_languages"]


@pytest.mark.parametrize("name,text,match", [
    ("bad.json", '{"pets": ["cat", "dog"],\n "tools": ["saw" "drill"]}', r"bad.json: line 2, column .*invalid JSON"),
    ("list.json", '["cat", "dog"]', r"list.json: the top level must be a JSON object"),
    ("shape.json", '{"pets": "cat dog"}', r"shape.json: concept 'pets' must map to a list of word strings"),
    ("one.json", '{"pets": ["cat", "dog"], "tools": ["saw", " "]}', r"one.json: concept 'tools' has 1 usable"),
    ("cols.csv", "word,label\ncat,pets\n", r"cols.csv: line 1: header .* lacks column\(s\) \['concept'\]"),
    ("rows.csv", "word,concept\ncat,pets\ndog\n", r"rows.csv: line 3: expected a word and a concept"),
    ("words.txt", "cat pets\n", r"unknown concept file type '.txt'"),
])
def test_malformed_concept_files(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConceptFileError, match=match):
        load_concept_set(path)


def test_bad_polysemy_and_missing_files(tmp_path, builtin):
    poly = tmp_path / "poly.json"
    poly.write_text(json.dumps({"bat": ["animals", "spaceships"]}))
    with pytest.raises(ConceptSetError, match=r"poly.json: polysemous word 'bat' names unknown concept\(s\) "
                                               r"\['spaceships'\]"):
        load_polysemy(poly, builtin)
    poly.write_text(json.dumps({"bat": "animals"}))
    with pytest.raises(ConceptFileError, match="must map to a list of concept names"):
        load_polysemy(poly, builtin)
    with pytest.raises(FileNotFoundError, match="accepted: builtin, wordnet, supersenses, or a .json/.csv file"):
        load_concept_set(tmp_path / "nope.json")


def test_from_hf_dataset():
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict(
        {"token": ["cat", "dog", "saw", "drill"], "kind": [0, 0, 1, 1]},
        features=datasets.Features({"token": datasets.Value("string"),
                                    "kind": datasets.ClassLabel(names=["pets", "tools"])}))
    cs = from_hf_dataset(ds, word_column="token", concept_column="kind", name="hf")
    assert cs.concepts == {"pets": ["cat", "dog"], "tools": ["saw", "drill"]}
    with pytest.raises(ConceptSetError, match=r"lacks column\(s\) \['word', 'concept'\]"):
        from_hf_dataset(ds)
    one = datasets.Dataset.from_dict({"word": ["cat", "saw", "drill"], "concept": ["pets", "tools", "tools"]})
    with pytest.raises(ConceptSetError, match="concept 'pets' has 1 usable word"):
        from_hf_dataset(one)
