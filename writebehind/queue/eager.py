"""EagerQueue: a queue's API that writes each row at once, for tests.

Flask's ``WRITEBEHIND_EAGER`` and Django's ``WRITEBEHIND["EAGER"]`` give these instead of
background queues: ``put()`` checks the row as a ``WriteBehindQueue`` does, then writes it before
it returns, through a connection that the framework integration provides. Under Django that is
the ORM's own connection, inside a savepoint, so that a ``TestCase`` rolls the row back with the
test.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterable, Mapping
from types import TracebackType
from typing import Any, Protocol

import psycopg
from prometheus_client import REGISTRY, CollectorRegistry

from .._sink import Deletion, Params
from ..errors import QueueClosed
from ..models._model import settle
from ..postgres.upsert import PostgresUpsert
from .core import FailureCallback
from .delivery import describe
from .metrics import Metrics, QueueStats

__all__ = ["EagerConnection", "EagerQueue", "OwnConnection"]

logger = logging.getLogger("writebehind")


class EagerConnection(Protocol):
    """Where an EagerQueue writes: reads the catalog once, then writes one row per put."""

    def configure(self, sink: PostgresUpsert) -> None:
        """Have ``sink`` read its table's catalog (``sink.configure(conn)``)."""
        ...

    def write(self, sink: PostgresUpsert, params: Params) -> None:
        """Write one prepared row now (``sink.write_on``), or raise the database's error; a
        failed write must leave the connection usable (a savepoint, or a transaction of its
        own)."""
        ...

    def close(self) -> None:
        """Release what the connection holds: idempotent."""
        ...


class OwnConnection:
    """One psycopg connection of the queue's own, opened on first use; each write commits.

    close() closes it; so does the garbage collector, should the queue be dropped unclosed."""

    def __init__(self, conninfo: str, connect_timeout: float = 5.0) -> None:
        self._conninfo = conninfo
        self._connect_timeout = max(1, round(connect_timeout))
        self._lock = threading.Lock()
        # A holder the finalizer can close without keeping this object alive.
        self._slot: list[psycopg.Connection[Any]] = []
        weakref.finalize(self, _close_slot, self._slot)

    def _connection(self) -> psycopg.Connection[Any]:
        if self._slot and not self._slot[0].closed:
            return self._slot[0]
        conn = psycopg.connect(
            self._conninfo, autocommit=True, connect_timeout=self._connect_timeout
        )
        self._slot[:] = [conn]
        return conn

    def configure(self, sink: PostgresUpsert) -> None:
        with self._lock:
            try:
                sink.configure(self._connection())
            except BaseException:
                _close_slot(self._slot)  # nothing to write through
                raise

    def write(self, sink: PostgresUpsert, params: Params) -> None:
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction():
                    sink.write_on(conn, [params])
            except psycopg.Error:
                if conn.broken:  # the next put connects again
                    conn.close()
                raise

    def close(self) -> None:
        with self._lock:
            _close_slot(self._slot)


def _close_slot(slot: list[psycopg.Connection[Any]]) -> None:
    for conn in slot:
        conn.close()
    slot.clear()


class EagerQueue:
    """A queue whose ``put()`` writes the row before it returns: for tests.

    The same API as ``WriteBehindQueue``. ``put()`` checks the row exactly as a queue does
    (TypeError or ValueError naming the column, nothing written), then writes it through
    ``connection``. A row the database does not take (any database error) is logged at ERROR
    and handed to ``on_failure([row], error)`` at once, as a queue would hand it over after its
    retries; ``put()`` itself raises no database error. There are no retries and no worker
    thread: ``flush()`` returns True at once and ``pending_rows()`` is 0 between puts. The
    metrics count as a queue's do, each put a batch of one row.
    """

    def __init__(
        self,
        sink: PostgresUpsert,
        connection: EagerConnection,
        *,
        on_failure: FailureCallback | None = None,
        registry: CollectorRegistry | None = REGISTRY,
        name: str | None = None,
    ) -> None:
        if on_failure is not None and not callable(on_failure):
            raise TypeError("on_failure must be a callable(rows, error) or None")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError("name must be a non-empty string or None")
        self.name: str = name or sink.name
        self._sink = sink
        self._connection = connection
        self._on_failure = on_failure
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        self._enqueued = 0
        self._stats = QueueStats(self.name, registry, lambda: self._enqueued)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "started" if self._started else "not started"
        return f"<EagerQueue {self.name!r} {state}>"

    def __enter__(self) -> EagerQueue:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Read the table's catalog now instead of at the first put(): SchemaError for an
        unusable table, the psycopg error when the database cannot be reached, QueueClosed
        after close()."""
        with self._lock:
            if self._closed:
                raise QueueClosed(f"queue {self.name!r} is closed")
            if not self._started:
                self._connection.configure(self._sink)
                self._started = True

    def put(
        self, row: Mapping[str, Any] | Any, block: bool = True, timeout: float | None = None
    ) -> None:
        """Check ``row`` as a queue does, and write it now; ``block`` and ``timeout`` are
        accepted for the queue's signature (nothing ever waits for room)."""
        if not self._started or self._closed:
            self.start()
        row = self._sink.as_row(row)
        key, params = self._sink.prepare(row)
        settle(row)
        self._write(row, key, params)

    def put_many(
        self,
        rows: Iterable[Mapping[str, Any] | Any],
        block: bool = True,
        timeout: float | None = None,
    ) -> None:
        """Check every row as put() does (the error names the first bad row's index, and
        nothing is written), then write them one by one."""
        sink = self._sink
        for row, key, params in self._checked(list(rows), sink.as_row, sink.prepare, "row"):
            settle(row)
            self._write(row, key, params)

    def delete(self, key: Any, block: bool = True, timeout: float | None = None) -> None:
        """Check the delete of ``key`` as a queue does (see WriteBehindQueue.delete), and write
        it now."""
        self.delete_many([key])

    def delete_nowait(self, key: Any) -> None:
        """The same as delete()."""
        self.delete_many([key])

    def delete_many(
        self, keys: Iterable[Any], block: bool = True, timeout: float | None = None
    ) -> None:
        """Check every delete as delete() does (the error names the first bad key's index when
        there are several), then write them one by one."""
        keys = list(keys)
        sink = self._sink
        label = "key" if len(keys) > 1 else None
        for row, found, params in self._checked(keys, sink.key_row, sink.prepare_delete, label):
            self._write(row, found, params)

    def _checked(
        self,
        values: list[Any],
        to_row: Callable[[Any], Mapping[str, Any]],
        prepare: Callable[[Mapping[str, Any]], tuple[Hashable, Params]],
        label: str | None,
    ) -> list[tuple[Mapping[str, Any], Hashable, Params]]:
        """Every one of ``values`` made a row and checked, before any is written; the error
        names the index of the first that does not fit, as the ``label`` (None: not named)."""
        if not self._started or self._closed:
            self.start()
        prepared = []
        for index, value in enumerate(values):
            try:
                row = to_row(value)
                prepared.append((row, *prepare(row)))
            except (TypeError, ValueError) as error:
                if label is None:
                    raise
                raise type(error)(f"{label} {index}: {error}") from None
        return prepared

    def _write(self, row: Mapping[str, Any], key: Hashable, params: Params) -> None:
        started = time.monotonic()
        try:
            self._connection.write(self._sink, params)
        except psycopg.Error as error:
            with self._lock:
                self._enqueued += 1
            logger.error("queue %s: 1 rows rejected, keys %r: %s", self.name, key, describe(error))
            self._stats.gave_up(1)
            self._hand_over(row, error)
        else:
            with self._lock:
                self._enqueued += 1
            self._stats.written(1, int(type(params) is Deletion))
        self._stats.batch_done(0, 1, time.monotonic() - started)

    def put_nowait(self, row: Mapping[str, Any] | Any) -> None:
        """The same as put()."""
        self.put(row, block=False)

    def flush(self, timeout: float | None = None) -> bool:
        """True: every row put has been written or handed to ``on_failure`` already."""
        return True

    @property
    def healthy(self) -> bool:
        """True until closed: there is no writer to get stuck."""
        return not self._closed

    def stop_accepting(self) -> None:
        """Refuse further puts (QueueClosed)."""
        with self._lock:
            self._closed = True

    def close(self, timeout: float | None = None) -> None:
        """Refuse further puts and release the connection (a connection of its own is closed;
        Django's is left to Django). Idempotent."""
        self.stop_accepting()
        self._connection.close()

    def pending_rows(self) -> int:
        """Rows accepted and not yet written or given up: only a row being written now."""
        return self.metrics().current_queue_depth

    def metrics(self) -> Metrics:
        """A consistent snapshot of this queue's counters."""
        return self._stats.snapshot()

    def _hand_over(self, row: Mapping[str, Any], error: BaseException) -> None:
        if self._on_failure is None:
            return  # already logged with its key
        try:
            self._on_failure([row], error)
        except Exception:
            logger.exception("queue %s: on_failure raised", self.name)
