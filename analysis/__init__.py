"""mcicl analysis: the geometry engine, synthetic-vs-real comparison, plots, reports and the CLI."""

__version__ = "0.1.0"
