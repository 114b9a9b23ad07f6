"""Exceptions raised by writebehind.

Exception tree::

    WriteBehindError
     ├── QueueFull    (also queue.Full)    put_nowait(), or put() whose timeout ran out
     ├── QueueClosed  (also RuntimeError)  put() after close()
     ├── SchemaError  (also ValueError)    unusable table, key or column, found at open
     ├── RowsAbandoned                      given to on_failure: unwritten at the exit deadline
     ├── CommitInDoubt                      given to on_failure: perhaps written (reply lost)
     └── ProgressConflict                   from a sink: a journal's progress moved under a write

Misuse of an argument (a row that is not a Mapping, a missing or unknown column) raises the
builtin TypeError or ValueError at the call that caused it. Database errors never reach put():
the worker retries them or hands the rows to ``on_failure``.
"""

from __future__ import annotations

import queue

__all__ = [
    "CommitInDoubt",
    "ProgressConflict",
    "QueueClosed",
    "QueueFull",
    "RowsAbandoned",
    "SchemaError",
    "WriteBehindError",
]


class WriteBehindError(Exception):
    """Base class of the exceptions defined by writebehind."""


class QueueFull(WriteBehindError, queue.Full):
    """The queue is at ``maxsize`` and the row was not accepted."""


class QueueClosed(WriteBehindError, RuntimeError):
    """The queue is closed and accepts no more rows."""


class SchemaError(WriteBehindError, ValueError):
    """The target table, its key or a configured column cannot be used for upserts."""


class RowsAbandoned(WriteBehindError):
    """Handed to ``on_failure`` with the rows still unwritten when the exit hook's
    ``shutdown_timeout`` ran out (the process is ending): they were not written, and the write
    in progress was cancelled. Counted in ``Metrics.total_abandoned``."""


class ProgressConflict(WriteBehindError):
    """Raised by a sink's write, which did not commit: a journal's progress row did not hold
    what the write expected (another process, or an earlier attempt of the same write whose
    reply was lost, wrote it). The queue reads the progress again and writes what it lacks."""


class CommitInDoubt(WriteBehindError):
    """Handed to ``on_failure`` with rows that may have been written: an attempt to write them
    lost its connection after its COMMIT was sent (the statement that commits, for a write of
    one statement), so whether the server committed is unknown, and the rows were then given
    up (the retries ran out, or a later attempt refused them). ``__cause__`` is the last
    database error. Counted in ``Metrics.total_failed`` and ``total_in_doubt``.

    Raised by a sink's write when its connection is lost after COMMIT was sent; the queue
    retries it like a lost connection. Putting such rows again is harmless for an upsert that
    sets values (it writes the same values); for ``merge={"n": "add"}`` or an append-only sink
    (``key=None``) it may count or insert them twice: check the table first, or use a journal,
    with which a write in doubt is checked against the progress table and never given up."""
