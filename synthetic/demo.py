"""The synthetic stage of ``mcicl demo``: train a small config with the OOD scenarios into <demo>/synthetic."""

from __future__ import annotations

import argparse

from mcicl.core.runs import RunFolder
from mcicl.synthetic.config import SyntheticConfig
from mcicl.synthetic.train import train


def demo_config(small: bool, seed: int = 0) -> SyntheticConfig:
    """The demo's config: the default one (3 seeds); ``small``: 1 seed and smaller test sets for the test suite."""
    if small:
        return SyntheticConfig(seeds=1, n_test=2000, n_test_ood=500, eval_every=10, ood_every=50, n_features=40,
                               seed=seed)
    return SyntheticConfig(seeds=3, seed=seed)


def run_demo_stage(run: RunFolder, args: argparse.Namespace, results: dict) -> dict:
    """Train the demo config into ``run.path / 'synthetic'``; return headline numbers and the subfolder."""

    config = demo_config(bool(getattr(args, "small", False)), int(getattr(args, "seed", None) or 0))
    sub = RunFolder.create(run.path / "synthetic", "synthetic train", overwrite=True)
    summary = train(config, sub).summary
    return {
        "run_dir": str(sub.path),
        "seeds": config.seeds,
        "readout_init": config.readout_init,
        "test_zero_one": summary["final"]["test_zero_one"],
        "correct_attention": summary["final"]["correct_attention"],
        "convergence_rate": summary["convergence"]["rate"],
        "ood_test_zero_one": {name: m["test_zero_one"] for name, m in summary["ood"].items()},
    }
