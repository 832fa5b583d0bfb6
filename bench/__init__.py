"""Reproducible benchmarks: each prints its figures (and a ratio within one run), never asserts a timing."""
