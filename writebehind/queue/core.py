"""WriteBehindQueue: accepts rows, and writes them in batches from one worker thread.

The queue holds its parts and delegates: the intake (put, put_many, the deletes), the writers
(their threads and steps), the buffer of rows, the delivery of batches with retries, the exit
hook (lifecycle)."""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry

from .._sink import Sink
from ..errors import QueueClosed
from ..journal.keeper import QueueJournal
from ..journal.options import Journal
from . import lifecycle
from .batch import Entry
from .draining import join_writers, wait_settled
from .health import unhealthy_reason
from .journaling import close_journal, open_journal
from .metrics import Metrics
from .options import check_queue_options
from .parts import build_parts, weak_handler
from .replay import Replay
from .writers import start_threads

__all__ = ["FailureCallback", "WriteBehindQueue"]

logger = logging.getLogger("writebehind")

FailureCallback = Callable[[list[Mapping[str, Any]], BaseException], None]
"""``on_failure(rows, error)``: rows given up (as they were put) and the error that ended them.

Called on a thread of its own, one call at a time, in the order rows were given up: the writers
go on while it runs. What it raises is logged. It may put() rows again (accepted at once, even
beyond ``maxsize``) and close(); flush() raises there."""


class WriteBehindQueue:
    """Accepts rows with put() and writes them through ``sink`` in batches, in the background.

    Thread-safe: any number of threads may put, flush and close. One daemon worker thread,
    ``writebehind-<name>``, starts on the first put (or start()), so nothing runs before a
    server forks. Rows with the same key are written in the order they were put; the value put
    last is the one left in the table. A row is never dropped in silence: it is persisted, or
    handed to ``on_failure`` and logged, or (past ``shutdown_timeout`` at exit) counted and
    logged as abandoned.

    put() never waits on the database: the worker opens the sink (reads the catalog), and
    while it cannot, rows are accepted unchecked and checked once it can (a row that does not
    fit goes to ``on_failure`` with the error put() would have raised). The first put() waits
    for the first attempt to open, at most the sink's ``connect_timeout``; when the database
    answers with a configuration it refuses (credentials, missing table or key), put() raises
    that error at once.

    ``maxsize`` bounds the rows waiting plus the rows of the batch being written that the
    database has not read yet; put() blocks beyond it. A batch is written when ``batch_size``
    rows wait, when the oldest has waited ``flush_interval`` seconds, or on flush()/close().
    A batch never holds more than ``maxsize`` rows: with ``maxsize`` below ``batch_size``, the
    batch size used is ``maxsize`` (the ``batch_size`` attribute holds the one in use).
    A failed write is retried after ``retry_backoff`` seconds doubled each time up to
    ``retry_backoff_max``, with jitter, until the writes have been failing for
    ``max_retry_time`` seconds (counted from the first failure, whichever batch it was) or the
    batch has been retried ``max_retries`` times (None: no limit on either); then the batch is
    given up to ``on_failure``. ``registry=None`` exports no Prometheus series; ``name`` labels
    them and names the worker thread (default: the sink's name). ``clock`` is the monotonic
    clock that times ``flush_interval`` and ``max_retry_time``.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        maxsize: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        max_retries: int | None = None,
        max_retry_time: float | None = 120.0,
        retry_backoff: float = 0.1,
        retry_backoff_max: float = 2.0,
        on_failure: FailureCallback | None = None,
        registry: CollectorRegistry | None = REGISTRY,
        name: str | None = None,
        shutdown_timeout: float = 30.0,
        writers: int = 1,
        coalesce: bool = False,
        stuck_after: float = 60.0,
        journal: Journal | str | os.PathLike[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name, journal_options = check_queue_options(
            sink,
            maxsize=maxsize,
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_retries=max_retries,
            max_retry_time=max_retry_time,
            retry_backoff=retry_backoff,
            retry_backoff_max=retry_backoff_max,
            on_failure=on_failure,
            registry=registry,
            name=name,
            shutdown_timeout=shutdown_timeout,
            writers=writers,
            coalesce=coalesce,
            stuck_after=stuck_after,
            journal=journal,
            clock=clock,
        )
        if journal_options is not None:
            track_progress = getattr(sink, "track_progress", None)
            if track_progress is not None:
                track_progress()  # each write records what it applied, for an exact replay
            # The journal holds the rows through any outage: no retry budget gives them up.
            max_retries = max_retry_time = None
        self.journal = journal_options
        """The journal's options (None: rows live in memory only until written)."""
        self.shutdown_timeout = float(shutdown_timeout)
        self.writers = writers
        self.coalesce = coalesce
        self.stuck_after = float(stuck_after)
        self._sink = sink
        self._maxsize = maxsize
        self._requested_batch_size = batch_size
        self._flush_interval = float(flush_interval)
        self._on_failure = on_failure
        self._registry = registry
        self._clock = clock
        self._retry_options = (max_retries, max_retry_time, retry_backoff, retry_backoff_max)
        self._first_open_wait = float(getattr(sink, "connect_timeout", 5.0)) + 1.0
        self._journal: QueueJournal | None = None
        self._fresh_state()

    def _fresh_state(self, forked: bool = False) -> None:
        """Everything that runs: at construction, and in a process forked after a start. The
        process id is recorded last: should this fail halfway in a child, the next call that
        checks it starts again."""
        parts = build_parts(
            self._sink,
            name=self.name,
            maxsize=self._maxsize,
            batch_size=self._requested_batch_size,
            writers=self.writers,
            coalesce=self.coalesce,
            registry=self._registry,
            retry_options=self._retry_options,
            flush_interval=self._flush_interval,
            first_open_wait=self._first_open_wait,
            on_failure=self._on_failure,
            give_up=weak_handler(self._give_up),
            clock=self._clock,
            forked=forked,
        )
        self._stats, self._buffer, self._writers = parts.stats, parts.buffer, parts.writers
        parts.buffer.owner = weakref.ref(self)
        if forked and self._journal is not None:
            self._journal.forget_after_fork()  # the parent's, still locked by the parent
        self._journal = None  # made by the first put: nothing is created before a fork
        self._replay: Replay | None = None
        self._abandon, self._opener, self._callbacks = parts.abandon, parts.opener, parts.callbacks
        self._own_threads = parts.own_threads
        self._intake, self._writing = parts.intake, parts.writing
        self._lock = threading.Lock()
        self._started = False
        self._finished_writers = 0
        self._closed = False
        self._sink_closed = False
        self._unhealthy: str | None = None
        self._pid = os.getpid()

    @property
    def batch_size(self) -> int:
        """The most rows in one write: ``batch_size`` as given, or ``maxsize`` if smaller."""
        return self._buffer.batch_size

    @property
    def healthy(self) -> bool:
        """For readiness probes: True while the writers run (or have not started yet) and none
        is stuck. Stuck: one batch in delivery (its writes and retries) for more than
        ``stuck_after`` seconds, an ``on_failure`` call running that long, or rows waiting that
        long for the sink to open. False once closed, or if a writer thread died. A change
        to False is logged at WARNING with its reason, and the way back at INFO."""
        if self._pid != os.getpid():
            return not self._closed  # a forked child's copy: it starts afresh on its first put
        reason = self._unhealthy_reason()
        if reason != self._unhealthy and not self._closed:
            if reason is None:
                logger.info("queue %s: healthy again", self.name)
            else:
                logger.warning("queue %s: not healthy: %s", self.name, reason)
        self._unhealthy = reason
        return reason is None

    def _unhealthy_reason(self) -> str | None:
        return unhealthy_reason(
            now=self._clock(),
            closed=self._closed,
            started=self._started,
            writers=self._writers,
            stuck_after=self.stuck_after,
            opener=self._opener,
            buffer=self._buffer,
            callbacks=self._callbacks,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._started else "not started"
        return f"<WriteBehindQueue {self.name!r} {state}>"

    def __enter__(self) -> WriteBehindQueue:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Open the sink and start the writers now: the way to fail fast at boot.

        Makes one attempt to open the sink (bounded by its ``connect_timeout``) and raises what
        it raised: SchemaError for an unusable table, a psycopg error naming the cause when the
        database cannot be reached or refuses the connection. QueueClosed after close().
        """
        self._check_process()
        self._start_writers()
        if not self._opener.opened and not self._opener.attempt():
            error = self._opener.error
            assert error is not None
            raise error.with_traceback(None)

    def _start_writers(self) -> None:
        with self._lock:
            if self._closed:
                raise QueueClosed(f"queue {self.name!r} is closed")
            if self._started:
                return
            if self.journal is not None:
                self._open_journal(self.journal)
            self._own_threads.update(
                start_threads(weakref.ref(self), self._writers, self._sink, self.name)
            )
            self._started = True
            lifecycle.register(self)
            if self._replay is not None:
                self._replay.start()

    def _open_journal(self, options: Journal) -> None:
        journal, self._replay = open_journal(
            options,
            name=self.name,
            writers=self._writers,
            buffer=self._buffer,
            sink=self._sink,
            stats=self._stats,
            opened=lambda: self._opener.opened,
            stop=self._abandon,
            clock=self._clock,
        )
        self._journal = self._intake.journal = journal

    def _check_process(self) -> None:
        # A fork the at-fork hook did not see (a fork that skipped it): start afresh here.
        if self._pid != os.getpid():
            self._after_fork()

    def put(
        self, row: Mapping[str, Any] | Any, block: bool = True, timeout: float | None = None
    ) -> None:
        """Accept ``row`` (a Mapping column -> value) for writing, and return.

        Never waits on the database. The row is checked and converted now: TypeError if it is
        not a Mapping, ValueError naming a missing or unknown column; nothing is accepted then.
        Until the sink could read the table's catalog, rows are accepted unchecked and checked
        when it can (the first put waits for the first attempt, within ``timeout``); when the
        database refuses the configuration (credentials, table, key), its error is raised here.
        When ``maxsize`` rows are waiting, wait for room (at most ``timeout`` seconds, then
        QueueFull), or raise QueueFull at once if not ``block``; on a writer thread (from
        ``on_failure``) the row is accepted at once, beyond ``maxsize``. With ``coalesce``, a
        row whose key is still waiting is combined into that row and takes no room.
        QueueClosed after close().
        """
        if self._pid != os.getpid():
            self._after_fork()
        if not self._started:
            self._start_writers()
        self._intake.put(row, block, timeout)

    def put_many(
        self,
        rows: Iterable[Mapping[str, Any] | Any],
        block: bool = True,
        timeout: float | None = None,
    ) -> None:
        """Accept all of ``rows``, or none of them, in one step.

        Every row is checked first, as put() checks one: the TypeError or ValueError names the
        index of the first row that does not fit, and nothing is accepted. Then all the rows go
        in at once, in their order: when there is no room for all of them, wait for it (at most
        ``timeout`` seconds, then QueueFull), or raise QueueFull at once if not ``block``.
        ValueError for more rows than ``maxsize``, which could never fit. From ``on_failure``
        the rows are accepted at once, as by put().
        """
        rows = list(rows)
        if not rows:
            return
        self._check_process()
        if not self._started:
            self._start_writers()
        self._intake.put_many(rows, block, timeout)

    def put_nowait(self, row: Mapping[str, Any] | Any) -> None:
        """put() without waiting: QueueFull when ``maxsize`` rows are waiting."""
        self.put(row, block=False)

    def delete(self, key: Any, block: bool = True, timeout: float | None = None) -> None:
        """Accept the delete of ``key``'s row for writing, and return, as put() does.

        ``key`` is the key's value (a scalar for a one-column key, a tuple for a composite
        one), a Mapping holding the key columns, or an instance of the sink's model. A delete
        is a write of its key: it is applied in put order with that key's upserts (a put then
        a delete leaves no row, a delete then a put leaves the put), in the statement of its
        batch; ``coalesce`` takes it as the key's newest write. With a ``version_column`` the
        Mapping gives the version too, and the delete applies only to a row of a lower
        version. A refused delete reaches ``on_failure`` as the Mapping of its key columns.
        Backpressure, ``timeout``, QueueFull and QueueClosed as for put(). TypeError for an
        append-only sink (``key=None``) or a sink that cannot delete; ValueError for a key of
        the wrong shape.
        """
        self._delete([key], block, timeout, many=False)

    def delete_nowait(self, key: Any) -> None:
        """delete() without waiting: QueueFull when ``maxsize`` rows are waiting."""
        self._delete([key], False, None, many=False)

    def delete_many(
        self, keys: Iterable[Any], block: bool = True, timeout: float | None = None
    ) -> None:
        """Accept the deletes of all of ``keys``, or none of them, in one step (as put_many()
        accepts rows; an error names the index of the key that does not fit)."""
        self._delete(list(keys), block, timeout, many=True)

    def _delete(self, keys: list[Any], block: bool, timeout: float | None, many: bool) -> None:
        key_row = self._intake.check_deletes()  # TypeError even for no keys
        if not keys:
            return
        self._check_process()
        if not self._started:
            self._start_writers()
        self._intake.delete(keys, key_row, block, timeout, many)

    def flush(self, timeout: float | None = None) -> bool:
        """Write out every row put before this call, partial batches included.

        With a journal, the rows being replayed from dead processes' journals count as put before.
        Returns True once each of those rows is persisted or given up (its ``on_failure`` call
        returned), False if ``timeout`` seconds ran out first or a writer is not running (never
        started, or died). Rows put meanwhile by other threads may be written too, but are not
        waited for. RuntimeError from ``on_failure``, which would wait for itself.
        """
        if threading.get_ident() in self._own_threads:
            raise RuntimeError(
                f"queue {self.name!r}: flush() from on_failure (or a writer) would wait for "
                "itself; put() the rows and return"
            )
        self._check_process()
        deadline = None if timeout is None else time.monotonic() + timeout
        replay = self._replay
        if replay is not None and not replay.fed.wait(timeout):
            return False  # the rows of dead processes' journals are not all queued yet
        targets = self._buffer.request_flush()
        return wait_settled(self._stats, targets, self._writers_alive, self._callbacks, deadline)

    def _writers_alive(self) -> bool:
        return self._started and all(
            writer.thread is not None and writer.thread.is_alive() for writer in self._writers
        )

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting rows, write out the rows already accepted, stop the writers.

        Waits for the drain at most ``timeout`` seconds (None: as long as it takes); after a
        timeout the writers go on draining in the background and a warning is logged. The
        sink is closed once they have drained. Idempotent; callable from ``on_failure`` (it
        returns at once there).
        """
        self._check_process()
        self.stop_accepting()
        if not self._started:
            self._close_sink()
            return
        if threading.get_ident() in self._own_threads:
            return
        if not self._join_writers(timeout):
            callbacks = self._callbacks
            logger.warning(
                "queue %s: close() timed out after %.1fs with %d rows not yet written and %d "
                "on_failure calls not yet returned",
                self.name,
                timeout,
                self.pending_rows(),
                0 if callbacks is None else callbacks.pending(),
            )

    def _join_writers(self, timeout: float | None) -> bool:
        return join_writers(self._writers, self._replay, self._callbacks, timeout)

    def _close_sink(self) -> None:
        with self._lock:
            if self._sink_closed:
                return
            self._sink_closed = True
        try:
            self._sink.close()
        except Exception:
            logger.exception("queue %s: closing the sink failed", self.name)
        finally:
            lifecycle.forget(self)

    def stop_accepting(self) -> None:
        """Refuse further puts (QueueClosed) and let the writers drain what they have."""
        with self._lock:
            self._closed = True
        self._buffer.close()

    def pending_rows(self) -> int:
        """Rows accepted and not yet persisted or given up."""
        return self.metrics().current_queue_depth

    def abandon(self) -> None:
        """Write no more (what the exit hook does once ``shutdown_timeout`` has run out): stop
        accepting rows, cancel the writes under way, and hand every row not written to
        ``on_failure`` with RowsAbandoned, counted in ``total_abandoned``. The rows still
        waiting are handed over from this thread before it returns; those of a write under way
        by its writer, once the cancelled write has returned (``close()`` waits for that)."""
        self.stop_accepting()
        self._writing.abandon()

    def _abandon_under_way(self, timeout: float) -> None:
        """After abandon(), once the writers had their grace: the rows of writes that did not
        end when cancelled are abandoned from this thread (a write that ends later is logged,
        and not counted again), and their ``on_failure`` calls get ``timeout`` seconds."""
        self._writing.abandon_under_way()
        if self._callbacks is not None:
            self._callbacks.wait(self._callbacks.handed, timeout)

    def _log_undelivered(self) -> None:
        """At exit: log the rows whose on_failure call a hung call kept from being made."""
        if self._callbacks is not None:
            self._callbacks.log_undelivered()

    def _after_fork(self) -> None:
        """In a forked child: a queue of this process's own, empty, with no writer until its
        first put and no connection of the parent's. The rows in memory are the parent's."""
        after_fork = getattr(self._sink, "after_fork", None)
        if after_fork is not None:
            after_fork()
        self._fresh_state(forked=True)

    def metrics(self) -> Metrics:
        """A consistent snapshot of this queue's counters."""
        self._check_process()
        return self._stats.snapshot()

    def _writer_done(self) -> None:
        with self._lock:
            self._finished_writers += 1
            last = self._finished_writers == self.writers
        if last:
            self._close_journal()
            self._close_sink()
        self._stats.wake()

    def _close_journal(self) -> None:
        if self._journal is not None:
            close_journal(self._journal, name=self.name, sink=self._sink, stats=self._stats)

    def _give_up(self, entries: list[Entry], error: BaseException) -> None:
        # Already logged with their keys; on_failure runs on a thread of its own.
        if self._callbacks is not None:
            keys = [entry.key if entry.params else None for entry in entries]
            self._callbacks.hand([entry.row for entry in entries], error, keys)
