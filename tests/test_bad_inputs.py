"""The project's own table of bad inputs: each gets one clear line naming the bad value, the file or option it
came from, and what is accepted; never a traceback; nothing is run (``--print-config`` or a check that fails
first) and no folder is created."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcicl.app.cli import main
from mcicl.probing.contexts import ContextsError, locate, make_context

# (file name, bytes, words the error line must contain)
CONFIG_FILES = [
    ("dup.yaml", b"permutations: 5\npermutations: 6\n", ["dup.yaml", "'permutations' is given twice"]),
    ("dup.json", b'{"permutations": 5, "permutations": 6}', ["dup.json", "given twice"]),
    ("nested_dup.yaml", b"extraction:\n  model: a\n  model: b\n", ["'model' is given twice"]),
    ("latin1.yaml", "permutations: 5\n# caf\u00e9\n".encode("latin-1"), ["latin1.yaml", "0xe9", "line 2",
                                                                         "UTF-8"]),
    ("list.yaml", b"- 1\n- 2\n", ["list.yaml", "not a mapping"]),
    ("broken.yaml", b"a: [1\n", ["broken.yaml", "not valid YAML"]),
    ("section.yaml", b"extraction: 5\n", ["extraction", "mapping"]),
    ("unknown.yaml", b"permutatons: 5\n", ["permutatons", "one of the fields"]),
]


@pytest.mark.parametrize(("name", "data", "words"), CONFIG_FILES, ids=[c[0] for c in CONFIG_FILES])
def test_bad_config_file_is_one_clear_line(name, data, words, tmp_path: Path, capsys):
    cfg = tmp_path / name
    cfg.write_bytes(data)
    out = tmp_path / "out"
    assert main(["probe", "geometry", "--config", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, (word, err)
    assert not out.exists()


def test_a_utf8_bom_is_not_part_of_the_first_key(tmp_path: Path, capsys):
    cfg = tmp_path / "bom.yaml"
    cfg.write_bytes(b"\xef\xbb\xbfpermutations: 7\n")
    assert main(["probe", "geometry", "--config", str(cfg), "--print-config"]) == 0
    assert "permutations: 7  # from config file" in capsys.readouterr().out


@pytest.mark.parametrize("context", ["the [bat saw it", "the bat] saw it", "the [] bat", "the [[bat]] flew",
                                     "a [bat] and [bat]"])
def test_bracket_markup_is_validated(context):
    with pytest.raises(ContextsError, match="bat"):
        locate("bat", context)


def test_well_formed_mark_and_no_mark_still_work():
    assert locate("bat", "the [bat] flew") == ("the bat flew", 4)
    assert locate("bat", "the bat flew") == ("the bat flew", 4)
    assert make_context("bat", "animal", "a [Bat] flew").start == 2


def test_contexts_file_error_names_the_line(tmp_path: Path):
    from mcicl.probing.contexts import load_contexts_file

    path = tmp_path / "c.csv"
    path.write_text("word,sense,context\nbat,animal,the [bat] flew\nbat,sport,the [bat broke\n")
    with pytest.raises(ContextsError, match=r"c\.csv: line 3: .*never closed"):
        load_contexts_file(path)
    path.write_bytes("word,sense,context\nbat,animal,caf\u00e9 [bat]\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        load_contexts_file(path)


def test_an_option_out_of_range_names_the_option(capsys):
    assert main(["probe", "geometry", "--permutations", "-3", "--print-config"]) == 2
    assert "--permutations" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["probe", "geometry"], ["demo"]])
def test_negative_seed_names_the_option(argv, capsys):
    assert main([*argv, "--seed", "-1", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "--seed" in err and "accepted" in err
