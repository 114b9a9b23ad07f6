"""Socket waits per batch: how often each way of writing gives the GIL away.

psycopg runs every operation as a generator that yields whenever it must wait for the socket;
the connection's ``wait()`` then polls it with the GIL released. After each such wait a thread
must win the GIL back from the application's threads (up to the 5 ms switch interval), so the
waits per batch bound how much a writer slows down beside busy threads. A Connection subclass
counts the yields; writebehind gets it through a borrowed pool of one connection.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from psycopg.abc import PQGen
from psycopg_pool import ConnectionPool

from writebehind.tools.bench.raw import raw_copy, raw_executemany
from writebehind.tools.bench.throughput import RAW_COPY, RAW_EXECUTEMANY, Log, side_label
from writebehind.tools.bench.workload import CheckFailed, Workload
from writebehind.tools.bench.writer import writebehind_run

__all__ = ["WaitCount", "counting_connection_class", "measure_waits"]

RV = TypeVar("RV")


class WaitCount:
    """Socket waits counted by the connections of one ``counting_connection_class``."""

    def __init__(self) -> None:
        self.waits = 0


def counting_connection_class(count: WaitCount) -> type[psycopg.Connection[Any]]:
    """A psycopg Connection class whose every socket wait adds one to ``count.waits``."""

    class CountingConnection(psycopg.Connection[Any]):
        def wait(self, gen: PQGen[RV], *args: Any, **kwargs: Any) -> RV:
            return super().wait(_counted(gen, count), *args, **kwargs)

    return CountingConnection


def _counted(gen: PQGen[RV], count: WaitCount) -> PQGen[RV]:
    """``gen``, counting each of its yields (each one a poll of the socket)."""
    try:
        state = next(gen)
        while True:
            count.waits += 1
            ready = yield state
            state = gen.send(ready)
    except StopIteration as stop:
        result: RV = stop.value
        return result


@dataclass
class WaitsRow:
    """Socket waits per batch of one side, by batch size."""

    label: str
    per_batch: dict[int, float] = field(default_factory=dict)


def measure_waits(
    workload: Workload,
    methods: Sequence[str | None],
    *,
    batch_sizes: Sequence[int],
    log: Log,
) -> list[WaitsRow]:
    """One counted run of each raw loop and of writebehind with each of ``methods`` per batch
    size, on the update path, every run checked."""
    dsn, table, rows = workload.dsn, workload.table, workload.rows
    count = WaitCount()
    counting = counting_connection_class(count)

    def raw(loop: Callable[..., float]) -> Callable[[int], int]:
        def run(batch_size: int) -> int:
            loop(dsn, table, rows, batch_size, connection_class=counting, before_timing=reset)
            return -(-len(rows) // batch_size)

        return run

    def writebehind(method: str | None) -> Callable[[int], int]:
        def run(batch_size: int) -> int:
            with ConnectionPool(
                dsn,
                connection_class=counting,
                kwargs={"autocommit": True},
                min_size=1,
                max_size=1,
                open=True,
            ) as pool:
                result = writebehind_run(pool, table, rows, batch_size, method, before_timing=reset)
            return result.batches

        return run

    def reset() -> None:
        count.waits = 0

    sides: list[tuple[str, Callable[[int], int]]] = [
        (RAW_EXECUTEMANY, raw(raw_executemany)),
        (RAW_COPY, raw(raw_copy)),
        *((side_label(method), writebehind(method)) for method in methods),
    ]
    results = [WaitsRow(label) for label, _ in sides]
    for batch_size in batch_sizes:
        for (label, run), row in zip(sides, results, strict=True):
            workload.prepare("update")
            gc.collect()
            reset()
            try:
                batches = run(batch_size)
                waits = count.waits
                workload.check()
            except CheckFailed as failure:
                raise CheckFailed(f"{label}, waits, batch {batch_size}: {failure}") from failure
            row.per_batch[batch_size] = waits / max(1, batches)
        log(
            f"socket waits, batch {batch_size}: "
            + ", ".join(f"{row.label} {row.per_batch[batch_size]:,.1f}" for row in results)
            + " per batch"
        )
    return results
