"""Counters of one queue: the Metrics snapshot and its Prometheus series."""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = ["Metrics", "QueueStats"]


@dataclass(frozen=True)
class Metrics:
    """A consistent snapshot of one queue's counters.

    ``total_enqueued == total_persisted + total_failed + total_abandoned + current_queue_depth``
    always holds: the depth counts rows accepted by put() and not yet written or given up,
    including those in the batches being written. A row replaced by (or merged into) another
    row of the same key before it was written counts as persisted (or failed, or abandoned)
    with that row.
    """

    total_enqueued: int
    total_persisted: int
    total_failed: int
    total_retries: int
    """Retry attempts after transient failures."""
    total_batches: int
    """Successful writes (transactions committed)."""
    current_queue_depth: int
    timestamp: datetime
    """When the snapshot was taken, timezone-aware UTC."""
    total_abandoned: int = 0
    """Rows still unwritten when the exit hook's ``shutdown_timeout`` ran out, handed to
    ``on_failure`` with RowsAbandoned."""
    oldest_row_age: float = 0.0
    """Seconds the oldest row not yet written or given up has waited (0.0 when there is none):
    how far behind the queue is, the number to alert on."""
    total_replayed: int = 0
    """Rows read back from the journals of processes that died, and queued again (they are
    counted in ``total_enqueued`` too)."""
    journal_bytes: int = 0
    """The size of this process's journal segments (0 without a journal)."""
    total_corrupt: int = 0
    """Journal records found damaged at replay and set aside (logged, the files kept)."""
    total_in_doubt: int = 0
    """Rows given up (counted in ``total_failed`` too) with CommitInDoubt: an attempt to write
    them lost its connection after COMMIT was sent, so they may be in the table."""
    total_deleted: int = 0
    """Deletes written, one per delete() (counted in ``total_persisted`` too), also those
    combined with other writes of their key before it was written."""


_BATCH_ROWS_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class _Families:
    """The metric families of one registry, each registered there once."""

    def __init__(self, registry: CollectorRegistry) -> None:
        label = ["queue"]
        # Registered first, so that a scrape brings every queue's put() count up to date
        # before the families below are read.
        self.syncer = _EnqueuedSyncer()
        registry.register(self.syncer)
        self.enqueued = Counter(
            "writebehind_enqueued", "Rows accepted by put().", label, registry=registry
        )
        self.persisted = Counter(
            "writebehind_persisted",
            "Rows written to the database (replaced rows count with their replacement).",
            label,
            registry=registry,
        )
        self.failed = Counter(
            "writebehind_failed",
            "Rows given up: rejected by the database or out of retries.",
            label,
            registry=registry,
        )
        self.in_doubt = Counter(
            "writebehind_rows_in_doubt",
            "Rows given up that may have been written: a write of them lost its connection "
            "after COMMIT was sent (counted in writebehind_failed too).",
            label,
            registry=registry,
        )
        self.deleted = Counter(
            "writebehind_rows_deleted",
            "Deletes written (counted in writebehind_persisted too).",
            label,
            registry=registry,
        )
        self.abandoned = Counter(
            "writebehind_abandoned",
            "Rows still unwritten when the exit deadline (shutdown_timeout) ran out.",
            label,
            registry=registry,
        )
        self.retries = Counter(
            "writebehind_retries", "Retry attempts after failed writes.", label, registry=registry
        )
        self.batches = Counter(
            "writebehind_batches", "Successful batch writes.", label, registry=registry
        )
        self.depth = Gauge(
            "writebehind_queue_depth",
            "Rows accepted and not yet written or given up.",
            label,
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.oldest_row_age = Gauge(
            "writebehind_oldest_row_age_seconds",
            "How long the oldest row not yet written or given up has waited.",
            label,
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.replayed = Counter(
            "writebehind_replayed",
            "Rows replayed from the journals of processes that died.",
            label,
            registry=registry,
        )
        self.journal_bytes = Gauge(
            "writebehind_journal_bytes",
            "Size of the journal's segment files.",
            label,
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.journal_corrupt = Counter(
            "writebehind_journal_corrupt",
            "Journal records found damaged at replay and set aside.",
            label,
            registry=registry,
        )
        self.flush_duration = Histogram(
            "writebehind_flush_duration_seconds",
            "Time to write one batch taken from the queue, retries and row isolation included.",
            label,
            registry=registry,
        )
        self.batch_rows = Histogram(
            "writebehind_batch_rows",
            "Rows taken from the queue per batch.",
            label,
            registry=registry,
            buckets=_BATCH_ROWS_BUCKETS,
        )

    def all(self) -> tuple[Counter | Gauge | Histogram, ...]:
        """Every family with a ``queue`` label."""
        return (
            self.enqueued,
            self.persisted,
            self.deleted,
            self.failed,
            self.in_doubt,
            self.abandoned,
            self.retries,
            self.batches,
            self.depth,
            self.oldest_row_age,
            self.replayed,
            self.journal_bytes,
            self.journal_corrupt,
            self.flush_duration,
            self.batch_rows,
        )


class _EnqueuedSyncer(Collector):
    """Exports no metric of its own: when a registry is collected, it brings the enqueued
    counter and depth gauge of each queue up to date first."""

    def __init__(self) -> None:
        self.queues: weakref.WeakSet[QueueStats] = weakref.WeakSet()

    def collect(self) -> Iterable[Metric]:
        for stats in list(self.queues):
            stats.sync()
        return []


# Prometheus refuses a second family of one name in a registry, so queues sharing a registry
# share its families and tell themselves apart by the `queue` label.
_families_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, _Families] = (
    weakref.WeakKeyDictionary()
)
_families_lock = threading.Lock()


def _reset_in_child() -> None:
    # Another thread may have held the lock at the fork.
    global _families_lock
    _families_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_in_child)


def _families_for(registry: CollectorRegistry) -> _Families:
    with _families_lock:
        families = _families_by_registry.get(registry)
        if families is None:
            families = _families_by_registry[registry] = _Families(registry)
        return families


class QueueStats:
    """Thread-safe counters of one queue, mirrored into Prometheus when a registry is given.

    The count of accepted rows is the buffer's (``enqueued_count``), kept under its lock. It
    reaches the Prometheus counter and depth gauge in bulk, by ``sync``: at every scrape of the
    registry, every ``metrics()``, each step of the worker, and every ``SYNC_EVERY`` puts (for
    collectors in other processes), rather than with two locked increments per put.
    ``settled[lane]`` is the number of rows accepted into a lane whose batch has been fully
    handled, in the lane's put order (the intake lane is the last): the flush barrier waits on
    it through ``progress``.
    """

    SYNC_EVERY = 64

    def __init__(
        self,
        name: str,
        registry: CollectorRegistry | None,
        enqueued_count: Callable[[], int],
        *,
        lanes: int = 1,
        oldest_row_age: Callable[[], float] = lambda: 0.0,
        fresh_series: bool = False,
    ) -> None:
        self.progress = threading.Condition(threading.Lock())
        self.persisted = 0
        self.failed = 0
        self.in_doubt = 0
        self.deleted = 0
        self.abandoned = 0
        self.retries = 0
        self.batches = 0
        self.replayed = 0
        self.corrupt = 0
        self.settled = [0] * (lanes + 2)  # the replay and intake lanes last
        self.journal_bytes: Callable[[], int] = lambda: 0
        self._enqueued_count = enqueued_count
        self._oldest_row_age = oldest_row_age
        self._enqueued_exported = 0
        self._exported = registry is not None
        if registry is not None:
            families = _families_for(registry)
            if fresh_series and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
                # In a forked child its counts start at zero, as its queue does. (In
                # multiprocess mode they do by themselves: the values are kept per process.)
                for family in families.all():
                    with contextlib.suppress(KeyError):
                        family.remove(name)
            self._enqueued_series = families.enqueued.labels(queue=name)
            self._persisted_series = families.persisted.labels(queue=name)
            self._failed_series = families.failed.labels(queue=name)
            self._in_doubt_series = families.in_doubt.labels(queue=name)
            self._deleted_series = families.deleted.labels(queue=name)
            self._abandoned_series = families.abandoned.labels(queue=name)
            self._oldest_series = families.oldest_row_age.labels(queue=name)
            self._retries_series = families.retries.labels(queue=name)
            self._batches_series = families.batches.labels(queue=name)
            self._depth_series = families.depth.labels(queue=name)
            self._flush_series = families.flush_duration.labels(queue=name)
            self._batch_rows_series = families.batch_rows.labels(queue=name)
            self._replayed_series = families.replayed.labels(queue=name)
            self._journal_bytes_series = families.journal_bytes.labels(queue=name)
            self._corrupt_series = families.journal_corrupt.labels(queue=name)
            families.syncer.queues.add(self)

    def sync(self) -> None:
        """Bring the Prometheus enqueued counter, depth and age gauges up to date."""
        if not self._exported:
            return
        with self.progress:
            enqueued = self._enqueued_count()
            if enqueued > self._enqueued_exported:
                self._enqueued_series.inc(enqueued - self._enqueued_exported)
                self._enqueued_exported = enqueued
            self._depth_series.set(enqueued - self.persisted - self.failed - self.abandoned)
        self._oldest_series.set(self._oldest_row_age())
        self._journal_bytes_series.set(self.journal_bytes())

    def replayed_rows(self, rows: int) -> None:
        """``rows`` rows read back from dead processes' journals were queued again."""
        with self.progress:
            self.replayed += rows
        if self._exported:
            self._replayed_series.inc(rows)

    def corrupt_records(self, records: int) -> None:
        """``records`` journal records were found damaged and set aside."""
        with self.progress:
            self.corrupt += records
        if self._exported:
            self._corrupt_series.inc(records)

    def retried(self) -> None:
        with self.progress:
            self.retries += 1
        if self._exported:
            self._retries_series.inc()
            self.sync()  # the worker is about to wait: show the rows piling up meanwhile

    def written(self, rows: int, deleted: int = 0) -> None:
        """A batch (or part of one) standing for ``rows`` accepted rows was committed,
        ``deleted`` of its writes deletes."""
        with self.progress:
            self.persisted += rows
            self.deleted += deleted
            self.batches += 1
        if self._exported:
            self._persisted_series.inc(rows)
            if deleted:
                self._deleted_series.inc(deleted)
            self._batches_series.inc()
            self.sync()

    def gave_up(self, rows: int, in_doubt: int = 0) -> None:
        """``rows`` accepted rows were handed to the failure callback, ``in_doubt`` of them
        perhaps written (CommitInDoubt)."""
        with self.progress:
            self.failed += rows
            self.in_doubt += in_doubt
        if self._exported:
            self._failed_series.inc(rows)
            if in_doubt:
                self._in_doubt_series.inc(in_doubt)
            self.sync()

    def abandoned_at_exit(self, rows: int) -> None:
        """``rows`` accepted rows were abandoned at the exit deadline."""
        with self.progress:
            self.abandoned += rows
        if self._exported:
            self._abandoned_series.inc(rows)
            self.sync()

    def batch_done(self, lane: int, rows: int, seconds: float) -> None:
        """A batch standing for ``rows`` rows accepted into ``lane`` (-1: the intake, -2: the
        replay lane) is fully handled: wake flush waiters."""
        with self.progress:
            self.settled[lane] += rows
            self.progress.notify_all()
        if self._exported:
            self._flush_series.observe(seconds)
            self._batch_rows_series.observe(rows)
            self.sync()

    def wake(self) -> None:
        """Wake flush waiters to look again (a writer ended)."""
        with self.progress:
            self.progress.notify_all()

    def snapshot(self) -> Metrics:
        """A consistent snapshot; the enqueued count is read last, so depth is never negative."""
        with self.progress:
            persisted, failed, abandoned = self.persisted, self.failed, self.abandoned
            retries, batches = self.retries, self.batches
            replayed, corrupt, in_doubt = self.replayed, self.corrupt, self.in_doubt
            deleted = self.deleted
        enqueued = self._enqueued_count()
        oldest = self._oldest_row_age()
        self.sync()
        return Metrics(
            total_enqueued=enqueued,
            total_persisted=persisted,
            total_failed=failed,
            total_retries=retries,
            total_batches=batches,
            current_queue_depth=enqueued - persisted - failed - abandoned,
            timestamp=datetime.now(timezone.utc),
            total_abandoned=abandoned,
            oldest_row_age=oldest,
            total_replayed=replayed,
            journal_bytes=self.journal_bytes(),
            total_corrupt=corrupt,
            total_in_doubt=in_doubt,
            total_deleted=deleted,
        )
