"""``mcicl demo``'s config and job declaration (torch-free); its stages come from the registered jobs."""

from __future__ import annotations

from dataclasses import dataclass, field

from mcicl.core.configuration import require
from mcicl.core.jobs import Job, ReportSection
from mcicl.core.options import doc


@dataclass
class DemoConfig:
    """The demo's few choices: which model the real-model stages probe, a reduced size, the seed."""

    model: str = field(default="default", metadata=doc(
        "model for the real-model stages: 'default' (embedded MiniLM), a local folder or a Hub id"))
    small: bool = field(default=False, metadata=doc("a reduced config (used by the test suite)"))
    seed: int = 0

    def __post_init__(self) -> None:
        require(isinstance(self.model, str) and bool(self.model.strip()), "model", self.model,
                "'default', a local model folder, or a Hub id")
        require(isinstance(self.seed, int) and self.seed >= 0, "seed", self.seed, "an integer >= 0")


DEMO_JOB = Job(
    command="demo",
    help="run the end-to-end job on the default model (the README's main job)",
    description="Synthetic training with OOD evaluation, real-model geometry, attention-readout ICL probes, "
                "synthetic-vs-real comparison (geometry-to-OOD map, geometry-matched world) and an HTML report, "
                "on the embedded default model.",
    execute="mcicl.app.demo:execute",
    result="mcicl.app.demo:DemoResult",
    config=DemoConfig,
    fields={"demo": ("model", "small")},
    # The overview (one row per stage); each stage's own folder follows as its section, in stage order.
    report=ReportSection(
        title="Demo overview",
        text="mcicl demo ran these stages in order, each into its own subfolder below. Times are wall-clock seconds.",
        tables="mcicl.analysis.report:demo_tables", skip=("stages", "seconds"), stages=True),
)
