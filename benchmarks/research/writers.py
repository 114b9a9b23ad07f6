"""Several writers: writebehind with ``writers=1`` against ``writers=2``, and the raw COPY loop
on one connection against two (two threads on disjoint keys), in the same run.

Update path, one batch size (5,000) and one method (``copy``, the fastest at that size in the
throughput section). Every side runs ``runs`` times, taking turns (see ``turns``), each run on
a freshly rebuilt table and checked as in the throughput section. writebehind is timed as
there: one producer thread puts every row, from the first put() to the end of flush(), so the
time of put() is inside the timing (it is what an application sees). The same queues are also
timed with the puts before the clock: every row put while the table is locked, then the
writers drain the full queue (as in the threads section), which tells what put() on the same
GIL costs the writers. The raw loops are timed from the moment every connection is ready to
the last commit.

Each run also measures the cores used over its timed part (see ``cpu``): by this process (one
GIL for the producer and the writers), by the server, and by the whole machine, which on a
shared machine tells how much of it other work left.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from writebehind.tools.bench.raw import raw_copy
from writebehind.tools.bench.stats import Rates
from writebehind.tools.bench.throughput import Log, side_label, turns
from writebehind.tools.bench.workload import CheckFailed, Workload
from writebehind.tools.bench.writer import writebehind_run

from .cpu import CpuMeter, CpuUse, server_pid
from .threads import drain_timed

__all__ = [
    "DRAIN",
    "RAW",
    "WRITEBEHIND",
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
    dsn: str,
    table: str,
    rows: Sequence[dict[str, Any]],
    batch_size: int,
    threads: int,
    meter: CpuMeter | None = None,
) -> float:
    """The raw COPY loop on ``threads`` connections at once, each in a thread of its own over
    every ``threads``-th row (disjoint keys). Seconds from the moment every thread has
    connected to the last commit (``meter`` started and stopped with that clock)."""
    started: list[float] = []

    def start_clock() -> None:
        # Run by the last thread to connect, before any is let go: the clock starts then, not
        # whenever this thread next gets the GIL.
        if meter is not None:
            meter.start()
        started.append(time.perf_counter())

    ready = threading.Barrier(threads, action=start_clock)
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
    for worker in workers:
        worker.join()
    ended = time.perf_counter()
    if errors:
        raise errors[0]
    if meter is not None:
        meter.stop()
    return ended - started[0]


def _wait(barrier: threading.Barrier) -> None:
    barrier.wait()


RAW = "raw"
WRITEBEHIND = "writebehind"
DRAIN = "drain"
"""The kinds of side: ratios are taken between sides of one kind."""


@dataclass(frozen=True)
class WritersSide:
    """One contender: what writes, on how many connections (or writers)."""

    label: str
    kind: str
    connections: int
    run: Callable[[CpuMeter], tuple[float, float | None]]
    """Seconds of the run, and of its puts (None for a raw loop); starts and stops the meter
    with its clock."""


def writers_sides(
    workload: Workload, method: str | None, batch_size: int, counts: Sequence[int] = (1, 2)
) -> list[WritersSide]:
    """The raw COPY loop on each count of connections; writebehind with each count of writers,
    timed from the first put() as in the throughput section; and the same with the puts
    before the clock (the writers draining a full queue, as in the threads section)."""
    dsn, table, rows = workload.dsn, workload.table, workload.rows
    label = side_label(method)
    Run = Callable[[CpuMeter], tuple[float, float | None]]

    def raw(count: int) -> Run:
        return lambda meter: (raw_copy_threads(dsn, table, rows, batch_size, count, meter), None)

    def queue(count: int) -> Run:
        def run(meter: CpuMeter) -> tuple[float, float | None]:
            result = writebehind_run(
                dsn,
                table,
                rows,
                batch_size,
                method,
                maxsize=WRITERS_MAXSIZE,
                writers=count,
                before_timing=meter.start,
            )
            meter.stop()  # after close(): the sink's connections go back to the pool
            return result.seconds, result.put_seconds

        return run

    def drain(count: int) -> Run:
        def run(meter: CpuMeter) -> tuple[float, float | None]:
            done = drain_timed(
                workload,
                method,
                batch_size,
                writers=count,
                before_timing=meter.start,
                after_timing=meter.stop,
            )
            return done.seconds, done.put_seconds

        return run

    def plural(count: int, word: str) -> str:
        return f"{count} {word}{'s' if count > 1 else ''}"

    return [
        *(WritersSide(f"raw COPY, {plural(n, 'connection')}", RAW, n, raw(n)) for n in counts),
        *(WritersSide(f"{label}, writers={n}", WRITEBEHIND, n, queue(n)) for n in counts),
        *(
            WritersSide(f"{label}, writers={n}, puts before the clock", DRAIN, n, drain(n))
            for n in counts
        ),
    ]


@dataclass
class WritersResult:
    """The rows/s of every side, by label, where the CPU time went in each run, and how long
    put() took."""

    method: str | None
    batch_size: int
    rows: int
    sides: list[WritersSide]
    rates: dict[str, Rates]
    cpu: dict[str, list[CpuUse]] = field(default_factory=dict)
    """Per side, the cores used over each run's timed part (this process, the server, the
    machine)."""
    put_us: dict[str, list[float]] = field(default_factory=dict)
    """Per writebehind side, each run's put() loop in µs per row (wall time)."""

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
        method, batch_size, rows, list(sides), {side.label: Rates(side.label) for side in sides}
    )
    postmaster = server_pid(workload.dsn)
    for run in range(runs):
        order = turns(sides, run)
        for side in order:
            workload.prepare("update")
            gc.collect()
            meter = CpuMeter(postmaster)
            try:
                seconds, put_seconds = side.run(meter)
                workload.check()
            except CheckFailed as failure:
                raise CheckFailed(f"{side.label}, run {run + 1}: {failure}") from failure
            result.rates[side.label].values.append(rows / seconds)
            if meter.used is not None:
                result.cpu.setdefault(side.label, []).append(meter.used)
            if put_seconds is not None:
                result.put_us.setdefault(side.label, []).append(put_seconds / rows * 1e6)
        log(
            f"writers, run {run + 1}/{runs}: "
            + ", ".join(
                f"{side.label} {result.rates[side.label].values[-1]:,.0f}" for side in order
            )
            + " rows/s"
        )
    return result
