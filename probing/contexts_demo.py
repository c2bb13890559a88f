"""Demo stage "polysemous words in context": the default model on the built-in contexts, into ``contexts/``."""

from __future__ import annotations

import argparse
from typing import Any

from mcicl.core.runs import RunFolder
from mcicl.probing.contexts_cli import write_contexts_run
from mcicl.probing.contextual import ContextsConfig, measure_contexts
from mcicl.probing.extract import ExtractionConfig


def run_demo_stage(run: RunFolder, args: argparse.Namespace, results: dict) -> dict[str, Any]:
    """Contextual geometry of every layer (``--small``: 200 permutations and resamples instead of 1000)."""
    small = bool(getattr(args, "small", False))
    extraction = ExtractionConfig(model=getattr(args, "model", "default"), batch_size=32)
    cfg = ContextsConfig(extraction=extraction, permutations=200 if small else 1000,
                         bootstrap=200 if small else 1000, seed=getattr(args, "seed", None) or 0)
    folder = RunFolder.create(run.path / "contexts", "probe contexts", overwrite=True)
    result = measure_contexts(cfg, quiet=bool(getattr(args, "quiet", False)))
    summary = write_contexts_run(result, cfg, folder)
    acc, base = summary["sense_accuracy"], summary["baseline_accuracy"]
    return {"folder": str(folder.path), "best_layer": summary["best_layer"], "sense_accuracy": acc["value"],
            "sense_accuracy_ci_low": acc["ci_low"], "sense_accuracy_null": acc["null"],
            "sense_accuracy_p": acc["p_value"], "out_of_context_accuracy": base["value"],
            "pair_auc": summary["pair_auc"]["value"], "shift": summary["shift"]["value"]}
