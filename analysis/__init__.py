"""mcicl analysis: the geometry engine, synthetic-vs-real comparison, plots, reports and the CLI."""
