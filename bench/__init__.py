"""Benchmarks: run one as `python -m bench.<name>`."""
