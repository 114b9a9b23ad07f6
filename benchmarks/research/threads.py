"""writebehind beside CPU-bound Python threads: how fast the worker drains a full queue while
the application's threads compete for the GIL, against the same drain with none.

Every run puts all rows into a queue large enough to hold them while the table is locked
(``LOCK TABLE ... IN SHARE MODE``: the worker's first write waits, nothing is written), then
starts the busy threads, and times from the lock's release to the end of flush(). So every run
times the worker alone writing every row, and the producer's puts are outside the clock.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry
from psycopg import sql

from writebehind import WriteBehindQueue
from writebehind.tools.bench.stats import Rates
from writebehind.tools.bench.throughput import Log, turns
from writebehind.tools.bench.workload import CheckFailed, Workload
from writebehind.tools.bench.writer import FLUSH_TIMEOUT, GivenUp, make_sink

__all__ = [
    "Drain",
    "Spinner",
    "ThreadsResult",
    "drain_run",
    "drain_timed",
    "measure_beside_threads",
]


class Spinner:
    """CPU-bound Python threads: ``while not stop: x += 1``, until stop()."""

    def __init__(self, count: int) -> None:
        self._stop = False
        self._threads = [
            threading.Thread(target=self._spin, name=f"bench-cpu-{n}", daemon=True)
            for n in range(count)
        ]

    def _spin(self) -> None:
        x = 0
        while not self._stop:
            x += 1

    def __enter__(self) -> Spinner:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop = True
        for thread in self._threads:
            thread.join()


@dataclass(frozen=True)
class ThreadsResult:
    """Drain rates of one method by the number of busy threads beside it (0: idle)."""

    method: str | None
    batch_size: int
    rates: dict[int, Rates]


def drain_run(workload: Workload, method: str | None, batch_size: int, busy_threads: int) -> float:
    """Seconds for the worker to write every row of a full queue beside ``busy_threads``
    CPU-bound threads."""
    return drain_timed(workload, method, batch_size, busy_threads).seconds


@dataclass(frozen=True)
class Drain:
    """One drain: its seconds, and those of the puts that filled the queue before it."""

    seconds: float
    put_seconds: float


def drain_timed(
    workload: Workload,
    method: str | None,
    batch_size: int,
    busy_threads: int = 0,
    *,
    writers: int = 1,
    before_timing: Callable[[], None] | None = None,
    after_timing: Callable[[], None] | None = None,
) -> Drain:
    """drain_run with the queue's ``writers``, hooks called just before the clock starts and
    just after it stops, and the seconds of the puts (the writers waiting on the lock all
    along: put()'s own cost)."""
    dsn, table, rows = workload.dsn, workload.table, workload.rows
    options: dict[str, Any] = {} if writers == 1 else {"writers": writers}
    given_up = GivenUp()
    with (
        psycopg.connect(dsn) as locker,
        WriteBehindQueue(
            make_sink(dsn, table, method),
            batch_size=batch_size,
            maxsize=len(rows) + batch_size,
            registry=CollectorRegistry(),
            on_failure=given_up,
            **options,
        ) as wb,
    ):
        wb.start()
        locker.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(sql.Identifier(table)))
        put_started = time.perf_counter()
        for row in rows:
            wb.put(row)
        put_seconds = time.perf_counter() - put_started
        with Spinner(busy_threads):
            if before_timing is not None:
                before_timing()
            started = time.perf_counter()
            locker.commit()
            flushed = wb.flush(timeout=FLUSH_TIMEOUT)
            seconds = time.perf_counter() - started
            if after_timing is not None:
                after_timing()
    if not flushed:
        raise CheckFailed(f"flush() did not finish within {FLUSH_TIMEOUT:.0f}s")
    given_up.check()
    return Drain(seconds, put_seconds)


def measure_beside_threads(
    workload: Workload,
    method: str | None,
    *,
    batch_size: int,
    busy_threads: Sequence[int],
    runs: int,
    log: Log,
) -> ThreadsResult:
    """Drain rates beside each count of ``busy_threads`` (0 included first, for the ratio),
    taking turns, on the update path, every run checked."""
    counts = [0, *(n for n in busy_threads if n)]
    result = ThreadsResult(method, batch_size, {n: Rates(f"{n} busy") for n in counts})
    for run in range(runs):
        order = turns(counts, run)
        for count in order:
            workload.prepare("update")
            gc.collect()
            try:
                seconds = drain_run(workload, method, batch_size, count)
                workload.check()
            except CheckFailed as failure:
                raise CheckFailed(
                    f"beside {count} busy thread(s), run {run + 1}: {failure}"
                ) from failure
            result.rates[count].values.append(len(workload.rows) / seconds)
        log(
            f"beside busy threads, run {run + 1}/{runs}: "
            + ", ".join(f"{n} busy {result.rates[n].values[-1]:,.0f}" for n in order)
            + " rows/s"
        )
    return result
