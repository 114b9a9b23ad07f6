"""Writing batches through a sink: every row ends persisted or handed to ``give_up``.

One batch's writes, retries and isolation of refused rows are a BatchRun's (``batch_run``); the
text of log lines is ``log_text``'s (``describe`` and ``shortened`` are re-exported here).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from .._sink import Merger, Replaces, Sink
from ..journal.keeper import QueueJournal
from .batch import Coalesced, Entry, coalesce, split_at_rewrites
from .batch_run import Abandoned, BatchRun, OutOfBudget
from .log_text import describe, key_columns, out_of_budget, shortened
from .metrics import QueueStats
from .paced import ReadProgress
from .retry import Backoff, RetryBudget

__all__ = ["Delivery", "FailureHandler", "Report", "describe", "shortened"]

logger = logging.getLogger("writebehind")

FailureHandler = Callable[[list[Entry], BaseException], None]
"""Receives rows given up (the winning row of each key) and the error that ended them."""


class Report(NamedTuple):
    """How the delivery of one batch ended."""

    rows: int
    """Rows written or given up (after coalescing)."""
    attempts: int
    """1 + the retries spent on failed writes."""
    failed: int
    """Rows given up."""
    error: BaseException | None
    """The last error that gave rows up."""

    @property
    def outcome(self) -> str:
        """``persisted``, ``partial`` (some rows given up) or ``failed`` (all given up)."""
        return (
            "persisted" if not self.failed else "failed" if self.failed == self.rows else "partial"
        )


class Delivery:
    """Writes batches through a sink; every row ends persisted or handed to ``give_up``.

    A batch is first written whole, one transaction. A transient error, or one that is not about
    rows (see ``_retry``), retries the same rows in place after a backoff, so that later rows
    wait behind them and no older value can overtake a newer one, until ``budget`` runs out.
    An error that may be caused by a row's values splits the rows in halves, written in order,
    until each refused row stands alone with its own error: k refused rows among n cost at most
    about 2k·log2(n) writes, and two more for each part whose halves both fail the same way.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        name: str,
        budget: RetryBudget,
        backoff: Backoff,
        stats: QueueStats,
        give_up: FailureHandler,
        sleep: Callable[[float], object],
        clock: Callable[[], float],
        abandon: threading.Event | None = None,
        journal: QueueJournal | None = None,
        deletes: Callable[[], bool] = lambda: False,
    ) -> None:
        self._sink = sink
        self._journal = journal
        # With a journal, a sink that records progress gets the marks in each write's
        # transaction (PostgresUpsert.track_progress); others are replayed at least once.
        self._write_marked: Callable[..., None] | None = (
            sink.write if journal is not None and getattr(sink, "records_progress", False) else None
        )
        self._read_progress: Callable[[str], dict[str, tuple[int, frozenset[int]]]] | None = None
        self._name = name
        self._key_columns = key_columns(sink)  # how a row given up before opening is logged
        self._budget = budget
        self._backoff = backoff
        self._stats = stats
        self._give_up = give_up
        self._sleep = sleep
        self._clock = clock
        self._abandon = abandon or threading.Event()
        # The run under way, for the exit deadline to abandon from another thread should its
        # write not end; its rows are settled under this lock, each once.
        self._current: BatchRun | None = None
        self._settling = threading.Lock()
        self._deletes = deletes  # whether batches may hold deletes (one came in): look for them

    def keep_journal(self, journal: QueueJournal) -> None:
        """From now on, rows written or handed over are done in ``journal``."""
        self._journal = journal
        if getattr(self._sink, "records_progress", False):
            self._write_marked = self._sink.write
            self._read_progress = getattr(self._sink, "read_progress", None)

    def deliver(self, entries: Sequence[Entry], on_read: ReadProgress = lambda _: None) -> Report:
        """Write ``entries`` (put order); every row ends persisted or handed to ``give_up``,
        whatever goes wrong. ``on_read`` hears how far the sink has read into each attempt.
        Rows put after a delete of their key are written after it, as a batch of their own."""
        if self._deletes():
            parts = split_at_rewrites(entries)
            if len(parts) > 1:
                reports = [self._deliver(part, on_read) for part in parts]
                return Report(
                    sum(report.rows for report in reports),
                    sum(report.attempts for report in reports),
                    sum(report.failed for report in reports),
                    next((r.error for r in reversed(reports) if r.error is not None), None),
                )
        return self._deliver(entries, on_read)

    def _deliver(self, entries: Sequence[Entry], on_read: ReadProgress) -> Report:
        # A sink may say which row of a key a batch keeps (PostgresUpsert.replaces), known
        # once it has read its table; replayed rows of other columns have a target of their
        # own (one per batch), with its rules.
        target: Any = (entries[0].target if entries else None) or self._sink
        replaces: Replaces | None = getattr(target, "replaces", None)
        merger: Merger | None = getattr(target, "merger", None)
        try:
            batch = coalesce(entries, replaces, merger)
        except Exception as error:  # coalesce raises for no key Python can hash; still settle
            logger.exception("queue %s: could not assemble a batch", self._name)
            batch = Coalesced(list(entries), [entry.weight for entry in entries])
            run = BatchRun(self, batch, on_read, target)
            run.reject(list(range(len(entries))), error, "unexpected error")
            return _report(run)
        run = self._current = BatchRun(self, batch, on_read, target)
        try:
            run.write_all()
        except Abandoned:
            run.abandon(run.unsettled())
        except OutOfBudget as out:
            run.reject(run.unsettled(), out.error, out_of_budget(out.retries, self._budget))
        except BaseException as error:  # a bug (even a SystemExit) must not lose the rows
            logger.exception("queue %s: unexpected error while writing a batch", self._name)
            run.reject(run.unsettled(), error, "unexpected error")
        finally:
            self._current = None
        return _report(run)

    def abandon_under_way(self) -> None:
        """From another thread, at the exit deadline: abandon the rows of the batch under way,
        whose write did not end when cancelled."""
        run = self._current
        if run is not None:
            run.abandon(run.unsettled())

    def give_up_all(self, entries: Sequence[Entry], error: BaseException, why: str) -> None:
        """Hand ``entries`` (put order, not written) to ``give_up`` with ``error``, counted and
        logged with their keys."""
        if entries:
            batch = Coalesced(list(entries), [e.weight for e in entries])
            run = BatchRun(self, batch, lambda _: None, self._sink)
            run.reject(list(range(len(entries))), error, why)

    def abandon_all(self, entries: Sequence[Entry]) -> None:
        """Hand ``entries`` (not written) to ``give_up`` as abandoned at the exit deadline,
        counted and logged with their keys."""
        if entries:
            batch = Coalesced(list(entries), [e.weight for e in entries])
            run = BatchRun(self, batch, lambda _: None, self._sink)
            run.abandon(list(range(len(entries))))


def _report(run: BatchRun) -> Report:
    """How ``run`` ended."""
    return Report(len(run.batch.entries), run.retries + 1, run.failed, run.last_error)
