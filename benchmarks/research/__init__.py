"""The research harness, run from a checkout: ``python -m benchmarks.research --help``.

The shipped bench's throughput section (``writebehind.tools.bench``) and the sections that
study the rest: socket waits, busy threads, put() latency, PgBouncer, several writers,
coalescing, deletes, the durable journal and the application benchmark.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["CHECKOUT", "checkout_env"]

CHECKOUT = Path(__file__).resolve().parents[2]
"""The checkout's root: where ``benchmarks`` (and, in development, ``writebehind``) import from."""


def checkout_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with the checkout first on PYTHONPATH, so that a child
    process runs ``python -m benchmarks.research...`` from any directory."""
    found = dict(os.environ if env is None else env)
    found["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CHECKOUT), found.get("PYTHONPATH")]))
    return found
