"""``mcicl probe``: real-model commands (extract, geometry, contexts, icl, attention), one module each."""

from __future__ import annotations

import argparse

from mcicl.probing import contexts_cli, extract_cli, geometry_cli
from mcicl.probing.icl import attention_cli
from mcicl.probing.icl import cli as icl_cli

# Each module defines register(probe_subparsers).
PROBE_MODULES = (extract_cli, geometry_cli, contexts_cli, icl_cli, attention_cli)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``mcicl probe`` and its sub-commands."""
    p = sub.add_parser("probe", help="real pretrained models: extract vectors, concept geometry, ICL probes",
                       description="Probe real Hugging Face models.")
    probe_sub = p.add_subparsers(dest="probe_command", metavar="PROBE_COMMAND", required=True)
    for module in PROBE_MODULES:
        module.register(probe_sub)
