"""Demo stage "real geometry": the default model's concept geometry on the built-in sets, into ``geometry/``."""

from __future__ import annotations

import argparse
from typing import Any

from mcicl.core.runs import RunFolder
from mcicl.probing.extract import ExtractionConfig
from mcicl.probing.geometry import GeometryConfig, run_geometry


def run_demo_stage(run: RunFolder, args: argparse.Namespace, results: dict) -> dict[str, Any]:
    """Geometry of every layer (``--small``: input embeddings and the last layer, fewer permutations)."""

    small = bool(getattr(args, "small", False))
    # 100 permutations keep p < 0.01 reachable (the smallest p is 1/101); full runs use 200.
    extraction = ExtractionConfig(model=getattr(args, "model", "default"), layers="0,-1" if small else "all")
    cfg = GeometryConfig(extraction=extraction,
                         permutations=100 if small else 200, bootstrap=200 if small else 1000,
                         shuffles=2 if small else 10, seed=getattr(args, "seed", None) or 0)
    folder = RunFolder.create(run.path / "geometry", "probe geometry", overwrite=True)
    summary = run_geometry(cfg, folder, quiet=bool(getattr(args, "quiet", False)))
    w, c, d = (summary[k] for k in ("within_concept_cosine", "cross_concept_cosine", "concept_direction_abs_cos"))
    return {
        "folder": str(folder.path), "layer": summary["layer"], "n_words": summary["n_words"],
        "n_concepts": summary["n_concepts"],
        "within_concept_cosine": w["value"], "within_null": w["null"], "within_p": w["p_value"],
        "cross_concept_cosine": c["value"], "cross_null": c["null"], "cross_p": c["p_value"],
        "within_minus_cross_p": summary["within_minus_cross"]["p_value"],
        "concept_direction_abs_cos": d["value"], "direction_null": d["null"], "direction_isotropic": d["isotropic"],
        "probe_accuracy": (summary.get("probe") or {}).get("accuracy"),
        "polysemy_top_k_recall": (summary.get("polysemy") or {}).get("mean_top_k_recall"),
        "vectors": str(folder.path / "vectors"),
    }
