"""Benchmarks shipped with the package: ``python -m writebehind bench``."""
