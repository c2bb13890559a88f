"""Run folders, seeding, progress bars and logging: the conventions every command shares.

A run folder holds ``config.yaml`` (the resolved config), ``summary.json`` (headline numbers), metrics as
JSONL/CSV, ``figures/`` and ``run.json`` (command, start time, versions). An existing non-empty folder is
never overwritten unless the user asks (``overwrite=True``), and then only if it is an mcicl run folder.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import logging
import os
import platform
import random
import shutil
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

from mcicl import __version__
from mcicl.core.config import save_config, to_dict

log = logging.getLogger("mcicl")
T = TypeVar("T")
_QUIET = False
RUN_MARKER = "run.json"
_NEW_RUNS: list[Path] = []  # folders created by this process, for remove_unused_runs()


class RunExistsError(FileExistsError):
    """The output folder exists and holds files; the user must pick another or pass --overwrite."""


def set_quiet(quiet: bool) -> None:
    """Silence progress bars (and info logging) for the rest of the process."""
    global _QUIET
    _QUIET = quiet


def progress_enabled() -> bool:
    """Whether progress bars are shown: not under --quiet, and only where someone watches (a terminal or Jupyter)."""
    return not _QUIET and (sys.stderr.isatty() or "ipykernel" in sys.modules)


def progress(iterable: Iterable[T], desc: str | None = None, total: int | None = None, **kw: Any) -> Iterator[T]:
    """A tqdm bar over ``iterable``; silent under --quiet or when stderr is not a terminal."""

    return iter(tqdm(iterable, desc=desc, total=total, disable=not progress_enabled(), leave=False, **kw))


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    """Configure the 'mcicl' logger: INFO by default, WARNING with --quiet, DEBUG with --verbose."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname).1s %(name)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch; return a NumPy Generator for explicit use."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def default_out(command: str, root: str | Path = "runs") -> Path:
    """``runs/<command>-<timestamp>``, made unique if two runs start in the same second."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{command.replace(' ', '-')}-{stamp}"
    out, i = base, 1
    while out.exists():
        out, i = Path(f"{base}-{i}"), i + 1
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if is_dataclass(obj):
        return to_dict(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON (NumPy scalars/arrays, Paths and dataclasses allowed), atomically."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default, allow_nan=True) + "\n")
    os.replace(tmp, path)


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSON-lines file into a list of dicts."""
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def versions() -> dict[str, str]:
    """Versions of Python, mcicl and the main libraries, for run records and reports."""
    out = {"python": platform.python_version(), "mcicl": __version__, "platform": platform.platform()}
    for name in ("torch", "transformers", "numpy", "scipy", "sklearn", "umap"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - a missing optional library is just not listed
            continue
    return out


def remove_unused_runs() -> list[Path]:
    """Delete run folders this process created that hold nothing but run.json, config.yaml and empty folders.

    Called when a command fails, so a typo (missing model, bad file) leaves no empty run folder behind that
    would then block the same --out. Anything a command wrote is kept.
    """
    removed = []
    for path in _NEW_RUNS:
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
        if path.is_dir() and all(p in (path / RUN_MARKER, path / "config.yaml") for p in files):
            shutil.rmtree(path)
            removed.append(path)
    _NEW_RUNS.clear()
    return removed


@dataclass
class RunFolder:
    """An output folder of one command: config, summary, metrics and figures."""

    path: Path

    @classmethod
    def create(
        cls,
        out: str | Path | None,
        command: str,
        *,
        overwrite: bool = False,
        resume: bool = False,
        root: str | Path = "runs",
    ) -> RunFolder:
        """Make the folder; refuse to reuse a non-empty one unless ``overwrite`` or ``resume``."""
        path = Path(out) if out else default_out(command, root)
        if path.exists() and not path.is_dir():
            raise RunExistsError(f"--out {path} is a file, not a folder; choose a folder path")
        if path.is_dir() and any(path.iterdir()) and not resume:
            if not overwrite:
                raise RunExistsError(
                    f"--out {path} already exists and is not empty; choose another --out, "
                    "pass --overwrite to replace it, or --resume where the command supports it"
                )
            if not (path / RUN_MARKER).is_file():
                raise RunExistsError(
                    f"--out {path} is not an mcicl run folder (no {RUN_MARKER}); refusing to delete "
                    "files mcicl did not write even with --overwrite"
                )
            shutil.rmtree(path)
        if resume and not (path / RUN_MARKER).is_file():
            raise RunExistsError(f"--resume: {path} is not an mcicl run folder (no {RUN_MARKER}) to resume")
        (path / "figures").mkdir(parents=True, exist_ok=True)
        run = cls(path)
        if not resume:
            _NEW_RUNS.append(path)
            write_json(
                path / RUN_MARKER,
                {"command": command, "started": _dt.datetime.now().isoformat(timespec="seconds"),
                 "argv": sys.argv, "versions": versions()},
            )
        return run

    @property
    def figures(self) -> Path:
        """The figures/ subfolder."""
        return self.path / "figures"

    def save_config(self, config: Any) -> None:
        """Write config.yaml (the resolved config)."""
        save_config(config, self.path / "config.yaml")

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        """Write summary.json (headline numbers)."""
        write_json(self.path / "summary.json", summary)
        return self.path / "summary.json"

    def append_jsonl(self, name: str, rows: Iterable[Mapping[str, Any]]) -> Path:
        """Append rows to ``name`` (JSON lines)."""
        path = self.path / name
        with open(path, "a") as fh:
            for row in rows:
                fh.write(json.dumps(row, default=_json_default) + "\n")
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
