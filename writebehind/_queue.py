"""WriteBehindQueue: accepts rows, and writes them in batches from one worker thread."""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry

from . import _lifecycle
from ._batch import Entry, new_entry, seconds_until_due
from ._buffer import RowBuffer
from ._delivery import Delivery, FailureHandler
from ._metrics import Metrics, QueueStats
from ._opening import SinkOpener
from ._retry import Backoff, RetryBudget
from ._sink import Params, Sink
from ._tracing import FlushTracer
from .errors import QueueClosed, SchemaError

__all__ = ["FailureCallback", "WriteBehindQueue"]

UNCHECKED: Params = ()
"""The params of a row accepted before the sink could read the catalog: checked later."""

logger = logging.getLogger("writebehind")

FailureCallback = Callable[[list[Mapping[str, Any]], BaseException], None]
"""``on_failure(rows, error)``: rows given up (as they were put) and the error that ended them.

Called on the worker thread: later rows wait while it runs. What it raises is logged. It may
put() rows again (accepted at once, even beyond ``maxsize``) and close(); flush() raises there."""

# Longest a wait lasts before its condition is checked again, should a wake-up go missing.
_IDLE_WAIT = 5.0


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
        if on_failure is not None and not callable(on_failure):
            raise TypeError("on_failure must be a callable(rows, error) or None")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {type(name).__name__}")
        if name == "":
            raise ValueError("name must be a non-empty string or None")
        if not callable(clock):
            raise TypeError("clock must be a callable returning monotonic seconds")
        _check_registry(registry)

        self.name: str = name or sink.name
        self.shutdown_timeout = float(shutdown_timeout)
        self._sink = sink
        self._prepare = sink.prepare
        self._flush_interval = float(flush_interval)
        self._on_failure = on_failure
        self._clock = clock
        self._buffer: RowBuffer[Entry] = RowBuffer(maxsize, batch_size)
        buffer = self._buffer
        self._stats = QueueStats(self.name, registry, lambda: buffer.put_count)
        self._backoff = Backoff(retry_backoff, retry_backoff_max)
        self._budget = RetryBudget(max_retries, max_retry_time)
        self._delivery = Delivery(
            sink,
            name=self.name,
            budget=self._budget,
            backoff=self._backoff,
            stats=self._stats,
            give_up=_weak(self._give_up),  # no cycle: an unreferenced queue is freed at once
            sleep=time.sleep,
            clock=clock,
        )
        self._opener = SinkOpener(sink, self.name)
        self._first_open_wait = float(getattr(sink, "connect_timeout", 5.0)) + 1.0
        self._open_retries = 0
        self._tracer = FlushTracer(self.name)
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._closed = False
        self._sink_closed = False
        self._forked = False

    @property
    def batch_size(self) -> int:
        """The most rows in one write: ``batch_size`` as given, or ``maxsize`` if smaller."""
        return self._buffer.batch_size

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._worker else "not started"
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
        """Open the sink and start the worker now: the way to fail fast at boot.

        Makes one attempt to open the sink (bounded by its ``connect_timeout``) and raises what
        it raised: SchemaError for an unusable table, a psycopg error naming the cause when the
        database cannot be reached or refuses the connection. QueueClosed after close(),
        RuntimeError in a process forked after the queue started.
        """
        self._start_worker()
        if not self._opener.opened and not self._opener.attempt():
            error = self._opener.error
            assert error is not None
            raise error.with_traceback(None)

    def _start_worker(self) -> None:
        with self._lock:
            if self._forked:
                raise RuntimeError(
                    f"queue {self.name!r} was started before this process was forked; "
                    "create queues in the process that uses them, after forking"
                )
            if self._closed:
                raise QueueClosed(f"queue {self.name!r} is closed")
            if self._worker is not None:
                return
            worker = threading.Thread(
                target=_work,
                args=(weakref.ref(self), self._sink, self.name),
                name=f"writebehind-{self.name}",
            )
            worker.daemon = True
            worker.start()
            self._worker = worker
            _lifecycle.register(self)

    def put(self, row: Mapping[str, Any], block: bool = True, timeout: float | None = None) -> None:
        """Accept ``row`` (a Mapping column -> value) for writing, and return.

        Never waits on the database. The row is checked and converted now: TypeError if it is
        not a Mapping, ValueError naming a missing or unknown column; nothing is accepted then.
        Until the sink could read the table's catalog, rows are accepted unchecked and checked
        when it can (the first put waits for the first attempt, within ``timeout``); when the
        database refuses the configuration (credentials, table, key), its error is raised here.
        When ``maxsize`` rows are waiting, wait for room (at most ``timeout`` seconds, then
        QueueFull), or raise QueueFull at once if not ``block``; on the worker thread (from
        ``on_failure``) the row is accepted at once, beyond ``maxsize``. QueueClosed after
        close().
        """
        if self._worker is None:
            self._start_worker()
        if not self._opener.opened:
            key, params = self._put_unopened(row, block, timeout)
        else:
            key, params = self._prepare(row)
        buffer = self._buffer
        entry = new_entry((key, params, row, self._clock()))
        if self._worker is threading.current_thread():
            buffer.put_now([entry])  # room is only ever freed by this thread: never wait for it
        else:
            buffer.put(entry, block, timeout)
        if buffer.put_count % QueueStats.SYNC_EVERY == 0:
            self._stats.sync()

    def put_many(
        self, rows: Iterable[Mapping[str, Any]], block: bool = True, timeout: float | None = None
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
        if self._worker is None:
            self._start_worker()
        entries = []
        for index, row in enumerate(rows):
            try:
                if self._opener.opened:
                    key, params = self._prepare(row)
                else:
                    key, params = self._put_unopened(row, block, timeout)
            except SchemaError:
                raise
            except (TypeError, ValueError) as error:
                raise type(error)(f"row {index}: {error}") from None
            entries.append(new_entry((key, params, row, self._clock())))
        if self._worker is threading.current_thread():
            self._buffer.put_now(entries)
        else:
            self._buffer.put_all(entries, block, timeout)
        self._stats.sync()

    def _put_unopened(
        self, row: Mapping[str, Any], block: bool, timeout: float | None
    ) -> tuple[Any, Params]:
        if self._closed:
            raise QueueClosed(f"queue {self.name!r} is closed")
        opener = self._opener
        if not opener.attempts:
            wait = self._first_open_wait if block else 0.0
            opener.wait_first(wait if timeout is None else min(wait, timeout))
        if opener.opened:
            return self._prepare(row)
        error = opener.error
        if error is not None and opener.configuration_error:
            opener.want()
            self._buffer.wake()
            raise error.with_traceback(None)
        if not isinstance(row, Mapping):
            raise TypeError(f"row must be a Mapping of column -> value, got {type(row).__name__}")
        return None, UNCHECKED

    def put_nowait(self, row: Mapping[str, Any]) -> None:
        """put() without waiting: QueueFull when ``maxsize`` rows are waiting."""
        self.put(row, block=False)

    def flush(self, timeout: float | None = None) -> bool:
        """Write out every row put before this call, partial batch included.

        Returns True once each of those rows is persisted or given up (``on_failure``), False
        if ``timeout`` seconds ran out first or the worker is not running. Rows put meanwhile by
        other threads may be written too, but are not waited for. RuntimeError on the worker
        thread (from ``on_failure``), which would wait for itself.
        """
        if self._worker is threading.current_thread():
            raise RuntimeError(
                f"queue {self.name!r}: flush() from on_failure would wait for the worker "
                "that runs it; put() the rows and return"
            )
        target = self._buffer.request_flush()
        deadline = None if timeout is None else time.monotonic() + timeout
        progress = self._stats.progress
        with progress:
            while self._stats.settled < target:
                worker = self._worker
                if worker is None or not worker.is_alive():
                    return False
                wait = (
                    _IDLE_WAIT if deadline is None else min(_IDLE_WAIT, deadline - time.monotonic())
                )
                if wait <= 0:
                    return False
                progress.wait(wait)
        return True

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting rows, write out the rows already accepted, stop the worker.

        Waits for the drain at most ``timeout`` seconds (None: as long as it takes); after a
        timeout the worker goes on draining in the background and a warning is logged. The
        worker closes the sink once it has drained. Idempotent; callable from ``on_failure``
        (it returns at once there).
        """
        self.stop_accepting()
        worker = self._worker
        if worker is None:
            self._close_sink()
        elif worker is not threading.current_thread():
            worker.join(timeout)
            if worker.is_alive():
                logger.warning(
                    "queue %s: close() timed out after %.1fs with %d rows not yet written",
                    self.name,
                    timeout,
                    self.pending_rows(),
                )

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
            _lifecycle.forget(self)

    def stop_accepting(self) -> None:
        """Refuse further puts (QueueClosed) and let the worker drain what it has."""
        with self._lock:
            self._closed = True
        self._buffer.close()

    def pending_rows(self) -> int:
        """Rows accepted and not yet persisted or given up."""
        return self.metrics().current_queue_depth

    def _inherited_by_fork(self) -> None:
        """In a forked child: no worker, and the rows in memory stay the parent's."""
        self._lock = threading.Lock()
        self._forked = True
        self._worker = None
        self._sink_closed = True  # the pool, if any, is the parent's too

    def metrics(self) -> Metrics:
        """A consistent snapshot of this queue's counters."""
        return self._stats.snapshot()

    # -- worker thread ---------------------------------------------------------------------

    def _step(self) -> bool:
        """One step of the worker: open the sink, or write one batch. True once closed and
        drained."""
        buffer = self._buffer
        if not self._opener.opened:
            if buffer.closed and not buffer.qsize():
                self._close_sink()
                return True
            self._open_sink()
            return False
        entries = buffer.take(self._age_wait, _IDLE_WAIT)
        self._stats.sync()
        if entries:
            self._write(entries)
        elif buffer.closed and not buffer.qsize():
            self._close_sink()
            return True
        return False

    def _open_sink(self) -> None:
        """One step of opening the sink while rows wait (or a producer asks): an attempt, then
        a backoff, or rows given up in put order once the retry budget is spent."""
        buffer, opener = self._buffer, self._opener
        if not (buffer.qsize() or opener.wanted or not opener.attempts):
            buffer.wait_for_rows(_IDLE_WAIT)
            return
        if opener.attempt():
            self._open_retries = 0
            self._budget.succeeded()
            return
        error = opener.error
        assert error is not None
        now = self._clock()
        self._budget.failed(now)
        remaining = self._budget.remaining(self._open_retries, now)
        if remaining is not None and remaining <= 0 and buffer.qsize():
            entries = buffer.take_now()
            try:
                self._delivery.give_up_all(entries, error, "given up: the sink cannot open")
            finally:
                self._settle_taken(entries, len(entries), time.monotonic())
            return
        self._open_retries += 1
        delay = self._backoff.delay(self._open_retries)
        if remaining is not None and remaining > 0:
            delay = min(delay, remaining)  # give the rows up when the budget ends, not later
        time.sleep(delay)

    def _age_wait(self, oldest: Entry) -> float:
        return seconds_until_due(oldest.enqueued_at, self._clock(), self._flush_interval)

    def _write(self, entries: list[Entry]) -> None:
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
            unchecked = any(not entry.params for entry in entries)
            checked = self._check_unchecked(entries) if unchecked else entries
            if checked:
                self._tracer.flush(len(checked), lambda: self._delivery.deliver(checked, on_read))
        finally:
            self._settle_taken(entries, len(entries) - released, started)

    def _settle_taken(self, entries: list[Entry], unreleased: int, started: float) -> None:
        self._buffer.release(unreleased)
        self._stats.batch_done(len(entries), time.monotonic() - started)

    def _check_unchecked(self, entries: list[Entry]) -> list[Entry]:
        """Rows accepted before the sink could open, checked now as put() would have; a row
        that does not fit is given up with the error put() would have raised."""
        checked = []
        for entry in entries:
            if entry.params:
                checked.append(entry)
                continue
            try:
                key, params = self._prepare(entry.row)
            except (TypeError, ValueError) as error:
                self._delivery.give_up_all([entry], error, "refused when checked")
                continue
            checked.append(entry._replace(key=key, params=params))
        return checked

    def _give_up(self, entries: list[Entry], error: BaseException) -> None:
        if self._on_failure is None:
            return  # already logged with their keys
        try:
            self._on_failure([entry.row for entry in entries], error)
        except Exception:
            logger.exception("queue %s: on_failure raised", self.name)


def _weak(method: Callable[[list[Entry], BaseException], None]) -> FailureHandler:
    ref = weakref.WeakMethod(method)

    def call(entries: list[Entry], error: BaseException) -> None:
        bound = ref()
        if bound is not None:
            bound(entries, error)

    return call


def _work(ref: weakref.ref[WriteBehindQueue], sink: Sink, name: str) -> None:
    """The worker thread. It holds the queue only during a step (a step waits at most
    _IDLE_WAIT for rows), so a queue nobody references any more, which can then hold no rows,
    is collected; the worker then lets its sink go (and with it the pool) and ends."""
    while True:
        queue = ref()
        if queue is None:
            logger.info("queue %s: no longer referenced; closing its sink", name)
            try:
                sink.close()
            except Exception:
                logger.exception("queue %s: closing the sink failed", name)
            return
        try:
            finished = queue._step()
        except Exception:  # the worker must outlive any bug; the rows stay counted
            logger.exception("queue %s: unexpected error in the worker", name)
            finished = False
        del queue
        if finished:
            return


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


def _check_registry(value: object) -> None:
    if value is not None and not isinstance(value, CollectorRegistry):
        raise TypeError(
            "registry must be a prometheus_client.CollectorRegistry or None, "
            f"got {type(value).__name__} {value!r}"
        )
