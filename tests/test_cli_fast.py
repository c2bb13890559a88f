"""The command line answers at once: ``mcicl --help`` and every ``mcicl <command> --help`` import no heavy library.

The parser is built from the registry's torch-free config modules; a job's code is imported only when it runs.
Each check runs in a fresh interpreter, since this test process has imported torch long ago.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mcicl.app import registry

HEAVY = ("torch", "transformers", "sklearn", "umap", "matplotlib", "numpy", "scipy", "tqdm")

PROBE = """
import contextlib, io, json, sys
from mcicl.app.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        main({argv!r})
    except SystemExit as exit:
        code = exit.code
print(json.dumps({{"code": code, "loaded": [m for m in {heavy!r} if m in sys.modules], "help": out.getvalue()}}))
"""


def help_in_fresh_process(argv: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv, heavy=HEAVY)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def commands() -> list[list[str]]:
    return [job.command.split() for job in registry.jobs()]


@pytest.mark.parametrize("argv", [[], *commands()], ids=lambda a: " ".join(a) or "mcicl")
def test_help_imports_no_heavy_library(argv):
    found = help_in_fresh_process([*argv, "--help"])
    assert found["code"] == 0
    assert "usage: mcicl" in found["help"]
    assert found["loaded"] == [], f"`mcicl {' '.join(argv)} --help` imported {found['loaded']}"


def test_probe_detects_a_heavy_import():
    """The check itself: a process that does import numpy is caught (the probe reads sys.modules for real)."""
    proc = subprocess.run([sys.executable, "-c", "import numpy, sys, json; print(json.dumps("
                           f"[m for m in {HEAVY!r} if m in sys.modules]))"], capture_output=True, text=True,
                          timeout=120)
    assert "numpy" in json.loads(proc.stdout)


def test_every_command_is_in_the_top_level_help():
    top = help_in_fresh_process(["--help"])["help"]
    for job in registry.jobs():
        assert job.command.split()[0] in top
