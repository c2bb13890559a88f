"""WordNet concept sets (NLTK reader over Debian's wordnet-base or NLTK's data): hierarchy, polysemy, errors."""

from __future__ import annotations

import pytest

from mcicl.probing.datasets import WordNetNotFoundError, builtin_concepts, wordnet_concepts, wordnet_reader
from mcicl.probing.datasets.wordnet import LEXNAMES


@pytest.fixture(scope="module")
def wn():
    try:
        return wordnet_reader()
    except WordNetNotFoundError as err:  # CI installs wordnet-base (.ci/run); say why when it is absent
        pytest.skip(f"system dependency missing: {err}")


@pytest.fixture(scope="module")
def vocab() -> set[str]:
    b = builtin_concepts()
    words = {w.lower() for ws in b.concepts.values() for w in ws} | set(b.polysemy) | {w.lower() for w in b.controls}
    return words | {w.capitalize() for w in words}


def test_lexnames_file():
    lines = [line.split("\t") for line in LEXNAMES.read_text().splitlines()]
    assert len(lines) == 45 and all(int(n) == i for i, (n, _, _) in enumerate(lines))
    assert lines[0][1:] == ["adj.all", "3"] and lines[5][1] == "noun.animal" and lines[44][1:] == ["adj.ppl", "3"]


def test_reader_lexnames_and_senses(wn):
    assert wn.synset("bat.n.01").lexname() == "noun.animal"
    assert {s.lexname() for s in wn.synsets("bat", pos="n")} >= {"noun.animal", "noun.artifact"}
    assert wn.synset("dog.n.01") in wn.synset("animal.n.01").closure(lambda s: s.hyponyms())
    assert wordnet_reader() is wn  # cached per process


def test_animal_hierarchy_is_nested(wn):
    cs = wordnet_concepts(root="animal.n.01", min_words=30, n_controls=5)
    assert "animal.n.01" in cs.concepts and "animal.n.01" not in cs.parents
    assert len(cs.concepts) >= 10 and all(len(ws) >= 30 for ws in cs.concepts.values())
    for child, parent in cs.parents.items():
        # Park et al.: a parent's words include its descendants' words
        assert set(cs.concepts[child]) <= set(cs.concepts[parent]), (child, parent)
        assert wn.synset(parent) in wn.synset(child).closure(lambda s: s.hypernyms() + s.instance_hypernyms())
    assert all(w.isalpha() for ws in cs.concepts.values() for w in ws)
    assert len(cs.controls) == 5
    listed = {w for ws in cs.concepts.values() for w in ws}
    for word, concept in cs.controls.items():
        assert word not in listed and len(wn.synsets(word, pos="n")) == 1
        assert wn.synset(concept) in wn.synsets(word, pos="n")[0].closure(lambda s: s.hypernyms()
                                                                          + s.instance_hypernyms())


def test_polysemy_from_lexnames_with_vocab(wn, vocab):
    cs = wordnet_concepts(root="whole.n.02", min_words=10, vocab=vocab, n_controls=0)
    assert all(w in vocab for ws in cs.concepts.values() for w in ws)
    # star: a celestial body (noun.object) and a celebrity (noun.person); tiger: the cat and a fierce person
    assert cs.polysemy["star"] == ["natural_object.n.01", "person.n.01"]
    assert set(cs.polysemy["tiger"]) == {"placental.n.01", "person.n.01"}
    assert "bat" not in cs.polysemy  # its other frequent sense (a turn at batting) is an act, not below whole.n.02
    listed = {w for ws in cs.concepts.values() for w in ws}
    for word, senses in cs.polysemy.items():
        assert word not in listed
        lexnames = {s.lexname() for s in wn.synsets(word, pos="n")}
        assert len(lexnames) >= 2, word
        for a in senses:  # sense concepts are never nested in each other
            for b in senses:
                if a != b:
                    assert set(cs.concepts[a]) - set(cs.concepts[b]) or set(cs.concepts[b]) - set(cs.concepts[a])


def test_bad_arguments_and_missing_wordnet(wn, tmp_path):
    with pytest.raises(ValueError, match="root='no_such.n.01': not a WordNet synset name"):
        wordnet_concepts(root="no_such.n.01")
    with pytest.raises(ValueError, match="min_words=1"):
        wordnet_concepts(min_words=1)
    with pytest.raises(WordNetNotFoundError, match="apt-get install wordnet-base.*nltk.downloader wordnet"):
        wordnet_reader(tmp_path)
