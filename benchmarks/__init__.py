"""Reproducible benchmarks of the engine; see docs/benchmarks.md."""
