"""Demo stage: attention-readout ICL on the default model and the built-in concept sets (into ``run/icl``)."""

from __future__ import annotations

import argparse

from mcicl.core.runs import RunFolder
from mcicl.probing.extract import ExtractionConfig
from mcicl.probing.icl.run import IclConfig, run_icl


def demo_config(args: argparse.Namespace):
    """The ICL config of the demo (smaller with ``args.small``)."""

    small = bool(getattr(args, "small", False))
    return IclConfig(extraction=ExtractionConfig(model=args.model, layers="last", device="cpu"), suite="polysemy",
                     readout="attention", shots=[0, 2, 8] if small else [0, 1, 2, 4, 8, 16],
                     episodes=12 if small else 25, tune_episodes=8 if small else 25, seed=args.seed or 0)


def run_demo_stage(run: RunFolder, args: argparse.Namespace, results: dict) -> dict:
    """Run the probe into ``run.path / 'icl'``; return the headline accuracies."""

    config = demo_config(args)
    folder = RunFolder.create(run.path / "icl", "demo icl", overwrite=True)
    summary = run_icl(config, folder)
    acc = summary["accuracy"]
    top = str(max(s for s in config.shots if s > 0))
    return {
        "folder": str(folder.path), "readout": summary["readout"], "beta": summary["beta"]["best"],
        "chance": summary["chance"],
        f"in_distribution_{top}_shots": acc["in_distribution"][top],
        f"polysemous_query_{top}_shots": acc["polysemous_query"][top],
        "zero_shot": acc["zero_shot"]["0"],
        "figure": str(folder.figures / "accuracy_vs_shots.png"),
    }
