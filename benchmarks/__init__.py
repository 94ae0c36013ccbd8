"""Benchmarks: `make bench` runs `python -m benchmarks.run` (never part of the test suite)."""
