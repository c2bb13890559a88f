"""``mcicl demo``: the end-to-end job of the README, on the default model and a small synthetic config.

Its stages are the registered jobs' demo stages, in their order, each into its own subfolder of one run folder:
synthetic training with OOD evaluation, the real model's concept geometry, polysemous words in sense-tagged
sentences, ICL probes, correct attention per head, the comparison (geometry-to-OOD map, geometry-matched world)
and the report, whose path is printed at the end.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from mcicl.app import registry
from mcicl.app.demo_config import DemoConfig
from mcicl.core.configuration import to_dict
from mcicl.core.jobs import DemoContext, DemoStage, JobContext, load
from mcicl.core.runs import RunFolder
from mcicl.core.seeding import seed_everything
from mcicl.probing.models import load_model

log = logging.getLogger("mcicl")

@dataclass
class DemoResult:
    """The demo's own record: each stage's headline numbers and time. Its figures are its stages' (each stage
    folder is a full run of its job), so ``figures()`` has none of its own."""

    config: DemoConfig
    summary: dict[str, Any]

    def figures(self) -> dict[str, Any]:
        return {}

    def save(self, run: RunFolder) -> None:
        run.save_config({**to_dict(self.config), "stages": list(self.summary.get("stages", {}))})
        run.write_summary(self.summary)


def stages() -> list[DemoStage]:
    """Every registered job's demo stage, in order."""
    return sorted((j.demo for j in registry.jobs() if j.demo is not None), key=lambda s: s.order)


def execute(config: DemoConfig, ctx: JobContext) -> int:
    """Run every stage; print the report's path."""
    # A model that cannot load (a typo, weights that do not fit its config) is refused before the synthetic
    # stage trains for a minute and before the output folder is made; each stage then loads it itself.
    load_model(config.model)
    seed_everything(config.seed)
    out = ctx.create_run()
    plan = stages()
    demo = DemoContext(run=out, model=config.model, seed=config.seed, small=config.small, quiet=ctx.quiet,
                       reports=registry.report_catalog())
    start_all = time.perf_counter()
    for stage in plan:
        start = time.perf_counter()
        log.info("demo stage: %s", stage.title)
        numbers = load(stage.run)(demo)
        demo.results[stage.title] = {**numbers, "seconds": round(time.perf_counter() - start, 2)}
        log.info("demo stage %s done in %.1f s", stage.title, time.perf_counter() - start)
    DemoResult(config, {"stages": demo.results, "seconds": round(time.perf_counter() - start_all, 2)}).save(out)
    print(f"report: {demo.results['report']['report']}")
    print(f"output is in {out.path}")
    return 0
