"""Benchmarks and comparisons with peers; run from the repository root (``python -m benchmarks...``)."""
