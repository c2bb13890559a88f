"""mcicl: multi-concept in-context learning (Bu et al., NeurIPS 2024), synthetic and real, one geometry engine.

Subpackages: ``mcicl.synthetic`` (the paper's data model, one-layer transformer, training), ``mcicl.probing``
(real Hugging Face models), ``mcicl.analysis`` (geometry engine, comparison, figures, report, CLI) and
``mcicl.core`` (configs, run folders, the vector format).
"""

__version__ = "0.2.0"
