"""mcicl synthetic: the paper's concept-based prompt model, one-layer transformer and training."""
