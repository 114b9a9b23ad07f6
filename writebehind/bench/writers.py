"""Several writers: writebehind with ``writers=1`` against ``writers=2``, and the raw COPY loop
on one connection against two (two threads on disjoint keys), in the same run.

Update path, one batch size (5,000) and one method (``copy``, the fastest at that size in the
throughput section). Every side runs ``runs`` times, taking turns (see ``turns``), each run on
a freshly rebuilt table and checked as in the throughput section. writebehind is timed as
there: one producer thread puts every row, from the first put() to the end of flush(), so the
time of put() is inside the timing (it is what an application sees). The raw loops are timed
from the moment every connection is ready to the last commit.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .cpu import CpuUse, cpu_sample, cpu_use, server_pid, wait_reaped
from .raw import raw_copy
from .stats import Rates
from .throughput import Log, side_label, turns
from .workload import CheckFailed, Workload
from .writer import writebehind_run

__all__ = [
    "WRITERS_BATCH",
    "WRITERS_MAXSIZE",
    "WRITERS_METHOD",
    "WritersResult",
    "WritersSide",
    "measure_writers",
    "raw_copy_threads",
    "writers_sides",
]

WRITERS_METHOD = "copy"
"""The fastest method at batch 5,000 on the update path (the throughput section's tables)."""
WRITERS_BATCH = 5000
WRITERS_MAXSIZE = 4 * WRITERS_BATCH
"""The queue's maxsize on both writebehind sides: room for two writers to each hold a batch
while the next two fill (the default 10,000 would keep the producer waiting for either)."""


def raw_copy_threads(
    dsn: str, table: str, rows: Sequence[dict[str, Any]], batch_size: int, threads: int
) -> float:
    """The raw COPY loop on ``threads`` connections at once, each in a thread of its own over
    every ``threads``-th row (disjoint keys). Seconds from the moment every thread has
    connected to the last commit."""
    if threads == 1:
        return raw_copy(dsn, table, rows, batch_size)
    ready = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def loop(part: Sequence[dict[str, Any]]) -> None:
        try:
            raw_copy(dsn, table, part, batch_size, before_timing=lambda: _wait(ready))
        except BaseException as error:  # reported by the caller, not lost in the thread
            errors.append(error)
            ready.abort()

    workers = [
        threading.Thread(target=loop, args=(rows[n::threads],), name=f"bench-raw-{n}")
        for n in range(threads)
    ]
    for worker in workers:
        worker.start()
    try:
        ready.wait()
        started = time.perf_counter()
    finally:
        for worker in workers:
            worker.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - started


def _wait(barrier: threading.Barrier) -> None:
    barrier.wait()


@dataclass(frozen=True)
class WritersSide:
    """One contender: what writes (raw or writebehind), on how many connections."""

    label: str
    kind: str
    """"raw" or "writebehind": ratios are taken between sides of one kind."""
    connections: int
    run: Callable[[], tuple[float, float | None]]
    """Seconds of the run, and of its puts (None for a raw loop)."""


def writers_sides(
    workload: Workload, method: str | None, batch_size: int, counts: Sequence[int] = (1, 2)
) -> list[WritersSide]:
    """The raw COPY loop on each count of connections, then writebehind with each count of
    writers."""
    dsn, table, rows = workload.dsn, workload.table, workload.rows
    label = side_label(method)

    def raw(count: int) -> Callable[[], tuple[float, float | None]]:
        return lambda: (raw_copy_threads(dsn, table, rows, batch_size, count), None)

    def queue(count: int) -> Callable[[], tuple[float, float | None]]:
        def run() -> tuple[float, float | None]:
            result = writebehind_run(
                dsn, table, rows, batch_size, method, maxsize=WRITERS_MAXSIZE, writers=count
            )
            return result.seconds, result.put_seconds

        return run

    return [
        *(
            WritersSide(
                f"raw COPY, {count} connection{'s' if count > 1 else ''}", "raw", count, raw(count)
            )
            for count in counts
        ),
        *(
            WritersSide(f"{label}, writers={count}", "writebehind", count, queue(count))
            for count in counts
        ),
    ]


@dataclass
class WritersResult:
    """The rows/s of every side, by label, and where the CPU time went in each run."""

    method: str | None
    batch_size: int
    sides: list[WritersSide]
    rates: dict[str, Rates]
    cpu: dict[str, list[CpuUse]] = field(default_factory=dict)
    """Per side, the cores used in each run (this process, the server, the machine)."""
    put_share: dict[str, list[float]] = field(default_factory=dict)
    """Per writebehind side, the share of each run's time spent until the last put returned."""

    def ratio(self, kind: str, connections: int = 2) -> float | None:
        """The median of ``kind``'s side on ``connections`` over its side on one."""
        by_count = {side.connections: side.label for side in self.sides if side.kind == kind}
        if connections not in by_count or 1 not in by_count:
            return None
        return self.rates[by_count[connections]].ratio(self.rates[by_count[1]])


def measure_writers(
    workload: Workload,
    sides: Sequence[WritersSide],
    *,
    method: str | None,
    batch_size: int,
    runs: int,
    log: Log,
) -> WritersResult:
    """Run every side (of ``method`` at ``batch_size``) ``runs`` times on the update path,
    taking turns, every run checked; CheckFailed (naming the side and run) at the first run
    that leaves the table wrong."""
    rows = len(workload.rows)
    result = WritersResult(
        method, batch_size, list(sides), {side.label: Rates(side.label) for side in sides}
    )
    postmaster = server_pid(workload.dsn)
    for run in range(runs):
        order = turns(sides, run)
        for side in order:
            workload.prepare("update")
            gc.collect()
            try:
                before = cpu_sample(postmaster)
                seconds, put_seconds = side.run()
                wall = time.perf_counter() - before.wall
                wait_reaped(postmaster)
                used = cpu_use(before, cpu_sample(postmaster), wall)
                workload.check()
            except CheckFailed as failure:
                raise CheckFailed(f"{side.label}, run {run + 1}: {failure}") from failure
            result.rates[side.label].values.append(rows / seconds)
            result.cpu.setdefault(side.label, []).append(used)
            if put_seconds is not None:
                result.put_share.setdefault(side.label, []).append(put_seconds / seconds)
        log(
            f"writers, run {run + 1}/{runs}: "
            + ", ".join(
                f"{side.label} {result.rates[side.label].values[-1]:,.0f}" for side in order
            )
            + " rows/s"
        )
    return result
