"""Run-folder locks go through filelock (portable: flock on POSIX, LockFileEx on Windows), not fcntl directly."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import filelock
import pytest

from mcicl.core import runs
from mcicl.core.runs import RunBusyError


def test_runs_module_uses_filelock_not_fcntl():
    tree = ast.parse(Path(runs.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "fcntl" not in imported and "filelock" in imported


def test_lock_is_exclusive_names_its_holder_and_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    lock = runs._acquire_lock(out)
    assert isinstance(lock, filelock.BaseFileLock) and lock.is_locked
    lock_file = tmp_path / ".out.mcicl-lock"
    assert runs._holder(lock_file) == str(os.getpid())
    with pytest.raises(RunBusyError, match=f"being written by another mcicl process \\(pid {os.getpid()}\\)"):
        runs._acquire_lock(out)  # a second lock object on the same file: refused, not re-entered
    runs._release_lock(out, lock)
    assert not lock.is_locked and not lock_file.exists()
    again = runs._acquire_lock(out)  # free again
    runs._release_lock(out, again)
    assert list(tmp_path.iterdir()) == []
