"""``mcicl demo``: the end-to-end job of the README, on the default model and a small synthetic config.

Stages run in order into one run folder, each into its own subfolder: synthetic training with OOD evaluation
(``synthetic/``), the real model's concept geometry (``geometry/``), polysemous words in sense-tagged
sentences (``contexts/``), attention-readout ICL probes (``icl/``), correct attention per layer and head
(``attention/``), the comparison with the geometry-to-OOD map and the geometry-matched world (``compare/``,
``sweep/``), and the report (``report/report.html``, whose path is printed at the end).
"""

from __future__ import annotations

import argparse
import logging
import time

from mcicl.analysis import compare, report
from mcicl.core.cli import add_run_options
from mcicl.core.runs import RunFolder
from mcicl.core.seeding import seed_everything
from mcicl.probing import contexts_demo, geometry_demo
from mcicl.probing.icl import attention
from mcicl.probing.icl import demo as icl_demo
from mcicl.synthetic import demo as synthetic_demo

log = logging.getLogger("mcicl")

# (stage title, run_demo_stage(run, args, results) -> dict of headline numbers)
STAGES = (
    ("synthetic training + OOD", synthetic_demo.run_demo_stage),
    ("real geometry", geometry_demo.run_demo_stage),
    ("polysemous words in context", contexts_demo.run_demo_stage),
    ("ICL probes (attention readout)", icl_demo.run_demo_stage),
    ("attention on same-concept demonstrations", attention.run_demo_stage),
    ("comparison", compare.run_demo_stage),
    ("report", report.run_demo_stage),
)


def run(args: argparse.Namespace) -> int:
    """Run every stage; print the report's path."""
    seed_everything(args.seed or 0)
    out = RunFolder.create(args.out, "demo", overwrite=args.overwrite)
    out.save_config({"model": args.model, "seed": args.seed or 0, "small": args.small,
                     "stages": [title for title, _ in STAGES]})
    results: dict = {"stages": {}}
    start_all = time.perf_counter()
    for title, run_stage in STAGES:
        start = time.perf_counter()
        log.info("demo stage: %s", title)
        stage = run_stage(out, args, results)
        results["stages"][title] = {**stage, "seconds": round(time.perf_counter() - start, 2)}
        log.info("demo stage %s done in %.1f s", title, time.perf_counter() - start)
    results["seconds"] = round(time.perf_counter() - start_all, 2)
    out.write_summary(results)
    report = results["stages"]["report"]["report"]
    print(f"report: {report}")
    print(f"output is in {out.path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``mcicl demo``."""

    p = sub.add_parser("demo", help="run the end-to-end job on the default model (the README's main job)",
                       description="Synthetic training with OOD evaluation, real-model geometry, attention-readout "
                                   "ICL probes, synthetic-vs-real comparison (geometry-to-OOD map, "
                                   "geometry-matched world) and an HTML report, on the embedded default model.")
    p.add_argument("--model", default="default",
                   help="model for the real-model stages: 'default' (embedded MiniLM), a local folder or a "
                        "Hub id (default: default)")
    p.add_argument("--small", action="store_true", help="a reduced config (used by the test suite)")
    add_run_options(p, config=False)
    p.set_defaults(func=run)
