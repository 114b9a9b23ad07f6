"""WriteBehindQueue: accepts rows, and writes them in batches from one worker thread."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry

from .._sink import Deletion, Params, Sink
from ..errors import QueueClosed, SchemaError
from ..journal.keeper import QueueJournal, encode_record
from ..journal.options import Journal
from ..journal.segments import take_over
from ..models._model import InstanceRow, settle
from . import lifecycle
from .batch import Entry, Refused, combine, new_entry, seconds_until_due
from .buffer import INTAKE, REPLAY, RowBuffer
from .callbacks import FailureCallbacks
from .delivery import Delivery, FailureHandler
from .metrics import Metrics, QueueStats
from .opening import SinkOpener
from .replay import Replay
from .retry import Backoff, RetryBudget
from .tracing import FlushTracer

__all__ = ["FailureCallback", "WriteBehindQueue"]

UNCHECKED: Params = ()
"""The params of a row accepted before the sink could read the catalog: checked later."""
UNCHECKED_DELETE: Params = Deletion(())
"""The same for a delete."""

logger = logging.getLogger("writebehind")

FailureCallback = Callable[[list[Mapping[str, Any]], BaseException], None]
"""``on_failure(rows, error)``: rows given up (as they were put) and the error that ended them.

Called on a thread of its own, one call at a time, in the order rows were given up: the writers
go on while it runs. What it raises is logged. It may put() rows again (accepted at once, even
beyond ``maxsize``) and close(); flush() raises there."""

# Longest a wait lasts before its condition is checked again, should a wake-up go missing.
_IDLE_WAIT = 5.0
# At the exit deadline: how long the writes under way get, once cancelled, to end.
_ABANDON_GRACE = 2.0


class _Writer:
    """One writer thread's state: its lane of rows, its retry state, the batch it writes."""

    def __init__(self, index: int, delivery: Delivery) -> None:
        self.index = index
        self.delivery = delivery
        self.thread: threading.Thread | None = None
        self.busy_since: float | None = None
        """When it took the batch it is writing (its writes and retries), by the clock."""
        self.oldest: float | None = None
        """When the oldest row of that batch was put."""


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
        if not isinstance(sink, Sink):
            raise TypeError(f"sink must implement writebehind.Sink, got {type(sink).__name__}")
        _check_int("maxsize", maxsize, minimum=1)
        _check_int("batch_size", batch_size, minimum=1)
        _check_seconds("flush_interval", flush_interval, positive=True)
        if max_retries is not None:
            _check_int("max_retries", max_retries, minimum=0)
        if max_retry_time is not None:
            _check_seconds("max_retry_time", max_retry_time)
        _check_seconds("retry_backoff", retry_backoff)
        _check_seconds("retry_backoff_max", retry_backoff_max)
        if retry_backoff_max < retry_backoff:
            raise ValueError("retry_backoff_max must not be less than retry_backoff")
        _check_seconds("shutdown_timeout", shutdown_timeout)
        _check_int("writers", writers, minimum=1)
        if not isinstance(coalesce, bool):
            raise TypeError(f"coalesce must be a bool, got {type(coalesce).__name__}")
        _check_seconds("stuck_after", stuck_after, positive=True)
        if coalesce and getattr(sink, "key", None) == ():
            raise ValueError(
                "coalesce=True needs a sink with a key: an append-only sink (key=None) "
                "writes every row, there is nothing to coalesce"
            )
        if on_failure is not None and not callable(on_failure):
            raise TypeError("on_failure must be a callable(rows, error) or None")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {type(name).__name__}")
        if name == "":
            raise ValueError("name must be a non-empty string or None")
        if not callable(clock):
            raise TypeError("clock must be a callable returning monotonic seconds")
        _check_registry(registry)
        journal_options = Journal.of(journal)
        if journal_options is not None:
            _check_journal_root(journal_options.root)
        expect_writers = getattr(sink, "expect_writers", None)
        if writers > 1 and expect_writers is not None:
            expect_writers(writers)  # ValueError: more writers than the sink has connections

        self.name: str = name or sink.name
        if journal_options is not None:
            if not self.name or "/" in self.name or self.name.startswith("."):
                raise ValueError(
                    f"a queue with a journal needs a name that can name a directory, "
                    f"got {self.name!r}"
                )
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
        self._prepare = sink.prepare
        self._as_row: Callable[[Any], Mapping[str, Any]] | None = getattr(sink, "as_row", None)
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
        # Not a bound method: the buffer must not hold the queue (a queue nobody references is
        # freed at once, and its writers end).
        combine_rows = partial(_combine_rows, self._sink) if self.coalesce else None
        buffer = RowBuffer(self._maxsize, self._requested_batch_size, self.writers, combine_rows)
        writers: list[_Writer] = []
        clock = self._clock
        self._stats = QueueStats(
            self.name,
            self._registry,
            lambda: buffer.put_count,
            lanes=self.writers,
            oldest_row_age=lambda: _oldest_row_age(buffer, writers, clock),
            fresh_series=forked,
        )
        buffer.owner = weakref.ref(self)
        self._buffer, self._writers = buffer, writers
        if forked and self._journal is not None:
            self._journal.forget_after_fork()  # the parent's, still locked by the parent
        self._journal = None  # made by the first put: nothing is created before a fork
        self._layout_number = 0  # the journal's number for the sink's layout, once known
        self._replay: Replay | None = None
        max_retries, max_retry_time, retry_backoff, retry_backoff_max = self._retry_options
        self._abandon = threading.Event()
        # Each writer has its own retry state: an outage is met by each of its writes. Opening
        # the sink (writer 0's job) spends writer 0's.
        budgets = [RetryBudget(max_retries, max_retry_time) for _ in range(self.writers)]
        backoffs = [Backoff(retry_backoff, retry_backoff_max) for _ in range(self.writers)]
        self._budget, self._backoff = budgets[0], backoffs[0]
        for index, (budget, backoff) in enumerate(zip(budgets, backoffs, strict=True)):
            delivery = Delivery(
                self._sink,
                name=self.name,
                budget=budget,
                backoff=backoff,
                stats=self._stats,
                give_up=_weak(self._give_up),  # no cycle: an unreferenced queue is freed at once
                sleep=self._abandon.wait,
                clock=clock,
                abandon=self._abandon,
                deletes=lambda: buffer.deletes,  # batches may hold deletes once one came in
            )
            writers.append(_Writer(index, delivery))
        self._opener = SinkOpener(self._sink, self.name)
        self._open_retries = 0
        self._tracer = FlushTracer(self.name)
        self._lock = threading.Lock()
        self._own_threads: set[int] = set()  # writers and the on_failure thread
        self._callbacks = (
            None
            if self._on_failure is None
            else FailureCallbacks(self.name, self._on_failure, self._own_threads, clock)
        )
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
        if self._closed:
            return "closed"
        if not self._started:
            return None
        now = self._clock()
        for writer in self._writers:
            thread = writer.thread
            if thread is None or not thread.is_alive():
                return f"writer {writer.index} is not running"
            busy_since = writer.busy_since
            if busy_since is not None and now - busy_since > self.stuck_after:
                return (
                    f"writer {writer.index} has been delivering one batch for "
                    f"{now - busy_since:.0f}s (stuck_after={self.stuck_after:g}s)"
                )
        if not self._opener.opened:
            oldest = self._buffer.oldest_waiting()
            if oldest is not None and now - oldest > self.stuck_after:
                return f"rows have waited {now - oldest:.0f}s for the sink to open"
        callbacks = self._callbacks
        running_since = None if callbacks is None else callbacks.running_since
        if running_since is not None and now - running_since > self.stuck_after:
            return f"an on_failure call has been running for {now - running_since:.0f}s"
        return None

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
            ref = weakref.ref(self)
            for writer in self._writers:
                suffix = f"-{writer.index}" if self.writers > 1 else ""
                thread = threading.Thread(
                    target=_work,
                    args=(ref, writer, self._sink, self.name),
                    name=f"writebehind-{self.name}{suffix}",
                    daemon=True,
                )
                writer.thread = thread
                thread.start()
            self._own_threads.update(
                writer.thread.ident
                for writer in self._writers
                if writer.thread and writer.thread.ident
            )
            self._started = True
            lifecycle.register(self)
            if self._replay is not None:
                self._replay.start()

    def _open_journal(self, options: Journal) -> None:
        """This process's journal, and the journals of dead processes to replay (their lanes
        are held from now, so that no row put from now on is written before them)."""
        journal = QueueJournal(options, self.name, self.writers)
        self._journal = journal
        self._stats.journal_bytes = lambda: journal.disk_bytes
        for writer in self._writers:
            writer.delivery.keep_journal(journal)
        orphans = take_over(options.root, self.name)
        if orphans:
            self._replay = Replay(
                name=self.name,
                orphans=orphans,
                journal=journal,
                buffer=self._buffer,
                sink=self._sink,
                stats=self._stats,
                opened=lambda: self._opener.opened,
                stop=self._abandon,
                clock=self._clock,
            )
            self._buffer.start_replay()

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
        if type(row) is not dict and self._as_row is not None and not isinstance(row, Mapping):
            row = self._instance_row(row, block, timeout)  # a model instance
        if not self._opener.opened:
            key, params = self._put_unopened(row, block, timeout)
        else:
            key, params = self._prepare(row)
        buffer = self._buffer
        entry = new_entry((key, params, row, self._clock(), 1, (), None, 0))
        journal = self._journal
        if journal is not None:
            if threading.get_ident() in self._own_threads:
                self._put_recorded([entry], block, timeout)
            else:
                lane = buffer.lane_index(entry)
                layout = self._layout_number or self._number_layout(journal, params)
                payload = encode_record(lane, key, params, row, layout)
                size = len(payload)
                buffer.put_recorded_one(
                    entry,
                    payload,
                    lane,
                    journal.record_one,
                    lambda seconds: journal.wait_room(size, seconds),
                    block,
                    timeout,
                )
                if journal.options.sync == "always":
                    journal.sync()
        elif threading.get_ident() in self._own_threads:
            buffer.put_now([entry])  # room is only ever freed by the writers: never wait for it
        else:
            buffer.put(entry, block, timeout)
        if type(row) is InstanceRow:
            row.settle()  # accepted: the defaults made for an instance are set on it
        if buffer.put_count % QueueStats.SYNC_EVERY == 0:
            self._stats.sync()

    def _put_recorded(self, entries: list[Entry], block: bool, timeout: float | None) -> None:
        """Accept ``entries`` once their records are in the journal (and on disk, for
        ``sync="always"``)."""
        journal = self._journal
        assert journal is not None
        buffer = self._buffer
        converted = next((entry.params for entry in entries if entry.params), ())
        layout = self._layout_number or self._number_layout(journal, converted)
        payloads = [
            encode_record(buffer.lane_index(e), e.key, e.params, e.row, layout) for e in entries
        ]
        size = sum(map(len, payloads))
        buffer.put_recorded(
            entries,
            payloads,
            journal.record,
            lambda seconds: journal.wait_room(size, seconds),
            block,
            timeout,
            beyond_maxsize=threading.get_ident() in self._own_threads,
        )
        if journal.options.sync == "always":
            journal.sync()

    def _number_layout(self, journal: QueueJournal, params: Params) -> int:
        """The journal's number for the layout of converted rows' params (0: rows not
        converted yet, or a sink that says no layout), kept once known."""
        if not params:
            return 0
        layout = getattr(self._sink, "layout", None)
        if layout is None:
            return 0
        number = self._layout_number = journal.layout_number(layout)
        return number

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
        as_row = self._as_row

        def to_row(row: Any) -> Mapping[str, Any]:
            if as_row is None or isinstance(row, Mapping):
                return row  # type: ignore[no-any-return]
            return self._instance_row(row, block, timeout)

        entries = self._entries(rows, to_row, False, block, timeout, "row")
        self._accept_all(entries, block, timeout)
        for entry in entries:
            settle(entry.row)

    def _entries(
        self,
        values: list[Any],
        to_row: Callable[[Any], Mapping[str, Any]],
        deleting: bool,
        block: bool,
        timeout: float | None,
        label: str | None,
    ) -> list[Entry]:
        """The entries of ``values`` made rows by ``to_row`` and checked, as put() checks a
        row (or a delete); the error names the index of the first that does not fit, as the
        ``label`` (None: not named)."""
        entries = []
        for index, value in enumerate(values):
            try:
                row = to_row(value)
                if not self._opener.opened:
                    key, params = self._put_unopened(row, block, timeout, deleting)
                elif deleting:
                    key, params = self._prepare_delete(row)
                else:
                    key, params = self._prepare(row)
            except SchemaError:
                raise
            except (TypeError, ValueError) as error:
                if label is None:
                    raise
                raise type(error)(f"{label} {index}: {error}") from None
            entry = (key, params, row, self._clock(), 1, (), None, int(deleting))
            entries.append(new_entry(entry))
        return entries

    def _wait_first_open(self, block: bool, timeout: float | None) -> None:
        """Before the sink opened: wait for its first attempt to (within ``timeout``)."""
        if self._closed:
            raise QueueClosed(f"queue {self.name!r} is closed")
        opener = self._opener
        if not opener.attempts:
            wait = self._first_open_wait if block else 0.0
            opener.wait_first(wait if timeout is None else min(wait, timeout))

    def _instance_row(self, row: Any, block: bool, timeout: float | None) -> Mapping[str, Any]:
        """A model instance as the Mapping of its columns, its defaults made (they are set on
        the instance once its row is accepted), after the first attempt to open the sink, so
        that the columns it writes are known."""
        assert self._as_row is not None
        if not self._opener.opened:
            self._wait_first_open(block, timeout)
        return self._as_row(row)

    def _put_unopened(
        self,
        row: Mapping[str, Any],
        block: bool,
        timeout: float | None,
        deleting: bool = False,
    ) -> tuple[Any, Params]:
        opener = self._opener
        self._wait_first_open(block, timeout)
        if opener.opened:
            return self._prepare_delete(row) if deleting else self._prepare(row)
        error = opener.error
        if error is not None and opener.configuration_error:
            opener.want()
            self._buffer.wake()
            raise error.with_traceback(None)
        if not isinstance(row, Mapping):
            raise TypeError(f"row must be a Mapping of column -> value, got {type(row).__name__}")
        return None, UNCHECKED_DELETE if deleting else UNCHECKED

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
        key_row = getattr(self._sink, "key_row", None)
        if key_row is None or not hasattr(self._sink, "prepare_delete"):
            raise TypeError(f"the sink of queue {self.name!r} cannot delete")
        if not keys:
            return
        self._check_process()
        if not self._started:
            self._start_writers()
        entries = self._entries(keys, key_row, True, block, timeout, "key" if many else None)
        self._buffer.deletes = True
        self._accept_all(entries, block, timeout)

    def _accept_all(self, entries: list[Entry], block: bool, timeout: float | None) -> None:
        """Take ``entries`` in at once (journaled first, if there is a journal)."""
        if self._journal is not None:
            self._put_recorded(entries, block, timeout)
        elif threading.get_ident() in self._own_threads:
            self._buffer.put_now(entries)
        else:
            self._buffer.put_all(entries, block, timeout)
        self._stats.sync()

    def _prepare_delete(self, row: Mapping[str, Any]) -> tuple[Any, Params]:
        return self._sink.prepare_delete(row)  # type: ignore[attr-defined,no-any-return]

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
        stats = self._stats
        progress = stats.progress
        with progress:
            while any(done < target for done, target in zip(stats.settled, targets, strict=True)):
                if not self._writers_alive():
                    return False
                wait = (
                    _IDLE_WAIT if deadline is None else min(_IDLE_WAIT, deadline - time.monotonic())
                )
                if wait <= 0:
                    return False
                progress.wait(wait)
        callbacks = self._callbacks
        if callbacks is None:
            return True
        # Those rows are settled; the on_failure calls for the ones given up are handed over.
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        return callbacks.wait(callbacks.handed, remaining)

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
        """Wait at most ``timeout`` seconds for every writer to end, and then for the
        ``on_failure`` calls they handed over to return; True if all have."""
        deadline = None if timeout is None else time.monotonic() + timeout

        def remaining() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        for writer in self._writers:
            if writer.thread is not None:
                writer.thread.join(remaining())
        if any(w.thread is not None and w.thread.is_alive() for w in self._writers):
            return False
        replay = self._replay
        if replay is not None and replay.thread is not None:
            replay.thread.join(remaining())  # it removes the replayed journals once done
        callbacks = self._callbacks
        return callbacks is None or callbacks.wait(callbacks.handed, remaining())

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
        self._abandon.set()
        self._buffer.wake()
        interrupt = getattr(self._sink, "interrupt", None)
        if interrupt is not None:
            try:
                interrupt()
            except Exception:
                logger.exception("queue %s: cancelling the writes under way failed", self.name)
        delivery = self._writers[0].delivery
        for index in range(self.writers):
            while self._hand_over_waiting(index, delivery.abandon_all):
                pass

    def _abandon_under_way(self, timeout: float) -> None:
        """After abandon(), once the writers had their grace: the rows of writes that did not
        end when cancelled are abandoned from this thread (a write that ends later is logged,
        and not counted again), and their ``on_failure`` calls get ``timeout`` seconds."""
        for writer in self._writers:
            thread = writer.thread
            if thread is not None and thread.is_alive():
                writer.delivery.abandon_under_way()
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

    # -- writer threads --------------------------------------------------------------------

    def _step(self, writer: _Writer) -> bool:
        """One step of a writer: open the sink (writer 0), or write one batch. True once
        closed and drained."""
        buffer = self._buffer
        index = writer.index
        if self._abandon.is_set():  # past the exit deadline: hand over, write nothing more
            return not self._hand_over_waiting(index, writer.delivery.abandon_all)
        if index == 0 and not self._opener.opened:
            if buffer.closed and not buffer.waiting_in(0):
                return True
            self._open_sink()
            return False
        entries, lane = buffer.take(index, self._age_wait, _IDLE_WAIT)
        if entries:
            writer.busy_since = self._clock()
            writer.oldest = min(entry.enqueued_at for entry in entries)
        self._stats.sync()  # the age gauge counts the batch just taken
        if entries:
            self._write(writer, entries, lane)
        elif buffer.closed and not buffer.waiting_in(index):
            return True
        return False

    def _idle(self, writer: _Writer) -> bool:
        """Whether ``writer`` has nothing to do but wait for rows of its own lane."""
        return (
            self._opener.opened
            and not self._abandon.is_set()
            and not self._buffer.closed
            and not self._buffer.waiting_in(writer.index)
        )

    def _writer_done(self) -> None:
        with self._lock:
            self._finished_writers += 1
            last = self._finished_writers == self.writers
        if last:
            self._close_journal()
            self._close_sink()
        self._stats.wake()

    def _close_journal(self) -> None:
        """Once the writers are done: the journal is removed if every row of it is done (and
        its progress rows with it), else kept for the next process."""
        journal = self._journal
        if journal is None:
            return
        removed = journal.close()
        self._stats.journal_bytes = lambda: 0  # this process holds no journal any more
        self._stats.sync()
        if removed:
            forget = getattr(self._sink, "forget_progress", None)
            if forget is not None and getattr(self._sink, "records_progress", False):
                try:
                    forget(journal.prefix)
                except Exception as error:  # harmless: no journal refers to them
                    logger.info("queue %s: its progress rows are kept (%s)", self.name, error)
        elif journal.all_done():  # closing it failed, and said why
            logger.warning(
                "queue %s: every row is written, but the journal %s is left on disk: the next "
                "start finds its rows written and removes it",
                self.name,
                journal.path,
            )
        else:
            logger.warning(
                "queue %s: %d rows not written are kept in the journal %s for the next start",
                self.name,
                journal.tracker.pending(journal.prefix),
                journal.path,
            )

    def _open_sink(self) -> None:
        """One step of opening the sink while rows wait (or a producer asks): an attempt, then
        a backoff, or rows given up in put order once the retry budget is spent."""
        buffer, opener = self._buffer, self._opener
        # Rows to replay wait for it too: their progress is read from the database.
        if not (buffer.qsize() or opener.wanted or not opener.attempts or buffer.replaying):
            buffer.wait_for_rows(_IDLE_WAIT)
            return
        if opener.attempt():
            self._open_retries = 0
            self._budget.succeeded()
            buffer.wake()
            return
        error = opener.error
        assert error is not None
        now = self._clock()
        self._budget.failed(now)
        remaining = self._budget.remaining(self._open_retries, now)
        if remaining is not None and remaining <= 0 and buffer.qsize():
            delivery = self._writers[0].delivery
            self._hand_over_waiting(
                0,
                lambda entries: delivery.give_up_all(
                    entries, error, "given up: the sink cannot open"
                ),
            )
            return
        self._open_retries += 1
        delay = self._backoff.delay(self._open_retries)
        if remaining is not None and remaining > 0:
            delay = min(delay, remaining)  # give the rows up when the budget ends, not later
        self._abandon.wait(delay)

    def _hand_over_waiting(self, index: int, hand: Callable[[list[Entry]], None]) -> bool:
        """Take up to a batch of the rows waiting for writer ``index`` now, unwritten, and
        ``hand`` them over (given up or abandoned); False if none was waiting."""
        entries, lane = self._buffer.take_now(index)
        if not entries:
            return False
        try:
            hand(entries)
        finally:
            self._settle_taken(entries, lane, len(entries), time.monotonic())
        return True

    def _age_wait(self, oldest: Entry) -> float:
        return seconds_until_due(oldest.enqueued_at, self._clock(), self._flush_interval)

    def _write(self, writer: _Writer, entries: list[Entry], lane: int) -> None:
        started = time.monotonic()
        released = 0

        def on_read(rows: int) -> None:
            # Room goes back to producers as the sink reads; a retry reads the same rows again
            # and a coalesced batch has fewer rows than were taken, hence max and min.
            nonlocal released
            target = min(rows, len(entries))
            if target > released:
                self._buffer.release(target - released)
                released = target

        try:
            refused = entries[0].target
            if isinstance(refused, Refused):  # replayed, and not writable as the table is now
                writer.delivery.give_up_all(entries, refused.error, "refused at replay")
                return
            unchecked = any(not entry.params for entry in entries)
            checked = self._check_unchecked(writer, entries) if unchecked else entries
            if checked:
                deliver = writer.delivery.deliver
                self._tracer.flush(len(checked), lambda: deliver(checked, on_read))
        finally:
            writer.busy_since = writer.oldest = None  # before the gauges are synced at settling
            self._settle_taken(entries, lane, len(entries) - released, started)

    def _settle_taken(
        self, entries: list[Entry], lane: int, unreleased: int, started: float
    ) -> None:
        self._buffer.release(unreleased)
        if lane == INTAKE:
            self._buffer.settle_intake(len(entries))
        elif lane == REPLAY:
            self._buffer.settle_replay(len(entries))
        weight = sum(entry.weight for entry in entries)
        self._stats.batch_done(lane, weight, time.monotonic() - started)

    def _check_unchecked(self, writer: _Writer, entries: list[Entry]) -> list[Entry]:
        """Rows accepted before the sink could open, checked now as put() would have; a row
        that does not fit is given up with the error put() would have raised."""
        checked = []
        for entry in entries:
            if entry.params:
                checked.append(entry)
                continue
            try:
                if type(entry.params) is Deletion:
                    key, params = self._prepare_delete(entry.row)
                else:
                    key, params = self._prepare(entry.row)
            except (TypeError, ValueError) as error:
                writer.delivery.give_up_all([entry], error, "refused when checked")
                continue
            checked.append(entry._replace(key=key, params=params))
        return checked

    def _give_up(self, entries: list[Entry], error: BaseException) -> None:
        # Already logged with their keys; on_failure runs on a thread of its own.
        if self._callbacks is not None:
            self._callbacks.hand([entry.row for entry in entries], error)


def _combine_rows(sink: Sink, kept: Entry, newer: Entry) -> Entry:
    """Queue-wide coalescing: the sink's rule for two rows of one key, as inside a batch."""
    try:
        return combine(kept, newer, getattr(sink, "replaces", None), getattr(sink, "merger", None))
    except Exception as error:  # a merge of values that do not add up (str + int, say)
        raise TypeError(
            f"row cannot be merged into the waiting row of its key {newer.key!r}: {error}"
        ) from None


def _oldest_row_age(buffer: RowBuffer, writers: list[_Writer], clock: Callable[[], float]) -> float:
    """Seconds the oldest row not yet written or given up has waited (0.0: none)."""
    times = [writer.oldest for writer in writers if writer.oldest is not None]
    waiting = buffer.oldest_waiting()
    if waiting is not None:
        times.append(waiting)
    return max(0.0, clock() - min(times)) if times else 0.0


def _weak(method: Callable[[list[Entry], BaseException], None]) -> FailureHandler:
    ref = weakref.WeakMethod(method)

    def call(entries: list[Entry], error: BaseException) -> None:
        bound = ref()
        if bound is not None:
            bound(entries, error)

    return call


def _work(ref: weakref.ref[WriteBehindQueue], writer: _Writer, sink: Sink, name: str) -> None:
    """A writer thread. It holds the queue only during a step, and waits for rows of its own
    without it, so that a queue nobody references any more, which then holds no rows, is
    collected (a step waits at most _IDLE_WAIT for rows); writer 0 then lets its sink go (and
    with it the pool) and every writer ends."""
    try:
        while True:
            queue = ref()
            if queue is None:
                if writer.index == 0:
                    logger.info("queue %s: no longer referenced; closing its sink", name)
                    try:
                        sink.close()
                    except Exception:
                        logger.exception("queue %s: closing the sink failed", name)
                return
            if queue._idle(writer):
                buffer = queue._buffer
                del queue  # with several writers, one of them would otherwise always hold it
                buffer.wait_for_work(writer.index, _IDLE_WAIT)
                continue
            try:
                finished = queue._step(writer)
            except BaseException:  # a writer must outlive any bug (even a SystemExit raised
                # in on_failure); the rows stay counted
                logger.exception("queue %s: unexpected error in a writer", name)
                finished = False
            if finished:
                queue._writer_done()
                return
            del queue
    finally:
        writer.busy_since = writer.oldest = None


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")


def _check_seconds(name: str, value: object, *, positive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "positive" if positive else "zero or more"
        raise ValueError(f"{name} must be a finite number of seconds, {bound}; got {value}")


def _check_journal_root(root: Path) -> None:
    """A journal's directory must be one, or be possible to make: checked without making it
    (nothing is created before the first put, so that a server may fork first)."""
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"journal: {existing} is not a directory (journal path {root})")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"journal: {existing} is not writable by this process ({root})")


def _check_registry(value: object) -> None:
    if value is not None and not isinstance(value, CollectorRegistry):
        raise TypeError(
            "registry must be a prometheus_client.CollectorRegistry or None, "
            f"got {type(value).__name__} {value!r}"
        )
