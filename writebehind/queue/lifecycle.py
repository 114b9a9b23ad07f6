"""The registry of started queues, drained by one exit hook.

The only module-level mutable state of the package besides the per-registry metric families.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import weakref
from typing import Protocol

# Imported first so that its at-fork hook (a fresh lock for the metric families) runs before
# ours, which builds each queue's metrics afresh.
from . import metrics  # noqa: F401

logger = logging.getLogger("writebehind")


class Drainable(Protocol):
    name: str
    shutdown_timeout: float

    def stop_accepting(self) -> None: ...

    def _join_writers(self, timeout: float | None) -> bool: ...

    def pending_rows(self) -> int: ...

    def abandon(self) -> None: ...

    def _abandon_under_way(self, timeout: float) -> None: ...

    def _log_undelivered(self) -> None: ...

    def _after_fork(self) -> None: ...


_open: weakref.WeakSet[Drainable] = weakref.WeakSet()
_lock = threading.Lock()
_finalizer_pid: int | None = None


def register(queue: Drainable) -> None:
    with _lock:
        _open.add(queue)
    _drain_when_multiprocessing_child_exits()


def forget(queue: Drainable) -> None:
    with _lock:
        _open.discard(queue)


def drain_open_queues(grace: float = 2.0) -> None:
    """Close every open queue, each within its ``shutdown_timeout``, all at the same time.

    Rows still unwritten then are abandoned: the writes under way are cancelled and every row
    goes to ``on_failure`` with RowsAbandoned; the writers get ``grace`` more seconds to hand
    over the rows of the writes they had under way."""
    with _lock:
        queues = list(_open)
    if not queues:
        return
    started = time.monotonic()
    for queue in queues:
        queue.stop_accepting()  # every writer drains from now on, in parallel
    late = []
    for queue in queues:
        remaining = queue.shutdown_timeout - (time.monotonic() - started)
        queue._join_writers(max(0.0, remaining))
        if queue.pending_rows():
            late.append(queue)
    for queue in late:
        logger.error(
            "queue %s: exit drain ran out of time after %.1fs (shutdown_timeout=%gs); "
            "abandoning %d rows",
            queue.name,
            time.monotonic() - started,
            queue.shutdown_timeout,
            queue.pending_rows(),
        )
        queue.abandon()
    handed = time.monotonic()
    for queue in late:
        queue._join_writers(max(0.0, grace - (time.monotonic() - handed)))
        if queue.pending_rows():
            queue._abandon_under_way(grace)
    for queue in queues:
        queue._log_undelivered()


def _drain_when_multiprocessing_child_exits() -> None:
    # A multiprocessing child (fork or spawn) ends with os._exit() after its own exit
    # functions, without atexit: drain there too. Registered in the child's own process,
    # after multiprocessing has cleared the finalizers it inherited.
    global _finalizer_pid
    multiprocessing = sys.modules.get("multiprocessing")
    if multiprocessing is None or _finalizer_pid == os.getpid():
        return
    if multiprocessing.parent_process() is None:
        return
    _finalizer_pid = os.getpid()
    from multiprocessing import util

    util.Finalize(None, drain_open_queues, exitpriority=100)


def _after_fork_in_child() -> None:
    # The writers did not survive the fork and the rows in memory are the parent's to write:
    # the child's copies of the started queues start afresh, empty, on their first put.
    global _lock
    _lock = threading.Lock()  # another thread may have held it at the fork
    queues = list(_open)
    _open.clear()
    for queue in queues:
        try:
            queue._after_fork()
        except Exception:  # the queue's own process-id check starts again at its next call
            logger.exception("queue %s: resetting it after a fork failed", queue.name)


atexit.register(drain_open_queues)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
