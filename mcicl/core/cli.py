"""Command-line options shared by every command (run folder, seed, config file, model loading), and the one
way a command merges ``--config FILE`` with its options (:func:`merge_config`).

They live at the bottom layer so each command module can use them without importing the top-level CLI.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from mcicl.core.configuration import from_dict, merge, read_mapping

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


def merge_config(cls: type[T], args: argparse.Namespace, fields: Iterable[str | Mapping[str, str]], *,
                 extra: Mapping[str, Any] | None = None, file_data: Mapping[str, Any] | None = None) -> T:
    """The resolved ``cls`` config of a command: defaults, then ``--config FILE``, then the options given.

    ``fields`` name config fields that are also options: ``"seed"`` reads ``args.seed``; a dotted path
    ``"extraction.model"`` reads ``args.model`` into the nested ``extraction`` section; a mapping
    ``{"layer": "extraction.layers"}`` reads an option whose name differs from the field. An option left at None
    was not given and does not override the file. ``extra`` holds values (by field path) the command derived from
    other options (a ``--no-probes`` flag, ``--set`` pairs). ``file_data`` replaces reading ``args.config`` when
    the command has taken non-config keys out of the file first. Every command builds its config this way.
    """
    data = dict(file_data) if file_data is not None else (
        read_mapping(args.config) if getattr(args, "config", None) else {})
    options: dict[str, str] = {}  # option dest -> config path
    for item in fields:
        options.update(item if isinstance(item, Mapping) else {item.rsplit(".", 1)[-1]: item})
    given = {path: getattr(args, dest) for dest, path in options.items() if getattr(args, dest, None) is not None}
    # an option named for the field wins over a derived value (--seeds over --set seeds=)
    for values in (extra or {}, given):
        data = merge(data, _nest({k: v for k, v in values.items() if v is not None}))
    return from_dict(cls, data)


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"a.b": 1, "c": 2} -> {"a": {"b": 1}, "c": 2}."""
    out: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, leaf = path.split(".")
        node = out
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return out
