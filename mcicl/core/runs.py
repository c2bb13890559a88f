"""Run folders: the transaction every command's output goes through.

A run folder holds ``config.yaml`` (the resolved config), ``summary.json`` (headline numbers), metrics as
JSONL/CSV, ``figures/`` and ``run.json`` (command, start time, versions, status and, once finished, the list
of files the run wrote). Nothing is lost and nothing unfinished passes as finished:

- an existing non-empty folder is replaced only when asked (``overwrite``), only if it is an mcicl run, and
  only if it holds nothing but the files that run wrote (notes or folders a user added stop it);
- the run being replaced is moved to a hidden sibling until the new one succeeds, then deleted; a failed
  command puts it back, so every folder that existed before a failed command is byte-identical after it;
- a run is locked (a :mod:`filelock` lock on a hidden sibling ``.NAME.mcicl-lock``: ``flock`` on POSIX,
  ``LockFileEx`` on Windows; the system drops it when the process dies) from create to commit: a second
  process writing the same folder gets :class:`RunBusyError`;
- ``run.json``'s status is 'running' until :meth:`RunFolder.commit`; readers check it with :func:`require_run`.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import json
import logging
import os
import shutil
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import BaseFileLock, FileLock, Timeout

from mcicl.core.configuration import save_config
from mcicl.core.io import json_default, read_json, versions, write_json

log = logging.getLogger("mcicl")
RUN_MARKER = "run.json"


class RunExistsError(FileExistsError):
    """The output folder cannot be used: it exists and holds files, is an input, or is being written."""


def default_out(command: str, root: str | Path = "runs") -> Path:
    """``runs/<command>-<timestamp>``, made unique if two runs start in the same second."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{command.replace(' ', '-')}-{stamp}"
    out, i = base, 1
    while out.exists():
        out, i = Path(f"{base}-{i}"), i + 1
    return out


class RunBusyError(RunExistsError):
    """Another process is writing the same output folder."""


class RunStateError(ValueError):
    """A folder given as an input is not a finished run of the kind a command reads."""


_OPEN: list[RunFolder] = []  # run folders of this process not yet committed or aborted, oldest first
_ARGV: list[str] | None = None  # the command line recorded in run.json (None: sys.argv)


@contextlib.contextmanager
def run_transaction(argv: Sequence[str] | None = None) -> Iterator[None]:
    """Leaving this block commits every run folder opened atomically inside it on success, and aborts them (every
    folder put back as it was) on an error or Ctrl-C.

    ``mcicl``'s ``main`` runs each command inside it; the command's folders are atomic because the command opens
    them with ``atomic=True`` (``JobContext.create_run``), not because of this block. ``argv`` is the command line
    run.json records (default: ``sys.argv``).
    """
    global _ARGV
    before, _ARGV = _ARGV, (list(argv) if argv is not None else None)
    try:
        yield
    except KeyboardInterrupt:
        abort_open_runs("interrupted")
        raise
    except BaseException:
        abort_open_runs("failed")
        raise
    else:
        commit_open_runs()
    finally:
        _ARGV = before


def _lock_path(path: Path) -> Path:
    return path.parent / f".{path.name}.mcicl-lock"


def _aside_prefix(path: Path) -> str:
    return f".{path.name}.mcicl-previous-"


HOLDER_OFFSET = 8  # the pid sits past byte 0, the byte Windows' LockFileEx locks (unreadable to other processes)


def _write_holder(fd: int) -> None:
    """Record the holder's pid in the lock file (read back in the message a second writer gets)."""
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, b" " * (HOLDER_OFFSET - 1) + f"\n{os.getpid()}\n".encode())


def _holder(lock: Path) -> str:
    """The pid written in a lock file, or '?'."""
    try:
        with open(lock, "rb") as f:
            f.seek(HOLDER_OFFSET)
            return f.read(64).decode(errors="replace").strip() or "?"
    except OSError:
        return "?"


def _acquire_lock(path: Path) -> BaseFileLock:
    """An exclusive, non-blocking lock on the folder's lock file (a hidden sibling); the system drops it if we die.

    :class:`filelock.FileLock` picks the platform's primitive (``flock`` on POSIX, ``LockFileEx`` on Windows)
    and refuses an inode a releasing holder has already unlinked, so two processes never both hold the lock.
    """
    lock_file = _lock_path(path)
    lock = FileLock(lock_file, blocking=False, thread_local=False, on_acquired=_write_holder)
    try:
        lock.acquire()
    except Timeout:
        raise RunBusyError(f"output folder {path} is being written by another mcicl process (pid "
                           f"{_holder(lock_file)}); accepted: wait for it to finish, or choose another output "
                           "folder") from None
    return lock


def _release_lock(path: Path, lock: BaseFileLock) -> None:
    """Remove the lock file, then unlock it. The unlink comes first on POSIX, so a process that opened the old
    file cannot lock it after us (filelock refuses an unlinked inode); Windows cannot unlink a file held open, so
    there the lock is released first and filelock's own release removes the file."""
    if os.name != "nt":
        _lock_path(path).unlink(missing_ok=True)
    lock.release()
    if os.name == "nt":
        with contextlib.suppress(OSError):
            _lock_path(path).unlink(missing_ok=True)


def _tree(path: Path) -> list[str]:
    """Relative paths of every file and folder under ``path`` (folders end with '/'), sorted."""
    return sorted(str(p.relative_to(path)) + ("/" if p.is_dir() else "") for p in path.rglob("*"))


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        data = read_json(path / RUN_MARKER)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _open_parent(path: Path) -> RunFolder | None:
    """The open run folder of this process that ``path`` lies inside (a stage or sweep point of it), if any."""
    resolved = path.resolve()
    for run in reversed(_OPEN):
        if resolved != run.path.resolve() and resolved.is_relative_to(run.path.resolve()):
            return run
    return None


def _recover(path: Path) -> None:
    """Undo what a killed ``--overwrite`` of ``path`` left (we hold the lock, so its writer is gone)."""
    for aside in sorted(path.parent.glob(_aside_prefix(path) + "*")):
        marker = _read_marker(path) if path.is_dir() else None
        if marker is not None and marker.get("status") == "complete":
            shutil.rmtree(aside)  # the new run finished; only deleting the old one was left to do
            continue
        if path.is_dir():
            started = marker is None and not any(p.is_file() for p in path.rglob("*"))  # killed before run.json
            if not started and (marker is None or marker.get("status") != "running"):
                raise RunExistsError(f"{path} and {aside} both exist after an interrupted overwrite; "
                                     "accepted: keep one of them by hand, then rerun")
            shutil.rmtree(path)  # the unfinished new run of the killed process
        os.replace(aside, path)
        log.warning("restored %s: the run an interrupted --overwrite had moved aside", path)


@dataclass
class RunFolder:
    """An output folder of one command: config, summary, metrics and figures.

    A run is *open* from :meth:`create` until :meth:`commit` (success) or :meth:`abort` (failure); use it as
    a context manager (``with RunFolder.create(...) as run:``) or let ``mcicl``'s ``main`` do both. While open,
    the folder is locked against other processes, and a run it replaces (``overwrite``) waits in a hidden
    sibling: on failure the folder is put back exactly as it was, so a failed command loses nothing.
    """

    path: Path
    command: str = ""
    resume: bool = False
    resumable: bool = False
    sources: dict[str, str] = field(default_factory=dict)  # config field path -> where its value came from
    _lock: BaseFileLock | None = field(default=None, repr=False)
    _aside: Path | None = field(default=None, repr=False)
    _created: list[Path] = field(default_factory=list, repr=False)  # folders that did not exist before

    @classmethod
    def create(
        cls,
        out: str | Path | None,
        command: str,
        *,
        overwrite: bool = False,
        resume: bool = False,
        resumable: bool = False,
        inputs: Mapping[str, str | Path | None] | None = None,
        atomic: bool = False,
        root: str | Path = "runs",
        sources: Mapping[str, str] | None = None,
    ) -> RunFolder:
        """Open the output folder ``out``; refuse a non-empty one unless ``overwrite`` or ``resume``.

        ``inputs`` ({parameter: path}) are the folders or files the command reads: ``out`` may not be one of
        them, lie inside one, or contain one. ``resumable`` runs (training with checkpoints) keep an
        new folder interrupted by the user (Ctrl-C), marked unfinished, so ``resume`` can continue it; other
        failed runs vanish.

        ``atomic`` (True for every ``mcicl`` command, through ``JobContext.create_run``; False by default, for
        plain library calls) locks the folder and keeps a replaced run aside until :meth:`commit`; use the run as a
        context manager then. A non-atomic run is written in place and never needs a commit.

        ``sources`` ({config field path: where its value came from}) is recorded in run.json and as comments in
        config.yaml, so a reader sees which values the user set and which are defaults.
        """
        path = Path(out) if out else default_out(command, root)
        if path.exists() and not path.is_dir():
            raise RunExistsError(f"output folder {path} is a file; accepted: a folder path")
        blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise RunExistsError(f"output folder {path}: {blocking} is a file, so no folder can be made inside it; "
                                 "accepted: a folder path whose parents are folders")
        for name, given in (inputs or {}).items():
            if given is None or not Path(given).exists():
                continue
            a, b = path.resolve(), Path(given).resolve()
            if a == b or a.is_relative_to(b) or b.is_relative_to(a):
                how = "is" if a == b else "lies inside" if a.is_relative_to(b) else "holds"
                raise RunExistsError(f"output folder {path} {how} the input {name}={given}; accepted: an output "
                                     "folder apart from every input (not one, inside one, or holding one)")
        parent = _open_parent(path)
        if parent is not None:  # a stage of an open run: the outer run's lock and swap protect it
            nested = cls._create_nested(path, command, overwrite=overwrite, resume=resume)
            nested.sources = dict(sources or {})
            return nested
        if not atomic:
            run = cls(path, command, resume=resume, sources=dict(sources or {}))
            run._prepare(overwrite, atomic=False)
            return run
        if any(run.path.resolve() == path.resolve() for run in _OPEN):
            raise RunBusyError(f"output folder {path} is still open in this process; accepted: commit() or abort() "
                               "the earlier RunFolder first (or use it with `with`)")
        created = [p for p in [path, *path.parents] if not p.exists()]
        path.parent.mkdir(parents=True, exist_ok=True)
        run = cls(path, command, resume=resume, resumable=resumable, sources=dict(sources or {}),
                  _created=created[::-1])
        run._lock = _acquire_lock(path)
        try:
            _recover(path)
            run._prepare(overwrite)
        except BaseException:  # an error or a signal (SIGTERM) while preparing: put a moved-aside run back
            if run._aside is not None and run._aside.exists():
                if path.exists():
                    shutil.rmtree(path)
                os.replace(run._aside, path)
                run._aside = None
            run._release()
            raise
        _OPEN.append(run)
        return run

    @classmethod
    def _create_nested(cls, path: Path, command: str, *, overwrite: bool, resume: bool) -> RunFolder:
        if path.is_dir() and any(path.iterdir()) and not resume:
            if not overwrite:
                raise RunExistsError(f"stage folder {path} already exists inside the run being written")
            shutil.rmtree(path)
        (path / "figures").mkdir(parents=True, exist_ok=True)
        run = cls(path, command, resume=resume)
        if not resume:
            run._write_marker(status=None)
        return run

    def _prepare(self, overwrite: bool, atomic: bool = True) -> None:
        """Check the folder, move a run it replaces aside (atomic) or delete it, write run.json."""
        path = self.path
        marker = _read_marker(path) if path.is_dir() else None
        if self.resume:
            if marker is None:
                raise RunExistsError(f"resume: {path} is not an mcicl run folder (no {RUN_MARKER}); accepted: "
                                     "the output folder of an earlier run of the same command")
            if atomic:
                self._write_marker(status="running", previous=marker)
            return
        if path.is_dir() and any(path.iterdir()):
            if not overwrite:
                unfinished = marker is not None and marker.get("status") not in (None, "complete")
                raise RunExistsError(
                    f"output folder {path} already exists and holds "
                    + ("an unfinished run" if unfinished else "files")
                    + "; accepted: another output folder, overwrite (--overwrite) to replace it"
                    + (", or resume (--resume) where the command supports it" if unfinished else ""))
            if marker is None:
                raise RunExistsError(f"output folder {path} is not an mcicl run folder (no {RUN_MARKER}); refusing "
                                     "to replace files mcicl did not write, even with overwrite")
            written = marker.get("files")
            if written is not None:
                foreign = [p for p in _tree(path) if p not in set(written) | {RUN_MARKER}]
                if foreign:
                    raise RunExistsError(
                        f"output folder {path} holds files this run did not write: {', '.join(foreign[:5])}"
                        + (f" (+{len(foreign) - 5} more)" if len(foreign) > 5 else "")
                        + "; accepted: move them out first, or choose another output folder")
            if atomic:
                self._aside = path.parent / f"{_aside_prefix(path)}{os.getpid()}"
                os.replace(path, self._aside)
            else:
                shutil.rmtree(path)
        if path.is_dir():  # an empty folder the user made: keep it (and leave it empty on failure)
            self._created = [p for p in self._created if p != path]
        (path / "figures").mkdir(parents=True, exist_ok=True)
        self._write_marker(status="running" if atomic else None)

    def _write_marker(self, status: str | None, previous: Mapping[str, Any] | None = None, **extra: Any) -> None:
        data = dict(previous) if previous else {
            "command": self.command, "started": _dt.datetime.now().isoformat(timespec="seconds"),
            "argv": _ARGV if _ARGV is not None else sys.argv, "versions": versions()}
        if self.sources:
            data["sources"] = dict(self.sources)
        if status is not None:
            data.update(status=status, pid=os.getpid(), **extra)
        write_json(self.path / RUN_MARKER, data)

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort("interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed")

    @property
    def is_open(self) -> bool:
        """Whether the run is neither committed nor aborted yet."""
        return self in _OPEN

    def commit(self) -> None:
        """The command succeeded: mark the run complete, list its files, drop the run it replaced, unlock."""
        if not self.is_open:
            return
        files = [p for p in _tree(self.path) if p != RUN_MARKER]
        marker = _read_marker(self.path) or {}
        marker.update(status="complete", finished=_dt.datetime.now().isoformat(timespec="seconds"), files=files)
        marker.pop("pid", None)
        write_json(self.path / RUN_MARKER, marker)
        if self._aside is not None:
            shutil.rmtree(self._aside)
        self._release()

    def abort(self, status: str = "failed") -> None:
        """The command failed: put every folder back as it was (or, for a resumable run, keep it unfinished)."""
        if not self.is_open:
            return
        # An interrupted new training run keeps its checkpoints for --resume; an error would only recur.
        keep = self.resume or (self.resumable and status == "interrupted" and self._aside is None
                               and self._has_work())
        if keep:
            marker = _read_marker(self.path) or {}
            marker.update(status=status, files=[p for p in _tree(self.path) if p != RUN_MARKER])
            write_json(self.path / RUN_MARKER, marker)
        else:
            if self.path in self._created:
                shutil.rmtree(self.path, ignore_errors=True)
            elif self.path.is_dir():  # an empty folder the user made (or the replaced run's place)
                shutil.rmtree(self.path, ignore_errors=True)
                if self._aside is None:
                    self.path.mkdir()
            if self._aside is not None:
                os.replace(self._aside, self.path)
        self._release()
        if not keep:  # parent folders this run made, now empty (the lock file was in the innermost one)
            for folder in reversed(self._created):
                if folder != self.path and folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()

    def _has_work(self) -> bool:
        return any(p.is_file() for p in self.path.rglob("*") if p.name not in (RUN_MARKER, "config.yaml"))

    def _release(self) -> None:
        if self in _OPEN:
            _OPEN.remove(self)
        if self._lock is not None:
            _release_lock(self.path, self._lock)
            self._lock = None

    @property
    def figures(self) -> Path:
        """The figures/ subfolder."""
        return self.path / "figures"

    def save_config(self, config: Any) -> None:
        """Write config.yaml (the resolved config); a value the user set carries a comment saying where from."""
        save_config(config, self.path / "config.yaml", sources=self.sources)

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        """Write summary.json (headline numbers; strict JSON, NaN written as null)."""
        write_json(self.path / "summary.json", summary)
        return self.path / "summary.json"

    def append_jsonl(self, name: str, rows: Iterable[Mapping[str, Any]]) -> Path:
        """Append rows to ``name`` (JSON lines)."""
        path = self.path / name
        with open(path, "a") as fh:
            for row in rows:
                fh.write(json.dumps(row, default=json_default) + "\n")
        return path

    def write_csv(self, name: str, rows: list[Mapping[str, Any]], fieldnames: list[str] | None = None) -> Path:
        """Write rows to a CSV file (columns: ``fieldnames`` or the union of the rows' keys, in order)."""
        path = self.path / name
        if fieldnames is None:
            fieldnames = list(dict.fromkeys(k for row in rows for k in row))
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)
        return path


def commit_open_runs() -> None:
    """Commit every open run folder of this process, innermost first (``main`` calls it after success)."""
    for run in reversed(list(_OPEN)):
        run.commit()


def abort_open_runs(status: str = "failed") -> None:
    """Abort every open run folder of this process, innermost first (``main`` calls it after a failure)."""
    for run in reversed(list(_OPEN)):
        run.abort(status)


def recover_overwrite(path: str | Path) -> bool:
    """Put back the run an interrupted ``--overwrite`` of ``path`` moved aside (its writer was killed before it
    could, by SIGKILL or a power cut); True if there was one. Every reader of a run folder does this first, so
    an interrupted overwrite is restored automatically, with a warning."""
    path = Path(path)
    if not any(path.parent.glob(_aside_prefix(path) + "*")):
        return False
    try:
        lock = _acquire_lock(path)
    except RunBusyError:
        return False  # its writer is alive and will restore or commit it
    try:
        _recover(path)
    finally:
        _release_lock(path, lock)
    return True


def run_state(path: str | Path) -> str:
    """'complete', 'legacy' (a run.json without status), 'open here', 'running', or 'failed'/'interrupted'/...

    A 'running' run whose writer is gone (its lock is free) is reported as 'unfinished'.
    """
    path = Path(path)
    marker = _read_marker(path)
    if marker is None:
        return "not a run"
    status = marker.get("status")
    if status is None:
        return "legacy"
    if status != "running":
        return str(status)
    if any(run.path.resolve() == path.resolve() for run in _OPEN):
        return "open here"
    try:
        lock = _acquire_lock(path)
    except RunBusyError:
        return "running"
    _release_lock(path, lock)
    return "unfinished"


def require_run(path: str | Path | None, param: str, commands: Iterable[str] | None = None, *,
                finished: bool = True) -> Path | None:
    """Check that ``path`` (the ``param`` input) is a finished mcicl run of one of ``commands``; return it.

    ``finished=False`` also accepts an unfinished run that no process is writing (what ``--resume`` continues).

    Raises FileNotFoundError (no such folder) or RunStateError naming the parameter, what was found and what
    is accepted. ``None`` passes through (an optional input not given).
    """
    if path is None:
        return None
    path = Path(path)
    kinds = list(commands or [])
    accepted = ("a finished run folder of " + " or ".join(f"`mcicl {c}`" for c in kinds)) if kinds else \
        "a finished mcicl run folder"
    if not path.is_dir():
        raise FileNotFoundError(f"run folder not found: {param}={path}; accepted: {accepted}")
    recover_overwrite(path)  # a run an interrupted --overwrite moved aside comes back before anything is read
    marker = _read_marker(path)
    if marker is None:
        raise RunStateError(f"{param}={path} is not an mcicl run folder (no {RUN_MARKER}); accepted: {accepted}")
    state = run_state(path)
    if state not in ("complete", "legacy", "open here") and (finished or state == "running"):
        raise RunStateError(f"{param}={path} is an unfinished run (status: {state}); accepted: {accepted} "
                            "(rerun it, or continue it with --resume where the command supports it)")
    command = str(marker.get("command", ""))
    if kinds and not any(command == c or command.startswith(c + " ") for c in kinds):
        raise RunStateError(f"{param}={path} is a `mcicl {command}` run; accepted: {accepted}")
    return path
