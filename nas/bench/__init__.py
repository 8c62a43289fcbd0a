"""Benchmarks: scripts that print a table and exit non-zero when a named target is missed."""
