"""Command-line options shared by every command (run folder, seed, config file, model loading), and the one
way a command merges ``--config FILE`` with its options (:func:`merge_config`).

They live at the bottom layer so each command module can use them without importing the top-level CLI.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from mcicl.core.config import from_dict, read_mapping

T = TypeVar("T")


def add_run_options(parser: argparse.ArgumentParser, *, config: bool = True, seed: bool = True) -> None:
    """The options every run-producing command shares: --out, --overwrite, --seed, --config, --quiet."""
    g = parser.add_argument_group("run folder and reproducibility")
    g.add_argument("--out", metavar="DIR", default=None,
                   help="output run folder (default: runs/<command>-<timestamp>); an existing non-empty "
                        "folder is refused unless --overwrite")
    g.add_argument("--overwrite", action="store_true",
                   help="replace an existing mcicl run folder given as --out")
    if seed:
        g.add_argument("--seed", type=int, default=None,
                       help="random seed; the same config and seed give the same numbers (default: 0)")
    if config:
        g.add_argument("--config", metavar="FILE", default=None,
                       help="YAML or JSON file of config fields; command-line options override it")
    g.add_argument("--quiet", action="store_true", help="no progress bars, warnings and errors only")
    g.add_argument("--verbose", action="store_true", help="debug logging")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model, --dtype, --device, --trust-remote-code: how every probe command loads its model."""
    g = parser.add_argument_group("model")
    g.add_argument("--model", default="default",
                   help="'default' (the embedded all-MiniLM-L6-v2), a local model folder, or a Hugging Face "
                        "Hub id such as EleutherAI/pythia-160m (default: default)")
    g.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="weights dtype (default: float32)")
    g.add_argument("--device", default="auto",
                   help="'auto' (cuda, then mps, then cpu), 'cpu', 'cuda', 'cuda:1', 'mps', or 'balanced' "
                        "for device_map='auto' across GPUs for models larger than one (default: auto)")
    g.add_argument("--trust-remote-code", action="store_true",
                   help="allow model repositories to run their own code (off unless you ask)")


def merge_config(cls: type[T], args: argparse.Namespace, fields: Iterable[str], *,
                 extra: Mapping[str, Any] | None = None, file_data: Mapping[str, Any] | None = None) -> T:
    """The resolved ``cls`` config of a command: defaults, then ``--config FILE``, then the options given.

    ``fields`` are config fields that are also options (``args.<field>``); an option left at None was not given
    and does not override the file. ``extra`` holds values the command derived from other options (a
    ``--no-probes`` flag, ``--set`` pairs). ``file_data`` replaces reading ``args.config`` when the command has
    taken non-config keys out of the file first. Every command builds its config this way.
    """
    data = dict(file_data) if file_data is not None else (
        read_mapping(args.config) if getattr(args, "config", None) else {})
    given = {name: getattr(args, name) for name in fields if getattr(args, name, None) is not None}
    data.update({k: v for k, v in (extra or {}).items() if v is not None})
    data.update(given)  # an option named for the field wins over a derived value (--seeds over --set seeds=)
    return from_dict(cls, data)
