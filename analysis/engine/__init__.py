"""The geometry engine: pure functions of (vectors, labels) shared by the synthetic and the real world."""
