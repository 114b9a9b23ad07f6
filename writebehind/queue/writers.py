"""The writer threads: each takes batches of its lane from the buffer and delivers them through
the sink; writer 0 first opens the sink, retrying while rows wait."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Protocol

from .._sink import Deletion, Sink
from .batch import Entry, Refused, seconds_until_due
from .buffer import INTAKE, REPLAY, RowBuffer
from .delivery import Delivery
from .metrics import QueueStats
from .opening import SinkOpener
from .retry import Backoff, RetryBudget
from .tracing import FlushTracer

__all__ = ["IDLE_WAIT", "Writer", "Writing", "oldest_row_age", "start_threads", "work"]

logger = logging.getLogger("writebehind")

IDLE_WAIT = 5.0
"""Longest a wait lasts before its condition is checked again, should a wake-up go missing."""


class Writer:
    """One writer thread's state: its lane of rows, its retry state, the batch it writes."""

    def __init__(self, index: int, delivery: Delivery) -> None:
        self.index = index
        self.delivery = delivery
        self.thread: threading.Thread | None = None
        self.busy_since: float | None = None
        """When it took the batch it is writing (its writes and retries), by the clock."""
        self.oldest: float | None = None
        """When the oldest row of that batch was put."""


class Writing:
    """What the writers of one queue do, step by step. It holds the queue's parts, never the
    queue: a queue nobody references is freed at once, and its writers end."""

    def __init__(
        self,
        sink: Sink,
        *,
        buffer: RowBuffer,
        opener: SinkOpener,
        stats: QueueStats,
        writers: list[Writer],
        budget: RetryBudget,
        backoff: Backoff,
        abandon: threading.Event,
        flush_interval: float,
        clock: Callable[[], float],
        name: str,
    ) -> None:
        self._sink = sink
        self._prepare = sink.prepare
        self._buffer = buffer
        self._opener = opener
        self._stats = stats
        self._writers = writers
        # Opening the sink (writer 0's job) spends writer 0's retry state.
        self._budget, self._backoff = budget, backoff
        self._open_retries = 0
        self._abandon = abandon
        self._flush_interval = flush_interval
        self._clock = clock
        self._name = name
        self._tracer = FlushTracer(name)

    def step(self, writer: Writer) -> bool:
        """One step of a writer: open the sink (writer 0), or write one batch. True once
        closed and drained."""
        buffer = self._buffer
        index = writer.index
        if self._abandon.is_set():  # past the exit deadline: hand over, write nothing more
            return not self.hand_over_waiting(index, writer.delivery.abandon_all)
        if index == 0 and not self._opener.opened:
            if buffer.closed and not buffer.waiting_in(0):
                return True
            self._open_sink()
            return False
        entries, lane = buffer.take(index, self._age_wait, IDLE_WAIT)
        if entries:
            writer.busy_since = self._clock()
            writer.oldest = min(entry.enqueued_at for entry in entries)
        self._stats.sync()  # the age gauge counts the batch just taken
        if entries:
            self._write(writer, entries, lane)
        elif buffer.closed and not buffer.waiting_in(index):
            return True
        return False

    def idle(self, writer: Writer) -> bool:
        """Whether ``writer`` has nothing to do but wait for rows of its own lane."""
        return (
            self._opener.opened
            and not self._abandon.is_set()
            and not self._buffer.closed
            and not self._buffer.waiting_in(writer.index)
        )

    def wait_for_work(self, writer: Writer) -> None:
        """Wait (at most IDLE_WAIT) for rows of ``writer``'s lane."""
        self._buffer.wait_for_work(writer.index, IDLE_WAIT)

    def hand_over_waiting(self, index: int, hand: Callable[[list[Entry]], None]) -> bool:
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

    def abandon(self) -> None:
        """Write no more: cancel the writes under way (the sink's ``interrupt``), and hand the
        rows waiting over as abandoned, from this thread."""
        self._abandon.set()
        self._buffer.wake()
        interrupt = getattr(self._sink, "interrupt", None)
        if interrupt is not None:
            try:
                interrupt()
            except Exception:
                logger.exception("queue %s: cancelling the writes under way failed", self._name)
        delivery = self._writers[0].delivery
        for index in range(len(self._writers)):
            while self.hand_over_waiting(index, delivery.abandon_all):
                pass

    def abandon_under_way(self) -> None:
        """After abandon(), once the writers had their grace: the rows of writes that did not
        end when cancelled are abandoned from this thread (a write that ends later is logged,
        and not counted again)."""
        for writer in self._writers:
            thread = writer.thread
            if thread is not None and thread.is_alive():
                writer.delivery.abandon_under_way()

    def _open_sink(self) -> None:
        """One step of opening the sink while rows wait (or a producer asks): an attempt, then
        a backoff, or rows given up in put order once the retry budget is spent."""
        buffer, opener = self._buffer, self._opener
        # Rows to replay wait for it too: their progress is read from the database.
        if not (buffer.qsize() or opener.wanted or not opener.attempts or buffer.replaying):
            buffer.wait_for_rows(IDLE_WAIT)
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
            self.hand_over_waiting(
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

    def _age_wait(self, oldest: Entry) -> float:
        return seconds_until_due(oldest.enqueued_at, self._clock(), self._flush_interval)

    def _write(self, writer: Writer, entries: list[Entry], lane: int) -> None:
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

    def _check_unchecked(self, writer: Writer, entries: list[Entry]) -> list[Entry]:
        """Rows accepted before the sink could open, checked now as put() would have; a row
        that does not fit is given up with the error put() would have raised."""
        checked = []
        for entry in entries:
            if entry.params:
                checked.append(entry)
                continue
            try:
                if type(entry.params) is Deletion:
                    key, params = self._sink.prepare_delete(entry.row)  # type: ignore[attr-defined]
                else:
                    key, params = self._prepare(entry.row)
            except (TypeError, ValueError) as error:
                writer.delivery.give_up_all([entry], error, "refused when checked")
                continue
            checked.append(entry._replace(key=key, params=params))
        return checked


def oldest_row_age(buffer: RowBuffer, writers: list[Writer], clock: Callable[[], float]) -> float:
    """Seconds the oldest row not yet written or given up has waited (0.0: none)."""
    times = [writer.oldest for writer in writers if writer.oldest is not None]
    waiting = buffer.oldest_waiting()
    if waiting is not None:
        times.append(waiting)
    return max(0.0, clock() - min(times)) if times else 0.0


class Owner(Protocol):
    """The queue, as its writer threads see it."""

    @property
    def _writing(self) -> Writing: ...

    def _writer_done(self) -> None: ...


def start_threads(
    ref: weakref.ref[Owner], writers: list[Writer], sink: Sink, name: str
) -> set[int]:
    """Start a daemon thread for each writer, ``writebehind-<name>[-<index>]``; their idents."""
    for writer in writers:
        suffix = f"-{writer.index}" if len(writers) > 1 else ""
        thread = threading.Thread(
            target=work,
            args=(ref, writer, sink, name),
            name=f"writebehind-{name}{suffix}",
            daemon=True,
        )
        writer.thread = thread
        thread.start()
    return {writer.thread.ident for writer in writers if writer.thread and writer.thread.ident}


def work(ref: weakref.ref[Owner], writer: Writer, sink: Sink, name: str) -> None:
    """A writer thread. It holds the queue only during a step, and waits for rows of its own
    without it, so that a queue nobody references any more, which then holds no rows, is
    collected (a step waits at most IDLE_WAIT for rows); writer 0 then lets its sink go (and
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
            writing = queue._writing
            if writing.idle(writer):
                del queue  # with several writers, one of them would otherwise always hold it
                writing.wait_for_work(writer)
                del writing
                continue
            try:
                finished = writing.step(writer)
            except BaseException:  # a writer must outlive any bug (even a SystemExit raised
                # in on_failure); the rows stay counted
                logger.exception("queue %s: unexpected error in a writer", name)
                finished = False
            del writing
            if finished:
                queue._writer_done()
                return
            del queue
    finally:
        writer.busy_since = writer.oldest = None
