"""Mechanism in real weights and by intervention: QK products per head, head roles and causal effects of heads
(`probe circuits`), and sense steering along concept directions in the residual stream (`probe steer`)."""
