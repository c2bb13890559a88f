"""``mcicl demo``: the end-to-end job of the README, on the default model and a small synthetic config.

Its stages are the registered jobs' demo stages, in their order, each into its own subfolder of one run folder:
synthetic training with OOD evaluation, the real model's concept geometry, polysemous words in sense-tagged
sentences, ICL probes, correct attention per head, the comparison (geometry-to-OOD map, geometry-matched world)
and the report, whose path is printed at the end.
"""

from __future__ import annotations

import argparse
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

log = logging.getLogger("mcicl")

# Stages of jobs not yet declared in the registry: (order, title, "module:run_demo_stage(run, args, results)").
LEGACY_STAGES: tuple[tuple[int, str, str], ...] = (
    (30, "polysemous words in context", "mcicl.probing.contexts_demo:run_demo_stage"),
)


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
    """Every demo stage, in order: the registered jobs' stages and the legacy ones."""
    found = [j.demo for j in registry.jobs() if j.demo is not None]
    found += [DemoStage(title, target, order) for order, title, target in LEGACY_STAGES
              if title not in {s.title for s in found}]
    return sorted(found, key=lambda s: s.order)


def _legacy(stage: DemoStage, ctx: DemoContext) -> dict[str, Any]:
    args = argparse.Namespace(model=ctx.model, seed=ctx.seed, small=ctx.small, quiet=ctx.quiet)
    return load(stage.run)(ctx.run, args, {"stages": ctx.results})


def execute(config: DemoConfig, ctx: JobContext) -> int:
    """Run every stage; print the report's path."""
    seed_everything(config.seed)
    out = ctx.create_run()
    plan = stages()
    demo = DemoContext(run=out, model=config.model, seed=config.seed, small=config.small, quiet=ctx.quiet,
                       reports=registry.report_catalog())
    start_all = time.perf_counter()
    legacy = {t for _, t, _ in LEGACY_STAGES}
    for stage in plan:
        start = time.perf_counter()
        log.info("demo stage: %s", stage.title)
        numbers = _legacy(stage, demo) if stage.title in legacy and stage.run.endswith(":run_demo_stage") \
            else load(stage.run)(demo)
        demo.results[stage.title] = {**numbers, "seconds": round(time.perf_counter() - start, 2)}
        log.info("demo stage %s done in %.1f s", stage.title, time.perf_counter() - start)
    DemoResult(config, {"stages": demo.results, "seconds": round(time.perf_counter() - start_all, 2)}).save(out)
    print(f"report: {demo.results['report']['report']}")
    print(f"output is in {out.path}")
    return 0
