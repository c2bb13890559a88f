"""``mcicl probe``: real-model commands (extract, geometry, icl), each registered by its own module."""

from __future__ import annotations

import argparse
import importlib

# Each module defines register(probe_subparsers).
PROBE_MODULES = ("probing.extract_cli", "probing.geometry_cli", "probing.icl.cli")


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


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``mcicl probe`` and its sub-commands."""
    p = sub.add_parser("probe", help="real pretrained models: extract vectors, concept geometry, ICL probes",
                       description="Probe real Hugging Face models.")
    probe_sub = p.add_subparsers(dest="probe_command", metavar="PROBE_COMMAND", required=True)
    for name in PROBE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name and not name.startswith(f"{err.name}."):
                raise
            continue  # not built yet; `mcicl demo` lists what is missing
        module.register(probe_sub)
