"""The project's own table of bad inputs: each gets one clear line naming the bad value, the file or option it
came from, and what is accepted; never a traceback; nothing is run (``--print-config`` or a check that fails
first) and no folder is created."""

from __future__ import annotations

import re
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


@pytest.mark.parametrize("argv", [["probe", "geometry"], ["demo"], ["probe", "contexts"], ["probe", "icl"],
                                  ["probe", "attention"], ["synthetic", "train"], ["compare"]],
                         ids=lambda a: " ".join(a))
def test_negative_seed_names_the_option(argv, capsys):
    assert main([*argv, "--seed", "-1", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "--seed" in err and "accepted" in err


@pytest.mark.slow
def test_a_concept_the_model_cannot_represent_is_named_not_silently_dropped(tmp_path: Path, capsys):
    import json

    concepts = tmp_path / "cs.json"
    concepts.write_text(json.dumps({"animals": ["dog", "cat", "horse", "cow"], "fruits": ["apple", "pear", "plum"],
                                    "ghosts": ["\u2603\u2603", "\u2604\u2604\u2604"]}))
    out = tmp_path / "g"
    assert main(["probe", "geometry", "--concepts", str(concepts), "--layers", "0", "--permutations", "10",
                 "--bootstrap", "5", "--shuffles", "1", "--no-probes", "--out", str(out)]) == 0
    assert "ghosts" in capsys.readouterr().err  # a named warning
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dropped_concepts"] == {"0": ["ghosts"]}
    assert summary["n_concepts"] == 2


def _model_copy(tmp_path: Path) -> Path:
    """The embedded MiniLM's files, weights linked, JSON files copied (so a test can corrupt one)."""
    import shutil

    from mcicl.probing.models import resolve_model

    source = Path(resolve_model("default").location)
    copy = tmp_path / "model"
    copy.mkdir()
    for path in source.iterdir():
        if path.suffix == ".json" or path.name == "vocab.txt":
            shutil.copy(path, copy / path.name)
        else:
            (copy / path.name).symlink_to(path)
    return copy


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer_config.json", "config.json"])
def test_a_corrupt_model_json_file_is_named(name, tmp_path: Path, capsys):
    model = _model_copy(tmp_path)
    (model / name).write_text("{not json")
    out = tmp_path / "out"
    assert main(["probe", "geometry", "--model", str(model), "--layers", "0", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert name in err and "valid JSON" in err and "Traceback" not in err, err
    assert not out.exists()


@pytest.mark.slow
def test_weights_that_do_not_fit_the_config_are_one_clear_line(tmp_path: Path, capsys):
    import json

    model = _model_copy(tmp_path)
    config = json.loads((model / "config.json").read_text())
    config["hidden_size"], config["intermediate_size"] = 48, 128  # 12 heads of 4: loadable shape, wrong weights
    (model / "config.json").write_text(json.dumps(config))
    assert main(["probe", "geometry", "--model", str(model), "--layers", "0", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "do not fit its config.json" in err and "Traceback" not in err, err


def test_out_inside_a_file_is_refused_naming_the_file(tmp_path: Path, capsys):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    assert main(["demo", "--small", "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert str(blocker) in err and "is a file" in err and "Traceback" not in err
    assert blocker.read_text() == "mine"


@pytest.mark.parametrize("argv", [["probe", "icl", "--episodes", "1000000000000"],
                                  ["probe", "geometry", "--permutations", "1000000000000"],
                                  ["probe", "attention", "--permutations", "1000000000000"],
                                  ["probe", "icl", "--shots", "0,5000"]], ids=lambda a: " ".join(a[:3]))
def test_sizes_that_would_hang_are_refused_up_front(argv, capsys):
    assert main([*argv, "--print-config"]) == 2  # refused while resolving the config: nothing has started
    err = capsys.readouterr().err
    assert argv[2] in err and "accepted" in err and "Traceback" not in err


def test_an_empty_words_file_is_named(tmp_path: Path, capsys):
    empty = tmp_path / "words.txt"
    empty.write_text("\n\n")
    assert main(["probe", "extract", "--words", str(empty), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(empty) in err and "holds no words" in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", [["probe", "extract", "--words", "WORDS"], ["probe", "geometry"]])
def test_layers_with_a_space_that_has_none_is_refused(command, tmp_path: Path, capsys):
    words = tmp_path / "w.txt"
    words.write_text("dog\n")
    argv = [str(words) if a == "WORDS" else a for a in command]
    assert main([*argv, "--space", "input", "--layers", "3", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--layers" in err and "--space input" in err and not (tmp_path / "o").exists()


def test_vectors_with_model_options_is_refused(tmp_path: Path, capsys):
    vectors = tmp_path / "v.npz"
    vectors.write_bytes(b"")
    for extra in (["--concepts", "wordnet"], ["--model", "x"], ["--layers", "0"]):
        assert main(["probe", "geometry", "--vectors", str(vectors), *extra, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert extra[0] in err and "would be ignored" in err


def test_words_in_a_config_file_of_the_wrong_type(tmp_path: Path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("words: [1, 2]\n")
    assert main(["probe", "extract", "--config", str(cfg), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert str(cfg) in err and "words" in err and "Traceback" not in err


# ---- part two (issue 27): every case is a row; each is refused with one line naming the bad value, exit 2, and
# every folder that existed before is unchanged (file names and bytes) ---------------------------------------------

def tree(folder: Path) -> dict[str, bytes | None]:
    """Every file (bytes) and folder (None) under ``folder``, hidden entries included."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and "Logging error" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """Tiny random-weight models (512 positions): a BERT encoder and a GPT-2, and a BERT whose config.json does not
    fit its weights (hidden size edited after saving)."""
    import json

    from mcicl.probing.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    out = {arch: build_tiny_model(arch, root / arch, hidden=16, layers=1, heads=2) for arch in ("bert", "gpt2")}
    bad = build_tiny_model("bert", root / "mismatched", hidden=16, layers=1, heads=2)
    config = json.loads((bad / "config.json").read_text())
    config["hidden_size"], config["intermediate_size"] = 32, 64  # loadable shapes that are not the saved weights'
    (bad / "config.json").write_text(json.dumps(config))
    out["mismatched"] = bad
    return out


def _inputs(tmp_path: Path) -> dict[str, str]:
    """Small input files the rows refer to by name."""
    import json

    files = {
        "words.txt": "dog\ncat\n",
        "long_words.txt": "dog\n" + "dog " * 3005 + "\n",
        "concepts.json": json.dumps({"animal": ["dog", "cat", "horse"], "tool": ["hammer", "saw", "drill"]}),
        "long_concepts.json": json.dumps({"animal": [f"{'dog ' * 300}{c}" for c in "abcdefgh"],
                                          "tool": ["hammer", "saw", "drill", "bus", "car", "red", "blue", "green"]}),
        "long_contexts.csv": "word,sense,context\nbat,animal,the [bat] flew " + "over the hill " * 3000 + "\n"
                             "bat,animal,the [bat] slept\nbat,tool,the [bat] hit the ball\n",
        "contexts_concepts.json": json.dumps({"animal": ["dog", "cat"], "tool": ["saw", "drill"]}),
    }
    (tmp_path / "store").mkdir()
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return {**{name.split(".")[0].upper(): str(tmp_path / name) for name in files}, "STORE": str(tmp_path / "store")}


# (id, argv with MODEL_<arch> and FILE names replaced, words the error line must hold)
REFUSED = [
    ("option twice", ["probe", "geometry", "--permutations", "5", "--permutations", "6"],
     ["--permutations", "given twice"]),
    ("flag pair", ["probe", "icl", "--shots", "1", "--shots=2"], ["--shots", "given twice"]),
    ("grid twice", ["synthetic", "sweep", "--grid", "d=32,64;d=128"], ["'d'", "given twice"]),
    ("icl prompts", ["probe", "icl", "--episodes", "100000", "--queries-per-episode", "10"],
     ["--episodes", "1,000,000 prompts", "48,000,000"]),
    ("icl queries", ["probe", "icl", "--queries-per-episode", "1000000000000"], ["--queries-per-episode", "1,000"]),
    ("long word", ["probe", "extract", "--words", "LONG_WORDS", "--model", "MODEL_bert", "--layers", "last"],
     ["'dog dog", "12,019 characters", "3,006 tokens", "512 positions"]),
    ("long word causal", ["probe", "extract", "--words", "LONG_WORDS", "--model", "MODEL_gpt2", "--layers", "last"],
     ["'dog dog", "512 positions"]),
    ("long context", ["probe", "contexts", "--contexts", "LONG_CONTEXTS", "--concepts", "CONTEXTS_CONCEPTS",
                      "--model", "MODEL_bert", "--min-per-sense", "1"], ["'bat'", "'the bat flew", "512 positions"]),
    ("long prompt", ["probe", "icl", "--model", "MODEL_gpt2", "--suite", "LONG_CONCEPTS", "--readout", "lm",
                     "--shots", "0,2", "--episodes", "2", "--queries-per-episode", "1", "--conditions",
                     "in_distribution"],
     ["prompt with query", "512 positions", "--shots"]),
    ("store is a file", ["probe", "geometry", "--store", "WORDS", "--model", "MODEL_bert", "--layers", "0"],
     ["--store", "WORDS", "is a file", "a store folder"]),
    ("store no such model", ["probe", "geometry", "--store", "STORE", "--model", "./no-such-model", "--layers", "0"],
     ["./no-such-model"]),
    *[(f"mismatched {cmd[1] if len(cmd) > 1 else cmd[0]}", [*cmd, "--model", "MODEL_mismatched"],
       ["MODEL_mismatched", "do not fit its config.json", "torch.Size"])
      for cmd in (["probe", "extract", "--words", "WORDS"], ["probe", "geometry", "--layers", "0"], ["demo", "--small"],
                  ["probe", "icl"], ["probe", "contexts"])],
]


@pytest.mark.parametrize(("argv", "words"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_refused_with_one_line_and_nothing_changed(argv, words, tiny, tmp_path: Path, capsys, one_torch_thread):
    names = {**_inputs(tmp_path), **{f"MODEL_{k}": str(v) for k, v in tiny.items()}}
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / "notes.txt").write_text("mine")
    before = tree(tmp_path)
    out = tmp_path / "out"
    code = main([names.get(a, a) for a in argv] + ["--out", str(out), "--quiet"])
    line = one_line(capsys.readouterr().err)
    assert code == 2, line
    for word in words:
        assert names.get(word, word) in line, (word, line)
    assert not out.exists() and tree(tmp_path) == before


def test_contexts_run_logs_its_line_without_a_logging_traceback(tiny, tmp_path: Path, capsys, one_torch_thread):
    """A valid `probe contexts` run on a contexts file, not quiet: its summary line has undefined intervals (one
    polysemous word), which once raised inside logging ('--- Logging error ---')."""
    names = _inputs(tmp_path)
    contexts = tmp_path / "ctx.csv"
    contexts.write_text("word,sense,context\nbat,animal,the [bat] flew\nbat,animal,a [bat] slept\n"
                        "bat,tool,he swung the [bat]\nbat,tool,the [bat] hit the ball\n")
    assert main(["probe", "contexts", "--contexts", str(contexts), "--concepts", names["CONTEXTS_CONCEPTS"],
                 "--model", str(tiny["bert"]), "--min-per-sense", "2", "--permutations", "20", "--bootstrap", "20",
                 "--out", str(tmp_path / "run")]) == 0
    captured = capsys.readouterr()
    both = captured.out + captured.err
    assert "Traceback" not in both and "Logging error" not in both, both
    assert "best layer" in captured.err and "output is in" in captured.out


def _geometry_run(path: Path) -> Path:
    from mcicl.core.runs import RunFolder

    with RunFolder.create(path, "probe geometry", atomic=True) as run:
        run.write_summary({"layer": "3"})
    return path


@pytest.mark.parametrize("where", ["is", "inside", "holds"])
def test_front_door_report_never_writes_over_its_input(where, tmp_path: Path):
    import mcicl
    from mcicl.core.runs import RunExistsError

    run = _geometry_run(tmp_path / "run")
    before = tree(tmp_path)
    out = {"is": run, "inside": run / "report", "holds": tmp_path}[where]
    with pytest.raises(RunExistsError, match=f"{'lies inside' if where == 'inside' else where} the input run_dirs"):
        mcicl.report([run], out=out, overwrite=True)
    assert tree(tmp_path) == before
    assert mcicl.report([run], out=tmp_path / "elsewhere").is_file()  # control: apart from the input it works


@pytest.mark.parametrize(("call", "says"), [
    (lambda m: m.extract("dog"), "words='dog' is a single str"),
    (lambda m: m.extract(["dog", 1]), "1 (int) is not a string"),
    (lambda m: m.extract(5), "not a list of words"),
    (lambda m: m.extract([]), "holds no words"),
    (lambda m: m.report("runs/x", out="r"), "run_dirs='runs/x' is a single str"),
    (lambda m: m.geometry(["dog"]), "model=['dog'] (list)"),
], ids=["string", "non-string item", "number", "empty", "report string", "model list"])
def test_front_door_refuses_a_string_where_a_list_is_expected(call, says, tmp_path: Path, monkeypatch):
    import mcicl

    monkeypatch.chdir(tmp_path)
    with pytest.raises((TypeError, ValueError), match=re.escape(says)):
        call(mcicl)
    assert list(tmp_path.iterdir()) == []  # nothing loaded, nothing written


def test_report_of_a_run_without_summary_says_it_is_incomplete(tmp_path: Path, capsys):
    from mcicl.core.runs import RunFolder

    with RunFolder.create(tmp_path / "run", "probe geometry", atomic=True) as run:
        run.save_config({"permutations": 5})
    assert main(["report", str(run.path), "--out", str(tmp_path / "r"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert str(run.path) in err and "no summary.json" in err, err  # a named warning
    assert "Incomplete run" in (tmp_path / "r" / "report.html").read_text()


def test_a_load_that_succeeds_still_shows_transformers_report(tiny, caplog):
    """The held-back loading report is only dropped when the load fails on it (control for the mismatch rows)."""
    import logging

    from mcicl.probing.models import _load_report_held

    with caplog.at_level(logging.WARNING), _load_report_held():
        logging.getLogger("transformers.modeling_utils").warning("LOAD REPORT: some weights newly initialized")
    assert "newly initialized" in caplog.text
