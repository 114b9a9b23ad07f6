"""Benchmarks, run from a checkout: ``python -m benchmarks.<name> --help``.

``throughput`` is the shipped ``python -m writebehind bench``; ``research`` adds the sections
that study the rest (waits, threads, latency, PgBouncer, writers, coalescing, deletes, the
journal, the application benchmark); ``journal_codec`` and ``journal_segments`` measure the
journal's parts alone. ``pgbouncer`` runs a PgBouncer for them and for the tests.
"""
