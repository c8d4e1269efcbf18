"""Benchmarks: each prints a table of its measurements next to a named baseline measured in the same run."""
