"""The registry of started queues, drained by one exit hook.

The only module-level mutable state of the package besides the per-registry metric families.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from typing import Protocol

logger = logging.getLogger("writebehind")


class Drainable(Protocol):
    name: str
    shutdown_timeout: float

    def stop_accepting(self) -> None: ...

    def close(self, timeout: float | None = None) -> None: ...

    def pending_rows(self) -> int: ...

    def _inherited_by_fork(self) -> None: ...


_open: weakref.WeakSet[Drainable] = weakref.WeakSet()
_lock = threading.Lock()


def register(queue: Drainable) -> None:
    with _lock:
        _open.add(queue)


def forget(queue: Drainable) -> None:
    with _lock:
        _open.discard(queue)


def drain_open_queues() -> None:
    """Close every open queue, each within its ``shutdown_timeout``, all at the same time."""
    with _lock:
        queues = list(_open)
    if not queues:
        return
    started = time.monotonic()
    for queue in queues:
        queue.stop_accepting()  # every worker drains from now on, in parallel
    for queue in queues:
        remaining = queue.shutdown_timeout - (time.monotonic() - started)
        queue.close(timeout=max(0.0, remaining))
        abandoned = queue.pending_rows()
        if abandoned:
            logger.error(
                "queue %s: exit drain ran out of time after %.1fs; %d rows abandoned, not written",
                queue.name,
                time.monotonic() - started,
                abandoned,
            )


def _after_fork_in_child() -> None:
    # The workers did not survive the fork and the rows in memory are the parent's to write:
    # the child forgets its copies of the started queues.
    global _lock
    _lock = threading.Lock()  # another thread may have held it at the fork
    queues = list(_open)
    _open.clear()
    for queue in queues:
        queue._inherited_by_fork()


atexit.register(drain_open_queues)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
