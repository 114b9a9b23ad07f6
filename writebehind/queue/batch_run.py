"""The delivery of one coalesced batch: failed writes retried in place, the rows the database
refuses isolated by halving, and every row settled once: written, or handed over."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ..errors import CommitInDoubt, ProgressConflict, RowsAbandoned
from ..journal.keeper import QueueJournal
from ..journal.progress import Done, covers
from .batch import Coalesced, Entry
from .log_text import describe, logged_keys
from .metrics import QueueStats
from .paced import PacedRows, ReadProgress
from .retry import Backoff, ErrorKind, RetryBudget, classify, same_failure

__all__ = ["Abandoned", "BatchRun", "Deliverer", "OutOfBudget"]

logger = logging.getLogger("writebehind")


class Abandoned(Exception):
    """The exit deadline passed: no more writes."""


class OutOfBudget(Exception):
    """The retry budget ran out while ``error`` kept the rows from being written."""

    def __init__(self, error: BaseException, retries: int) -> None:
        super().__init__(error)
        self.error = error
        self.retries = retries


class Deliverer(Protocol):
    """What a BatchRun uses of the Delivery it writes for (see Delivery)."""

    _name: str
    _budget: RetryBudget
    _backoff: Backoff
    _stats: QueueStats
    _give_up: Callable[[list[Entry], BaseException], None]
    _sleep: Callable[[float], object]
    _clock: Callable[[], float]
    _abandon: threading.Event
    _journal: QueueJournal | None
    _write_marked: Callable[..., None] | None
    _read_progress: Callable[[str], dict[str, tuple[int, frozenset[int]]]] | None
    _settling: threading.Lock
    _deletes: Callable[[], bool]
    _key_columns: tuple[str, ...]


class BatchRun:
    """The delivery of one coalesced batch; rows are named by their index in it."""

    def __init__(
        self, delivery: Deliverer, batch: Coalesced, on_read: ReadProgress, target: Any
    ) -> None:
        self.d = delivery
        self.batch = batch
        self.on_read = on_read
        self.write: Callable[..., None] = target.write  # the sink's, or a replayed layout's
        self.settled = [False] * len(batch.entries)
        self.retries = 0
        self.failed = 0
        self.last_error: BaseException | None = None
        self.not_rows_error: BaseException | None = None
        self.in_doubt: set[int] = set()
        """Rows an attempt of which lost its connection after COMMIT was sent."""

    def write_all(self) -> None:
        """Write every row of the batch, or settle it otherwise (Abandoned, OutOfBudget)."""
        pending = list(range(len(self.batch.entries)))
        while pending:
            error = self.attempt(pending)
            if error is None:
                return
            pending = self.isolate(pending, error)
            if pending:
                self.wait(len(pending), self.not_rows_error or error)

    def attempt(self, rows: list[int]) -> BaseException | None:
        """Write ``rows`` in one transaction, retrying transient errors in place. Returns None
        once written, or the first error that is not transient."""
        entries = self.batch.entries
        journal = self.d._journal
        done = [] if journal is None else [m for i in rows for m in entries[i].marks]
        while True:
            if self.d._abandon.is_set():
                raise Abandoned
            paced = PacedRows([entries[i].params for i in rows], self.on_read)
            try:
                if self.d._write_marked is not None:
                    assert journal is not None
                    marks = journal.tracker.marks(done)
                    try:
                        self.write(paced, progress=marks)
                    except ProgressConflict:
                        if not self.written_elsewhere(done):
                            continue  # written again, against the progress as it is now
                    else:
                        journal.tracker.wrote(marks)
                else:
                    self.write(paced)
            except Exception as error:
                self.d._budget.failed(self.d._clock())
                if isinstance(error, CommitInDoubt):
                    self.in_doubt.update(rows)
                if classify(error) is ErrorKind.TRANSIENT:
                    self.wait(len(rows), error)
                    continue
                return error
            self.d._budget.succeeded()
            with self.d._settling:
                if any(self.settled[i] for i in rows):  # abandoned while the write ran
                    logger.warning(
                        "queue %s: a write of %d rows already handed over as abandoned "
                        "ended after all, committed",
                        self.d._name,
                        len(rows),
                    )
                    raise Abandoned
                for i in rows:
                    self.settled[i] = True
            deleted = sum(entries[i].deletes for i in rows) if self.d._deletes() else 0
            self.d._stats.written(sum(self.batch.weights[i] for i in rows), deleted)
            if journal is not None:
                journal.settle(done)
            return None

    def written_elsewhere(self, done: Sequence[Done]) -> bool:
        """After a ProgressConflict: read the progress of ``done``'s sources again (what the
        next write expects), and say whether it covers every one of ``done``: then they were
        written by an earlier attempt whose reply was lost, or by a process that died. Raises
        what reading raises (the database out of reach: retried as a failed write)."""
        assert self.d._journal is not None
        tracker = self.d._journal.tracker
        read = self.d._read_progress
        assert read is not None
        covered = missing = 0
        for source in {mark.source for mark in done}:
            progress = read(source).get(source)
            tracker.found(source, progress)
            for mark in done:
                if mark.source == source:
                    if covers(progress, mark.seq):
                        covered += 1
                    else:
                        missing += 1
        if not missing:
            logger.warning(
                "queue %s: %d rows were written already (a write whose reply was lost, or a "
                "process that died): not written again",
                self.d._name,
                covered,
            )
            return True
        if covered:
            logger.error(
                "queue %s: the journal's progress covers %d of the %d rows of a write: it is "
                "written again whole",
                self.d._name,
                covered,
                covered + missing,
            )
        return False

    def isolate(self, rows: list[int], error: BaseException) -> list[int]:
        """``rows`` failed together with ``error``: write those that can be, give up those
        refused. Returns the rows whose failure is not about rows, to retry whole
        (``not_rows_error`` says why)."""
        kind = classify(error)
        if kind is ErrorKind.NOT_ROWS:
            self.not_rows_error = error
            return rows
        if len(rows) == 1:
            self.reject(rows, error, "rejected")
            return []
        middle = len(rows) // 2
        left, right = rows[:middle], rows[middle:]
        left_error = self.attempt(left)
        right_error = self.attempt(right)
        if (
            kind in (ErrorKind.SUSPECT_DATA, ErrorKind.CLIENT)
            and len(rows) >= 4
            and left_error is not None
            and right_error is not None
            and same_failure(left_error, error)
            and same_failure(right_error, error)
        ):
            return self.probe(rows, error, left_error, right_error)
        return self.isolate_if(left, left_error) + self.isolate_if(right, right_error)

    def probe(
        self,
        rows: list[int],
        error: BaseException,
        left_error: BaseException,
        right_error: BaseException,
    ) -> list[int]:
        """Both halves of ``rows`` failed as the whole did. It is a row's fault only if some
        row can be written: the first and the last row are tried alone. If neither can, a
        server's error is not about rows (the part is retried whole), and one raised by the
        client is every row's (they are given up together)."""
        middle = len(rows) // 2
        first, left_rest = rows[:1], rows[1:middle]
        right_rest, last = rows[middle:-1], rows[-1:]
        first_error = self.attempt(first)
        if first_error is None:  # the left half failed for another of its rows
            return self.isolate(left_rest, left_error) + self.isolate(rows[middle:], right_error)
        last_error = self.attempt(last)
        if last_error is None:  # the right half failed for another of its rows
            return (
                self.isolate(first, first_error)
                + self.isolate_if(left_rest, self.attempt(left_rest))
                + self.isolate(right_rest, right_error)
            )
        if same_failure(first_error, error) and same_failure(last_error, error):
            if classify(error) is ErrorKind.CLIENT:  # it would be raised again: no retry
                self.reject(rows, error, "refused")
                return []
            self.not_rows_error = error  # every part fails alike: not about rows
            return rows
        return (
            self.isolate(first, first_error)
            + self.isolate_if(left_rest, self.attempt(left_rest))
            + self.isolate_if(right_rest, self.attempt(right_rest))
            + self.isolate(last, last_error)
        )

    def isolate_if(self, rows: list[int], error: BaseException | None) -> list[int]:
        """isolate() ``rows`` if their attempt failed with ``error``."""
        return [] if error is None else self.isolate(rows, error)

    def wait(self, rows: int, error: BaseException) -> None:
        """Back off before retrying ``rows`` rows; OutOfBudget when the budget is spent."""
        d = self.d
        if d._abandon.is_set():
            raise Abandoned
        remaining = d._budget.remaining(self.retries, d._clock())
        if remaining is not None and remaining <= 0:
            raise OutOfBudget(error, self.retries)
        self.retries += 1
        delay = d._backoff.delay(self.retries)
        if remaining is not None:
            delay = min(delay, remaining)
        # A long outage retries every few seconds: the first retries and every tenth are told.
        level = logging.WARNING if classify(error) is ErrorKind.TRANSIENT else logging.ERROR
        if self.retries > 3 and self.retries % 10:
            level = logging.DEBUG
        logger.log(
            level,
            "queue %s: write of %d rows failed (%s); retry %d in %.2fs",
            d._name,
            rows,
            describe(error),
            self.retries,
            delay,
        )
        d._stats.retried()
        d._sleep(delay)
        if d._abandon.is_set():
            raise Abandoned

    def unsettled(self) -> list[int]:
        """The rows neither written nor handed over yet."""
        return [i for i, done in enumerate(self.settled) if not done]

    def _claim(self, rows: list[int]) -> list[int]:
        # The rows of ``rows`` not settled yet, settled now by the caller.
        with self.d._settling:
            rows = [i for i in rows if not self.settled[i]]
            for i in rows:
                self.settled[i] = True
        return rows

    def reject(self, rows: list[int], error: BaseException, why: str) -> None:
        """Give up those of ``rows`` not settled yet, with ``error`` (``why`` for the log);
        those in doubt as in doubt, unless the journal's progress shows them written."""
        rows = self._claim(rows)
        if not rows:
            return
        doubtful = [i for i in rows if i in self.in_doubt]
        if not doubtful:
            self._hand_over(rows, error, why)
            return
        # An attempt of these may have committed: whatever ended them, they may be written.
        sure = [i for i in rows if i not in self.in_doubt]
        if sure:
            self._hand_over(sure, error, why)
        if not self._written_after_all(doubtful):
            self._hand_over(doubtful, in_doubt(error), f"{why}, in doubt (perhaps written)", True)

    def _written_after_all(self, rows: list[int]) -> bool:
        """With a journal's progress, whether ``rows`` (in doubt) were written after all: then
        they are counted so, and done. False where that cannot be known."""
        journal = self.d._journal
        if journal is None or self.d._write_marked is None or self.d._read_progress is None:
            return False
        done = [mark for i in rows for mark in self.batch.entries[i].marks]
        try:
            written = bool(done) and self.written_elsewhere(done)
        except Exception:  # the database out of reach: in doubt it stays
            return False
        if written:
            self.d._stats.written(sum(self.batch.weights[i] for i in rows))
            journal.settle(done)
        return written

    def _hand_over(
        self, rows: list[int], error: BaseException, why: str, in_doubt: bool = False
    ) -> None:
        entries = [self.batch.entries[i] for i in rows]
        self.failed += len(rows)
        self.last_error = error
        logger.error(
            "queue %s: %d rows %s, keys %s: %s",
            self.d._name,
            len(rows),
            why,
            logged_keys(entries, self.d._key_columns),
            describe(error),
        )
        weight = sum(self.batch.weights[i] for i in rows)
        self.d._stats.gave_up(weight, in_doubt=weight if in_doubt else 0)
        if self.d._journal is not None:  # handed over: done with, as far as the journal goes
            self.d._journal.settle([mark for entry in entries for mark in entry.marks])
        self.d._give_up(entries, error)

    def abandon(self, rows: list[int]) -> None:
        """Settle those of ``rows`` not settled yet as abandoned at the exit deadline."""
        rows = self._claim(rows)
        if not rows:
            return
        entries = [self.batch.entries[i] for i in rows]
        weight = sum(self.batch.weights[i] for i in rows)
        error = RowsAbandoned(
            f"{weight} rows not written: abandoned when the exit deadline (shutdown_timeout) "
            "ran out, or by abandon()"
        )
        self.failed += len(rows)
        self.last_error = error
        self.d._stats.abandoned_at_exit(weight)
        if self.d._journal is not None:
            # Not done: they stay in the journal, and the next process of the queue writes them.
            logger.warning(
                "queue %s: %d rows not written by the exit deadline (or abandon()) are left in "
                "the journal for the next start, keys %s",
                self.d._name,
                weight,
                logged_keys(entries, self.d._key_columns),
            )
            return
        logger.error(
            "queue %s: %d rows abandoned (exit deadline or abandon()), not written, keys %s",
            self.d._name,
            weight,
            logged_keys(entries, self.d._key_columns),
        )
        self.d._give_up(entries, error)


def in_doubt(error: BaseException) -> CommitInDoubt:
    """The error of rows given up with ``error`` after an attempt of them was in doubt."""
    if isinstance(error, CommitInDoubt):
        return error
    doubt = CommitInDoubt(
        "an attempt to write these rows lost its connection after COMMIT was sent, so they "
        f"may have been written; then: {describe(error)}"
    )
    doubt.__cause__ = error
    return doubt
