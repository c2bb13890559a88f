"""Command-line options shared by every command (run folder, seed, config file, model loading).

They live at the bottom layer so each command module can use them without importing the top-level CLI.
"""

from __future__ import annotations

import argparse


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
