"""A module-level queue, as an application keeps one, for the multiprocessing fork-pool test."""

from __future__ import annotations

import os

from writebehind import WriteBehindQueue

QUEUE: WriteBehindQueue | None = None


def put_range(bounds: tuple[int, int]) -> int:
    """In a pool worker: put rows ``start..stop-1`` into the module-level queue; return the pid."""
    assert QUEUE is not None
    start, stop = bounds
    for key in range(start, stop):
        QUEUE.put({"id": key, "pid": os.getpid()})
    return os.getpid()
