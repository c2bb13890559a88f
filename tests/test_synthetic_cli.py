"""``mcicl synthetic train`` built from its job: option > --set > --config file > default, and a wrong type in any
source is one clear error naming where it was written. Through ``--print-config``, so nothing trains."""

from __future__ import annotations

import subprocess
import sys

import yaml

from mcicl.app.cli import main


def resolved(capsys, *argv: str) -> dict:
    """The config ``mcicl synthetic train ARGV --print-config`` prints (the resolved config, nothing run)."""
    assert main(["synthetic", "train", *argv, "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "# from " in out or not argv  # every value the user set says where it came from
    return yaml.safe_load(out)


def test_a_config_file_value_survives_when_its_option_is_not_typed(tmp_path, capsys) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("steps: 7\nseeds: 3\nlr: 0.25\n")
    config = resolved(capsys, "--config", str(file))
    assert (config["steps"], config["seeds"], config["lr"]) == (7, 3, 0.25)
    assert main(["synthetic", "train", "--config", str(file), "--print-config"]) == 0
    assert "steps: 7  # from config file" in capsys.readouterr().out


def test_a_typed_option_overrides_the_file_and_set(tmp_path, capsys) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("steps: 7\nseeds: 3\nd: 32\n")
    config = resolved(capsys, "--config", str(file), "--set", "seeds=5", "--set", "d=40", "--steps", "2")
    # --steps over the file; --set over the file; a field nobody set keeps its default.
    assert (config["steps"], config["seeds"], config["d"], config["K"]) == (2, 5, 40, 4)
    config = resolved(capsys, "--config", str(file), "--set", "seeds=5", "--seeds", "2", "--seed", "9")
    assert (config["seeds"], config["seed"], config["steps"]) == (2, 9, 7)


def test_a_bad_set_value_is_refused_even_when_an_option_overrides_it(tmp_path, capsys) -> None:
    out = tmp_path / "never"
    assert main(["synthetic", "train", "--steps", "2", "--set", "steps=abc", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--set: steps='abc'" in err and "accepted: an integer" in err and not out.exists()
    assert main(["synthetic", "train", "--set", "d=8", "--set", "d=9", "--print-config"]) == 2
    assert "--set d is given twice" in capsys.readouterr().err
    assert main(["synthetic", "train", "--steps", "two", "--print-config"]) == 2
    assert "--steps 'two'" in capsys.readouterr().err


def test_a_wrong_type_in_the_config_file_is_one_error_naming_the_file(tmp_path, capsys) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text("steps: abc\nseeds: 2\n")
    out = tmp_path / "never"
    # The typed --steps would override it, but the file's own value is still checked.
    assert main(["synthetic", "train", "--config", str(file), "--steps", "2", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and f"config file {file}: steps='abc'" in lines[0] and "accepted: an integer" in lines[0]
    assert "Traceback" not in err and not out.exists()


def test_synthetic_config_module_imports_no_heavy_library() -> None:
    code = ("import sys, mcicl.synthetic.config; "
            "print([m for m in ('torch', 'numpy', 'matplotlib') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
