"""Benchmarks: each prints a table with a peer measured in the same run and the ratio.

Run them from the repository root as modules, e.g. ``python -m bench.build`` (or ``make bench``).
"""
