"""One precedence rule for every command and every config field it offers as an option (issue 28):
option typed > config file > default, and a wrong type in either place is one clear error naming where it was.

Table-driven from the registry, through ``--print-config`` (the resolved config, nothing run), so it covers each
job a later issue adds without a line here.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcicl.app import registry
from mcicl.app.cli import main
from mcicl.core.configuration import ConfigError, from_dict
from mcicl.core.options import _is_bool, _literal_choices, field_info, nest


def cases() -> list[tuple[str, str, str]]:
    """(command, field path, flag) for every option generated from a config field."""
    out = []
    for job in registry.jobs():
        if job.config is None:
            continue
        for path, flag in job.flag_of().items():
            out.append((job.command, path, flag))
    return out


def _candidates(tp: Any, default: Any) -> list[Any]:
    """Values of the field's type other than the default, most ordinary first."""
    choices = _literal_choices(tp)
    if choices:
        return [c for c in choices if c != default]
    if _is_bool(tp):
        return [not default]
    if typing.get_origin(tp) in (list, tuple):
        item = (typing.get_args(tp) or (str,))[0]
        lists = {int: [[1, 2], [2, 4]], float: [[0.5, 1.0], [2.0]], str: [["a", "b"], ["c"]]}.get(item, [])
        if default and len(default) > 1:  # sub-lists of the default are valid wherever the default is
            lists = [list(default[:1]), list(default[1:2]), *lists]
        return [v for v in lists if v != list(default or [])]
    args = typing.get_args(tp) or (tp,)
    found: list[Any] = []
    if int in args or tp is int:
        found += [(default or 0) + 3, 7]
    if float in args or tp is float:
        found += [(default or 0.0) + 0.25, 0.5]
    if str in args or tp is str:
        found += ["alt", "A {word}.", "{context} {word} =>", " = {label}", "0", "8"]
    if any(typing.get_origin(a) in (list, tuple) for a in args):
        found += [[1, 2], ["a", "b"]]
    unique: list[Any] = []
    for v in found:
        if v != default and v not in unique:
            unique.append(v)
    return unique


def _valid(job, path: str, value: Any) -> bool:
    try:
        from_dict(job.config, nest({path: value}))
    except (ConfigError, TypeError, ValueError):
        return False
    return True


def _text(value: Any) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)


def _printed(argv: list[str], capsys) -> dict:
    assert main(argv) == 0, capsys.readouterr().err
    return yaml.safe_load(capsys.readouterr().out)


def _at(data: dict, path: str) -> Any:
    for part in path.split("."):
        data = data[part]
    return data


@pytest.mark.parametrize(("command", "path", "flag"), cases(), ids=lambda v: str(v))
def test_option_over_file_over_default(command, path, flag, tmp_path: Path, capsys):
    job = registry.job(command)
    _, tp, default = field_info(job.config, path)
    values = [v for v in _candidates(tp, default) if _valid(job, path, v)]
    assert values, f"{command} {path}: no test value of type {tp} passes the config's own checks"
    value = values[0]
    words = command.split()
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(nest({path: value})))

    default_printed = _at(_printed([*words, "--print-config"], capsys), path)
    from_file = _at(_printed([*words, "--config", str(cfg), "--print-config"], capsys), path)
    assert from_file != default_printed, "the file's value was not used"
    if not isinstance(value, str) or _literal_choices(tp):
        assert from_file == (list(value) if isinstance(value, tuple) else value)
    if _is_bool(tp):
        if flag.startswith("--no-") == (value is False):  # the flag sets the file's value: check the other way
            option = _printed([*words, flag, "--print-config"], capsys)
            assert _at(option, path) == value
        file_default = tmp_path / "default.yaml"
        file_default.write_text(yaml.safe_dump(nest({path: not value if flag.startswith("--no-") == (value is False)
                                                     else value})))
        return
    option = _at(_printed([*words, flag, _text(value), "--print-config"], capsys), path)
    assert option == from_file, "the option gave another value than the same value in the file"
    if len(values) > 1:  # both given: the typed option wins over the file
        other = values[1]
        both = _at(_printed([*words, "--config", str(cfg), flag, _text(other), "--print-config"], capsys), path)
        assert both != from_file, "the file overrode an option typed on the command line"


def _wrong(tp: Any) -> tuple[Any, str | None]:
    """(a value of the wrong type for a config file, the same for the command line or None if a flag has none)."""
    if _is_bool(tp):
        return "maybe", None
    if _literal_choices(tp):
        return "no-such-choice", "no-such-choice"
    args = typing.get_args(tp) or (tp,)
    if str in args:
        return {"a": 1}, None  # any text is a string: only a file can give a wrong type
    return "abc", "abc"


@pytest.mark.parametrize(("command", "path", "flag"), cases(), ids=lambda v: str(v))
def test_wrong_type_names_its_source(command, path, flag, tmp_path: Path, capsys):
    job = registry.job(command)
    _, tp, _ = field_info(job.config, path)
    in_file, on_line = _wrong(tp)
    words = command.split()
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(nest({path: in_file})))
    assert main([*words, "--config", str(cfg), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert str(cfg) in err and path in err and "accepted" in err and "Traceback" not in err, err
    if on_line is not None:
        try:  # a choice outside a Literal's is refused by the parser itself (usage line + "invalid choice")
            code = main([*words, flag, on_line, "--print-config"])
        except SystemExit as exit:
            code = exit.code
        err = capsys.readouterr().err
        assert code == 2 and flag in err and ("accepted" in err or "choose from" in err), err
        assert "Traceback" not in err, err


def test_a_bad_value_in_the_file_is_refused_even_when_the_option_overrides_it(tmp_path: Path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("permutations: lots\n")
    assert main(["probe", "geometry", "--config", str(cfg), "--permutations", "50", "--print-config"]) == 2
    assert str(cfg) in capsys.readouterr().err


def test_the_table_covers_every_job_with_a_config():
    covered = {c for c, _, _ in cases()}
    assert {j.command for j in registry.jobs() if j.config is not None and j.flag_of()} == covered
    assert "probe geometry" in covered


def test_a_partial_section_keeps_its_owners_defaults(tmp_path: Path):
    """ContextsConfig's extraction section defaults to batch_size 32 (ExtractionConfig's own is 64); a file and an
    option that each set one other field of it must keep 32, and the option still wins over the file."""
    from mcicl.core.options import resolve_config
    from mcicl.probing.contexts_config import ContextsConfig
    from mcicl.probing.extract_config import ExtractionConfig

    assert ExtractionConfig().batch_size != ContextsConfig().extraction.batch_size
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("extraction:\n  layers: '2'\n")
    config, sources = resolve_config(ContextsConfig, file=cfg_file, given={"extraction.layers": "1"})
    assert config.extraction.batch_size == ContextsConfig().extraction.batch_size
    assert config.extraction.layers == "1" and sources["extraction.layers"] == "extraction.layers"
