"""Benchmarks: a deterministic workload generator and the engine / replay / memory figures."""
