"""A toy job written by following docs/contributing.md step by step (tests/test_contributing.py runs the walk).

It measures the mean cosine between random unit vectors in ``dim`` dimensions: a number with a known answer
(about 0, with spread 1/sqrt(dim)), one figure, one report section and one demo stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mcicl.core.configuration import require
from mcicl.core.jobs import CsvTable, DemoContext, DemoStage, Job, JobContext, ReportSection
from mcicl.core.options import doc
from mcicl.core.runs import RunFolder


# 1. The config: a dataclass in a torch-free module; each option-worthy field documents itself.
@dataclass
class ToyConfig:
    """How many random vectors, in how many dimensions."""

    n: int = field(default=20, metadata=doc("random unit vectors drawn"))
    dim: int = field(default=8, metadata=doc("their dimension"))
    seed: int = 0

    def __post_init__(self) -> None:
        require(isinstance(self.n, int) and self.n >= 2, "n", self.n, "an integer >= 2")
        require(isinstance(self.dim, int) and self.dim >= 1, "dim", self.dim, "an integer >= 1")


# 2. The result: summary, figures() and save(run).
@dataclass
class ToyResult:
    config: ToyConfig
    cosines: list[float]
    summary: dict[str, Any]

    def figures(self) -> dict[str, Any]:
        from matplotlib.figure import Figure  # deferred: a toy job in a test file; real jobs import at the top

        fig = Figure(figsize=(4, 3))
        ax = fig.subplots()
        ax.hist(self.cosines, bins=10)
        ax.set_xlabel("cosine of two random unit vectors")
        ax.set_ylabel("pairs")
        return {"toy_cosines": fig}

    def save(self, run: RunFolder) -> None:
        from mcicl.core.plotting import Caption, save_figure

        run.save_config(self.config)
        run.write_csv("cosines.csv", [{"pair": i, "cosine": c} for i, c in enumerate(self.cosines)])
        for name, fig in self.figures().items():
            save_figure(fig, run.figures, name, caption=Caption(
                "Toy job: cosines of random unit vectors", "How to read it: centred on 0, spread 1/sqrt(dim)."))
        run.write_summary(self.summary)


# 3. The computation: a function of the config that returns the result (nothing written).
def toy(config: ToyConfig) -> ToyResult:
    import numpy as np

    rng = np.random.default_rng(config.seed)
    x = rng.standard_normal((config.n, config.dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cos = (x @ x.T)[np.triu_indices(config.n, 1)]
    return ToyResult(config, [float(c) for c in cos],
                     {"mean_cosine": float(cos.mean()), "n_pairs": int(cos.size), "expected_sd": config.dim ** -0.5})


# 4. The entry point the command line calls: validate, open the run folder, compute, save, print.
def execute(config: ToyConfig, ctx: JobContext) -> int:
    run = ctx.create_run()
    result = toy(config)
    result.save(run)
    print(f"mean cosine {result.summary['mean_cosine']:.3f}; output is in {run.path}")
    return 0


# 5. The demo stage: the same job at demo size, into a subfolder of the demo's run folder.
def demo_stage(ctx: DemoContext) -> dict[str, Any]:
    run = ctx.stage_run("toy", "toy")
    result = toy(ToyConfig(seed=ctx.seed))
    result.save(run)
    return {"folder": str(run.path), "mean_cosine": result.summary["mean_cosine"]}


# 6. The declaration: one Job; the registry line is `register(TOY_JOB)` (or an entry in registry._JOBS).
TOY_JOB = Job(
    command="toy",
    help="a toy job: cosines of random unit vectors",
    description="Draw random unit vectors and measure their pairwise cosines (known answer: about 0).",
    execute="tests.toy_job:execute",
    config=ToyConfig,
    fields={"what to draw": ("n", "dim")},
    report=ReportSection(title="Toy job: random cosines", text="Pairwise cosines of random unit vectors.",
                         csv_tables=(CsvTable("cosines.csv", "Cosines", "One row per pair."),)),
    demo=DemoStage("toy stage", "tests.toy_job:demo_stage", order=65),
)
