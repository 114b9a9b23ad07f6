"""Writing one batch: transient errors retried in place, rejected rows isolated."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple, overload

from ._batch import Coalesced, Entry, coalesce
from ._metrics import QueueStats
from ._retry import Backoff, ErrorKind, classify
from ._sink import Params, Sink

logger = logging.getLogger("writebehind")

FailureHandler = Callable[[list[Entry], BaseException], None]
"""Receives rows given up (the winning row of each key) and the error that ended them."""

_KEYS_LOGGED = 10  # keys named in one log line when many rows fail together
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
    """1 + the retries spent on transient errors."""
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
    """Writes batches through a sink, each with its own budget of ``max_retries`` retries.

    A batch is first written whole, one transaction. A transient (or unknown) error retries the
    same rows in place after a backoff, so later rows wait behind them and no older value can
    overtake a newer one. An error caused by data splits the rows in halves, written in order,
    until each rejected row stands alone: k bad rows among n cost about 2k·log2(n) writes.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        name: str,
        max_retries: int,
        backoff: Backoff,
        stats: QueueStats,
        give_up: FailureHandler,
        sleep: Callable[[float], None],
    ) -> None:
        self._sink = sink
        self._name = name
        self._max_retries = max_retries
        self._backoff = backoff
        self._stats = stats
        self._give_up = give_up
        self._sleep = sleep

    def deliver(self, entries: Sequence[Entry], on_read: ReadProgress = lambda _: None) -> Report:
        """Write ``entries`` (put order); every row ends persisted or handed to ``give_up``.

        ``on_read`` hears how far the sink has read into each attempt.
        """
        batch = coalesce(entries)
        parts = deque([(0, len(batch.entries))])
        retries = failed = 0
        last_error: BaseException | None = None
        while parts:
            start, stop = parts[0]
            try:
                rows = [entry.params for entry in batch.entries[start:stop]]
                self._sink.write(PacedRows(rows, on_read))
            except Exception as error:
                kind = classify(error)
                if kind is ErrorKind.REJECTED_DATA:
                    parts.popleft()
                    if stop - start == 1:
                        self._reject(batch, [(start, stop)], error, "rejected")
                        failed, last_error = failed + 1, error
                    else:
                        middle = (start + stop) // 2
                        parts.extendleft([(middle, stop), (start, middle)])
                    continue
                if retries >= self._max_retries:
                    self._reject(batch, list(parts), error, f"out of retries ({retries})")
                    failed += sum(stop - start for start, stop in parts)
                    return Report(len(batch.entries), retries + 1, failed, error)
                retries += 1
                delay = self._backoff.delay(retries)
                log = logger.warning if kind is ErrorKind.TRANSIENT else logger.error
                log(
                    "queue %s: write of %d rows failed (%s); retry %d/%d in %.2fs",
                    self._name,
                    stop - start,
                    describe(error),
                    retries,
                    self._max_retries,
                    delay,
                )
                self._stats.retried()
                self._sleep(delay)
                continue
            parts.popleft()
            self._stats.written(sum(batch.weights[start:stop]))
        return Report(len(batch.entries), retries + 1, failed, last_error)

    def _reject(
        self, batch: Coalesced, ranges: list[tuple[int, int]], error: BaseException, why: str
    ) -> None:
        rows = [entry for start, stop in ranges for entry in batch.entries[start:stop]]
        weight = sum(sum(batch.weights[start:stop]) for start, stop in ranges)
        logger.error(
            "queue %s: %d rows %s, keys %s: %s",
            self._name,
            len(rows),
            why,
            _keys(rows),
            describe(error),
        )
        self._stats.gave_up(weight)
        self._give_up(rows, error)


def describe(error: BaseException) -> str:
    """One line naming the error, its SQLSTATE and its first line of text."""
    sqlstate = getattr(error, "sqlstate", None)
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    kind = type(error).__name__
    return f"{kind} [{sqlstate}] {text}" if sqlstate else f"{kind}: {text}"


def _keys(entries: Sequence[Entry]) -> str:
    shown = ", ".join(repr(entry.key) for entry in entries[:_KEYS_LOGGED])
    more = len(entries) - _KEYS_LOGGED
    return shown + (f" and {more} more" if more > 0 else "")
