"""mcicl: multi-concept in-context learning (Bu et al., NeurIPS 2024), synthetic and real, one geometry engine.

``import mcicl`` gives the main jobs as functions (:mod:`mcicl.app.api`): ``train_synthetic``, ``load_model``,
``extract``, ``geometry``, ``icl``, ``compare`` and ``report``. Subpackages: ``mcicl.synthetic`` (the paper's
data model, one-layer transformer, training), ``mcicl.probing`` (real Hugging Face models), ``mcicl.analysis``
(geometry engine, comparison, figures, report, CLI) and ``mcicl.core`` (configs, run folders, vector format).
"""

import importlib
from typing import Any

__version__ = "0.2.0"

_FRONT_DOOR = ("train_synthetic", "load_model", "extract", "geometry", "icl", "compare", "report")
__all__ = ["__version__", *_FRONT_DOOR]


def __getattr__(name: str) -> Any:
    # Loaded on first use (PEP 562): mcicl.app.api imports torch and transformers, and every submodule import
    # (``mcicl.core.configuration`` included) runs this file first; the bottom layer must not pull in the top.
    if name in _FRONT_DOOR:
        return getattr(importlib.import_module("mcicl.app.api"), name)
    raise AttributeError(f"module 'mcicl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_FRONT_DOOR])
