"""Mechanism in real weights and by intervention: QK products per head, head roles, causal effects of heads."""
