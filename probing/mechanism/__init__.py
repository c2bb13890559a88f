"""Mechanism in real weights: interventions on a model's forward pass (residual-stream steering, head hooks)."""
