"""The bounds on a write: a deadline past which it is cancelled, and a later one past which
its connection is cut.

A cancel request ends a write the server is slow to do (waiting on a lock, say), as
``statement_timeout`` would, without a SET in every transaction; TCP keepalives end one whose
network is gone; neither ends a write to a server process that stopped answering (a frozen
backend, a stalled Unix socket). One daemon thread per process watches the deadlines of the writes
in flight, cancels a write past its first deadline and shuts the socket of one past its second
down, so that the write fails as cancelled or as a lost connection, and is retried.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg

logger = logging.getLogger("writebehind")

__all__ = ["Bound", "bounded"]

_lock = threading.Lock()
_changed = threading.Condition(_lock)
_heap: list[tuple[float, int]] = []
_actions: dict[int, Callable[[], None]] = {}
_tokens = itertools.count()
_thread_pid: int | None = None


@contextmanager
def deadline(seconds: float, on_expiry: Callable[[], None]) -> Iterator[None]:
    """Run ``on_expiry`` (on the watchdog's thread) if the block is still running after
    ``seconds``."""
    token = next(_tokens)
    due = time.monotonic() + seconds
    with _lock:
        _ensure_thread()
        _actions[token] = on_expiry
        heapq.heappush(_heap, (due, token))
        if _heap[0][1] == token:
            _changed.notify()
    try:
        yield
    finally:
        with _lock:
            _actions.pop(token, None)


class Bound:
    """A write under way inside ``bounded``: ``interrupt()`` cancels it now; ``expired`` says
    whether a deadline passed (the write was cancelled, or its connection cut)."""

    def __init__(self, cancel: Callable[[], None]) -> None:
        self.interrupt = cancel
        self.expired = False


@contextmanager
def bounded(
    conn: psycopg.Connection[Any],
    what: str,
    *,
    cancel_after: float,
    cut_after: float,
    cancel_timeout: float,
) -> Iterator[Bound]:
    """Cancel the block's query on ``conn`` after ``cancel_after`` seconds, and cut the
    connection after ``cut_after``, if the block still runs. Neither happens once the block has
    ended (it waits for an action under way), so the connection is clean for its next user.
    The block gets a Bound whose ``interrupt()`` cancels the query at once."""
    guard = threading.Lock()
    running = True
    cut = sever(conn, what)
    bound: Bound | None = None

    def guarded(action: Callable[[], None], expiry: bool = True) -> Callable[[], None]:
        def run() -> None:
            with guard:
                if running:
                    if expiry and bound is not None:
                        bound.expired = True
                    action()

        return run

    def cancel() -> None:
        logger.warning(
            "%s: still running after write_timeout (%gs); cancelling it", what, cancel_after
        )
        with suppress(Exception):  # the cut comes next if the server cannot be reached
            conn.cancel_safe(timeout=cancel_timeout)

    def interrupt() -> None:
        with suppress(Exception):
            conn.cancel_safe(timeout=cancel_timeout)

    bound = Bound(guarded(interrupt, expiry=False))
    with deadline(cancel_after, guarded(cancel)), deadline(cut_after, guarded(cut)):
        try:
            yield bound
        finally:
            with guard:
                running = False


def sever(conn: psycopg.Connection[Any], what: str) -> Callable[[], None]:
    """An expiry action that shuts ``conn``'s socket down: a wait on it ends with an error."""

    def cut() -> None:
        try:
            duplicate = socket.socket(fileno=os.dup(conn.pgconn.socket))
        except Exception:  # already closed: nothing is waiting on it
            return
        logger.warning("%s: no answer past its deadline; cutting its connection", what)
        with duplicate, suppress(OSError):
            duplicate.shutdown(socket.SHUT_RDWR)

    return cut


def _ensure_thread() -> None:
    # Called under the lock. A forked child has the parent's heap but not its thread.
    global _thread_pid
    if _thread_pid == os.getpid():
        return
    _thread_pid = os.getpid()
    thread = threading.Thread(target=_watch, name="writebehind-watchdog", daemon=True)
    thread.start()


def _reset_in_child() -> None:
    # Another thread may have held the lock at the fork; the parent's writes are not ours.
    global _lock, _changed, _heap, _actions, _thread_pid
    _lock = threading.Lock()
    _changed = threading.Condition(_lock)
    _heap, _actions, _thread_pid = [], {}, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_in_child)


def _watch() -> None:
    while True:
        with _lock:
            while True:
                while _heap and _heap[0][1] not in _actions:
                    heapq.heappop(_heap)  # finished in time
                now = time.monotonic()
                if _heap and _heap[0][0] <= now:
                    _, token = heapq.heappop(_heap)
                    action = _actions.pop(token)
                    break
                _changed.wait(None if not _heap else _heap[0][0] - now)
        # On a thread of its own: a cancel request to a server (or a pooler) that does not
        # answer it must not hold back the cut that comes next, of this write or another.
        threading.Thread(
            target=_run, args=(action,), name="writebehind-expiry", daemon=True
        ).start()


def _run(action: Callable[[], None]) -> None:
    try:
        action()
    except Exception:
        logger.exception("writebehind watchdog: an expiry action failed")
