"""Benchmarks, each a script: ``python benchmarks/<name>.py --help``."""
