"""Sense-tagged contexts: file format, errors, built-in contexts, WordNet examples (no model needed)."""

from __future__ import annotations

import json

import pytest

from mcicl.probing.contexts import (
    ContextsError,
    ContextSet,
    builtin_contexts,
    check_contexts,
    drop_short,
    load_contexts_file,
    locate,
    make_context,
    wordnet_contexts,
)
from mcicl.probing.datasets import WordNetNotFoundError, builtin_concepts, wordnet_reader
from mcicl.probing.datasets.concepts import ConceptSet

CS = ConceptSet("tiny", {"animals": ["dog", "cat"], "sports_equipment": ["racket", "ball"], "tools": ["saw", "drill"]},
                polysemy={"bat": ["animals", "sports_equipment"]}, controls={"hammer": "tools"})


def test_locate_first_whole_word_any_case_and_marked_occurrence():
    assert locate("bat", "The Bat saw an acrobat.") == ("The Bat saw an acrobat.", 4)
    # "acrobat" and "bats" are not occurrences of "bat": the whole word is found after them.
    assert locate("bat", "Acrobats swing; a bat flies.")[1] == len("Acrobats swing; a ")
    text, start = locate("bat", "The bat hit a [bat].")
    assert text == "The bat hit a bat." and start == 14 and text[start:start + 3] == "bat"
    with pytest.raises(ContextsError, match="does not contain the word"):
        locate("bat", "Acrobats swing from the bars.")
    with pytest.raises(ContextsError, match=r"marks \[cave\]"):
        locate("bat", "The bat left the [cave].")
    with pytest.raises(ContextsError, match="marks 2 occurrences"):
        locate("bat", "The [bat] hit a [bat].")


def test_check_contexts_names_the_problem():
    good = [make_context("bat", s, f"The bat {k} {s}.") for s in ("animals", "sports_equipment") for k in range(3)]
    check_contexts(ContextSet("ok", good), CS)
    with pytest.raises(ContextsError, match="'colours', which is not a concept"):
        check_contexts(ContextSet("x", good + [make_context("bat", "colours", "a bat")]), CS, min_per_sense=1)
    with pytest.raises(ContextsError, match=r"its senses in 'tiny' are \['animals', 'sports_equipment'\]"):
        check_contexts(ContextSet("x", good + [make_context("bat", "tools", "a bat")]), CS, min_per_sense=1)
    with pytest.raises(ContextsError, match="control word 'hammer' has sense 'animals'"):
        check_contexts(ContextSet("x", [make_context("hammer", "animals", "a hammer")]), CS, min_per_sense=1)
    with pytest.raises(ContextsError, match=r"fewer than 4 contexts: bat/animals \(3\)"):
        check_contexts(ContextSet("x", good), CS, min_per_sense=4)


def test_csv_and_json_files(tmp_path):
    csv_file = tmp_path / "ctx.csv"
    csv_file.write_text("word,sense,context,note\nbat,animals,The [bat] slept.,x\n"
                        "bat,sports_equipment,He swung the bat.,y\n")
    ctx = load_contexts_file(csv_file)
    assert [(c.word, c.sense, c.context, c.start) for c in ctx.contexts] == [
        ("bat", "animals", "The bat slept.", 4), ("bat", "sports_equipment", "He swung the bat.", 13)]
    bad = tmp_path / "bad.csv"
    bad.write_text("word,sense,context\nbat,animals,The bat slept.\nbat,animals,The cave was dark.\n")
    with pytest.raises(ContextsError, match="bad.csv: line 3: word 'bat'.*does not contain the word"):
        load_contexts_file(bad)
    no_col = tmp_path / "nocol.csv"
    no_col.write_text("word,concept,context\nbat,animals,The bat slept.\n")
    with pytest.raises(ContextsError, match=r"lacks column\(s\) \['sense'\]"):
        load_contexts_file(no_col)
    js = tmp_path / "ctx.json"
    js.write_text(json.dumps({"contexts": {"bat": {"animals": ["A bat flew."], "sports_equipment": ["My bat."]}}}))
    assert [c.sense for c in load_contexts_file(js).contexts] == ["animals", "sports_equipment"]
    js.write_text(json.dumps({"bat": ["A bat flew."]}))
    with pytest.raises(ContextsError, match=r"must map to \{\"sense\""):
        load_contexts_file(js)


def test_builtin_contexts_cover_every_sense_and_control():
    cs, ctx = builtin_concepts(), builtin_contexts()
    check_contexts(ctx, cs, min_per_sense=3)  # every sense a concept, in the word's inventory, >= 3 contexts
    counts = ctx.counts()
    for word, senses in cs.polysemy.items():
        assert ctx.senses(word) == senses, word
        assert all(counts[(word, s)] >= 3 for s in senses), word
    for word, concept in cs.controls.items():
        assert counts[(word, concept)] >= 3, word
    for c in ctx.contexts:
        assert c.context[c.start:c.end].lower() == c.word.lower(), c
    assert len({c.context for c in ctx.contexts}) == len(ctx)  # no sentence written twice


def test_wordnet_examples_are_tagged_with_the_sense_above_their_synset():
    try:
        wn = wordnet_reader()
    except WordNetNotFoundError:
        pytest.skip("WordNet is not installed")
    # bank.n.01 (sloping land) lies under geological_formation.n.01; bank.n.02 under financial_institution.n.01.
    cs = ConceptSet("wn", {"geological_formation.n.01": ["hill", "cliff"],
                           "financial_institution.n.01": ["lender", "broker"], "bird.n.01": ["owl", "lark"]},
                    polysemy={"bank": ["geological_formation.n.01", "financial_institution.n.01"]})
    ctx = wordnet_contexts(cs, wn)
    assert ctx.contexts, "WordNet has examples for both senses of bank"
    for c in ctx.contexts:
        synset = wn.synset(c.source.removeprefix("wordnet:"))
        assert c.context in synset.examples()
        above = {synset.name()} | {s.name() for s in synset.closure(lambda s: s.hypernyms())}
        assert c.sense in above and c.context[c.start:c.end].lower() == "bank"
    assert {c.sense for c in ctx.contexts} == set(cs.polysemy["bank"])
    kept, dropped = drop_short(ctx, 100)
    assert not kept.contexts and len(dropped) == 2
    with pytest.raises(ContextsError, match="need a WordNet concept set"):
        wordnet_contexts(CS, wn)


# ---- the job: config file, options, precedence ------------------------------------------------------------

def test_probe_contexts_config_file_survives_untyped_options_and_typed_ones_win(tmp_path, capsys):
    import yaml

    from mcicl.app.cli import main

    (tmp_path / "run.yaml").write_text("permutations: 77\nbootstrap: 55\ncenter: false\n"
                                       "extraction:\n  layers: '0,-1'\n", encoding="utf-8")
    assert main(["probe", "contexts", "--config", str(tmp_path / "run.yaml"), "--bootstrap", "9",
                 "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["permutations"] == 77 and printed["center"] is False  # from the file: not typed
    assert printed["extraction"]["layers"] == "0,-1" and printed["extraction"]["batch_size"] == 32
    assert printed["bootstrap"] == 9  # typed: overrides the file
    assert main(["probe", "contexts", "--no-center", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["center"] is False


@pytest.mark.parametrize("argv,named", [
    (["--permutations", "lots"], "--permutations 'lots'"),
    (["--config", "{cfg}"], "min_per_sense='few'"),
])
def test_probe_contexts_wrong_types_give_one_error_naming_them(tmp_path, capsys, argv, named):
    from mcicl.app.cli import main

    (tmp_path / "bad.yaml").write_text("min_per_sense: few\n", encoding="utf-8")
    argv = [a.replace("{cfg}", str(tmp_path / "bad.yaml")) for a in argv]
    assert main(["probe", "contexts", *argv, "--print-config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0]


def test_contexts_config_is_importable_from_contextual_and_torch_free():
    import subprocess
    import sys

    code = ("import sys, mcicl.probing.extract_config, mcicl.probing.contexts_config; "
            "print([m for m in ('torch','numpy','matplotlib','transformers') if m in sys.modules])")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"
    from mcicl.probing.contexts_config import ContextsConfig
    from mcicl.probing.contextual import ContextsConfig as Same

    assert Same is ContextsConfig
