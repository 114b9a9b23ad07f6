"""Writing one batch: failed writes retried in place, rows the database refuses isolated."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, overload

from .._sink import Merger, Params, Replaces, Sink
from ..errors import CommitInDoubt, ProgressConflict, RowsAbandoned
from ..journal.keeper import QueueJournal
from ..journal.progress import Done, covers
from .batch import Coalesced, Entry, coalesce, split_at_rewrites
from .metrics import QueueStats
from .retry import Backoff, ErrorKind, RetryBudget, classify, same_failure

logger = logging.getLogger("writebehind")

FailureHandler = Callable[[list[Entry], BaseException], None]
"""Receives rows given up (the winning row of each key) and the error that ended them."""

_KEYS_LOGGED = 10  # keys named in one log line when many rows fail together
_KEY_CHARS = 120  # a key's repr is cut to this in log lines (a refused key may be 16 kB)
# Rows the sink reads between two progress reports: small enough that a producer let in by one
# report fits its turn into the worker's next wait on the server.
_PROGRESS_STEP = 32

ReadProgress = Callable[[int], None]
"""Told how many rows of the current write the sink has read so far."""


class PacedRows(Sequence[Params]):
    """The rows of one write; iterating them reports progress every few rows."""

    __slots__ = ("_on_read", "_rows")

    def __init__(self, rows: list[Params], on_read: ReadProgress) -> None:
        self._rows = rows
        self._on_read = on_read

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, index: int) -> Params: ...

    @overload
    def __getitem__(self, index: slice) -> list[Params]: ...

    def __getitem__(self, index: int | slice) -> Params | list[Params]:
        return self._rows[index]

    def __iter__(self) -> Iterator[Params]:
        rows, on_read = self._rows, self._on_read
        for start in range(0, len(rows), _PROGRESS_STEP):
            yield from rows[start : start + _PROGRESS_STEP]
            on_read(min(start + _PROGRESS_STEP, len(rows)))


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


class _Abandoned(Exception):
    """The exit deadline passed: no more writes."""


class _OutOfBudget(Exception):
    """The retry budget ran out while ``error`` kept the rows from being written."""

    def __init__(self, error: BaseException, retries: int) -> None:
        super().__init__(error)
        self.error = error
        self.retries = retries


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
        self._budget = budget
        self._backoff = backoff
        self._stats = stats
        self._give_up = give_up
        self._sleep = sleep
        self._clock = clock
        self._abandon = abandon or threading.Event()
        # The run under way, for the exit deadline to abandon from another thread should its
        # write not end; its rows are settled under this lock, each once.
        self._current: _Run | None = None
        self._settling = threading.Lock()
        self._deletes = deletes  # whether batches may hold deletes (one came in): look for them

    def _written_elsewhere(self, done: Sequence[Done]) -> bool:
        """After a ProgressConflict: read the progress of ``done``'s sources again (what the
        next write expects), and say whether it covers every one of ``done``: then they were
        written by an earlier attempt whose reply was lost, or by a process that died. Raises
        what reading raises (the database out of reach: retried as a failed write)."""
        assert self._journal is not None
        tracker = self._journal.tracker
        read = self._read_progress
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
                self._name,
                covered,
            )
            return True
        if covered:
            logger.error(
                "queue %s: the journal's progress covers %d of the %d rows of a write: it is "
                "written again whole",
                self._name,
                covered,
                covered + missing,
            )
        return False

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
            run = _Run(self, batch, on_read, target)
            run.reject(list(range(len(entries))), error, "unexpected error")
            return run.report()
        run = self._current = _Run(self, batch, on_read, target)
        try:
            run.write_all()
        except _Abandoned:
            run.abandon(run.unsettled())
        except _OutOfBudget as out:
            run.reject(run.unsettled(), out.error, _out_of_budget(out.retries, self._budget))
        except BaseException as error:  # a bug (even a SystemExit) must not lose the rows
            logger.exception("queue %s: unexpected error while writing a batch", self._name)
            run.reject(run.unsettled(), error, "unexpected error")
        finally:
            self._current = None
        return run.report()

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
            run = _Run(self, batch, lambda _: None, self._sink)
            run.reject(list(range(len(entries))), error, why)

    def abandon_all(self, entries: Sequence[Entry]) -> None:
        """Hand ``entries`` (not written) to ``give_up`` as abandoned at the exit deadline,
        counted and logged with their keys."""
        if entries:
            batch = Coalesced(list(entries), [e.weight for e in entries])
            run = _Run(self, batch, lambda _: None, self._sink)
            run.abandon(list(range(len(entries))))


class _Run:
    """The delivery of one coalesced batch; rows are named by their index in it."""

    def __init__(
        self, delivery: Delivery, batch: Coalesced, on_read: ReadProgress, target: Any
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
                raise _Abandoned
            paced = PacedRows([entries[i].params for i in rows], self.on_read)
            try:
                if self.d._write_marked is not None:
                    assert journal is not None
                    marks = journal.tracker.marks(done)
                    try:
                        self.write(paced, progress=marks)
                    except ProgressConflict:
                        if not self.d._written_elsewhere(done):
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
                    raise _Abandoned
                for i in rows:
                    self.settled[i] = True
            deleted = sum(entries[i].deletes for i in rows) if self.d._deletes() else 0
            self.d._stats.written(sum(self.batch.weights[i] for i in rows), deleted)
            if journal is not None:
                journal.settle(done)
            return None

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
        return [] if error is None else self.isolate(rows, error)

    def wait(self, rows: int, error: BaseException) -> None:
        """Back off before retrying ``rows`` rows; _OutOfBudget when the budget is spent."""
        d = self.d
        if d._abandon.is_set():
            raise _Abandoned
        remaining = d._budget.remaining(self.retries, d._clock())
        if remaining is not None and remaining <= 0:
            raise _OutOfBudget(error, self.retries)
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
            raise _Abandoned

    def unsettled(self) -> list[int]:
        return [i for i, done in enumerate(self.settled) if not done]

    def _claim(self, rows: list[int]) -> list[int]:
        # The rows of ``rows`` not settled yet, settled now by the caller.
        with self.d._settling:
            rows = [i for i in rows if not self.settled[i]]
            for i in rows:
                self.settled[i] = True
        return rows

    def reject(self, rows: list[int], error: BaseException, why: str) -> None:
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
            self._hand_over(doubtful, _in_doubt(error), f"{why}, in doubt (perhaps written)", True)

    def _written_after_all(self, rows: list[int]) -> bool:
        """With a journal's progress, whether ``rows`` (in doubt) were written after all: then
        they are counted so, and done. False where that cannot be known."""
        journal = self.d._journal
        if journal is None or self.d._write_marked is None or self.d._read_progress is None:
            return False
        done = [mark for i in rows for mark in self.batch.entries[i].marks]
        try:
            written = bool(done) and self.d._written_elsewhere(done)
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
            _keys(entries),
            describe(error),
        )
        weight = sum(self.batch.weights[i] for i in rows)
        self.d._stats.gave_up(weight, in_doubt=weight if in_doubt else 0)
        if self.d._journal is not None:  # handed over: done with, as far as the journal goes
            self.d._journal.settle([mark for entry in entries for mark in entry.marks])
        self.d._give_up(entries, error)

    def abandon(self, rows: list[int]) -> None:
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
                _keys(entries),
            )
            return
        logger.error(
            "queue %s: %d rows abandoned (exit deadline or abandon()), not written, keys %s",
            self.d._name,
            weight,
            _keys(entries),
        )
        self.d._give_up(entries, error)

    def report(self) -> Report:
        return Report(len(self.batch.entries), self.retries + 1, self.failed, self.last_error)


def _in_doubt(error: BaseException) -> CommitInDoubt:
    """The error of rows given up with ``error`` after an attempt of them was in doubt."""
    if isinstance(error, CommitInDoubt):
        return error
    doubt = CommitInDoubt(
        "an attempt to write these rows lost its connection after COMMIT was sent, so they "
        f"may have been written; then: {describe(error)}"
    )
    doubt.__cause__ = error
    return doubt


def _out_of_budget(retries: int, budget: RetryBudget) -> str:
    limits = []
    if budget.max_retries is not None:
        limits.append(f"max_retries={budget.max_retries}")
    if budget.max_retry_time is not None:
        limits.append(f"max_retry_time={budget.max_retry_time:g}s")
    return f"given up after {retries} retries ({', '.join(limits)})"


def describe(error: BaseException) -> str:
    """One line naming the error, its SQLSTATE and its first line of text."""
    sqlstate = getattr(error, "sqlstate", None)
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if len(text) > 300:
        text = text[:300] + "…"
    kind = type(error).__name__
    return f"{kind} [{sqlstate}] {text}" if sqlstate else f"{kind}: {text}"


def _keys(entries: Sequence[Entry]) -> str:
    # A row accepted before the catalog was read has no key yet: the row itself is shown.
    shown = ", ".join(
        shortened(repr(entry.key if entry.params else entry.row))
        for entry in entries[:_KEYS_LOGGED]
    )
    more = len(entries) - _KEYS_LOGGED
    return shown + (f" and {more} more" if more > 0 else "")


def shortened(text: str) -> str:
    """``text`` cut for a log line (a refused key may be 16 kB)."""
    return text if len(text) <= _KEY_CHARS else f"{text[:_KEY_CHARS]}… ({len(text)} chars)"
