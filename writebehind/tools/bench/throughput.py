"""End-to-end upsert throughput: writebehind with each write method against raw psycopg loops
doing the same writes, per batch size and path (insert or update).

Every side of one batch size and path runs ``runs`` times, taking turns in an order that
changes from run to run (see ``turns``), each run on a freshly rebuilt table (see
``workload``), and each run checked: the table must hold every row with its new value.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from .raw import raw_copy, raw_executemany
from .stats import Rates
from .workload import CheckFailed, Workload
from .writer import writebehind_run

__all__ = [
    "RAW_COPY",
    "RAW_EXECUTEMANY",
    "Cell",
    "Side",
    "measure_throughput",
    "side_label",
    "throughput_sides",
    "turns",
]

RAW_EXECUTEMANY = "raw executemany"
RAW_COPY = "raw COPY"

T = TypeVar("T")
Log = Callable[[str], None]


def turns(items: Sequence[T], run: int) -> list[T]:
    """The order of ``items`` in run ``run`` (from 0): forward in even runs, backward in odd
    ones, shifted by one every two runs, so that no side keeps the first or last slot."""
    shift = (run // 2) % len(items)
    order = list(items[shift:]) + list(items[:shift])
    return order if run % 2 == 0 else order[::-1]


def side_label(method: str | None) -> str:
    """How a writebehind side is named in the tables."""
    if method is None:
        return "writebehind"
    if method == "auto":
        return "writebehind auto (default)"
    return f"writebehind {method}"


@dataclass(frozen=True)
class Side:
    """One contender: a label and a function writing the workload's rows in batches of the
    given size, returning seconds."""

    label: str
    run: Callable[[int], float]


def throughput_sides(workload: Workload, methods: Sequence[str | None]) -> list[Side]:
    """The two raw loops, then writebehind with each of ``methods`` (None: its default)."""
    dsn, table, rows = workload.dsn, workload.table, workload.rows

    def writebehind(method: str | None) -> Callable[[int], float]:
        return lambda batch_size: writebehind_run(dsn, table, rows, batch_size, method).seconds

    return [
        Side(RAW_EXECUTEMANY, lambda batch_size: raw_executemany(dsn, table, rows, batch_size)),
        Side(RAW_COPY, lambda batch_size: raw_copy(dsn, table, rows, batch_size)),
        *(Side(side_label(method), writebehind(method)) for method in methods),
    ]


@dataclass
class Cell:
    """The rows/s of every side at one batch size on one path."""

    path: str
    batch_size: int
    rates: dict[str, Rates] = field(default_factory=dict)


def measure_throughput(
    workload: Workload,
    sides: Sequence[Side],
    *,
    batch_sizes: Sequence[int],
    paths: Sequence[str],
    runs: int,
    log: Log,
) -> list[Cell]:
    """Run every side ``runs`` times per path and batch size; CheckFailed (naming the side,
    path, batch size and run) at the first run that leaves the table wrong."""
    rows = len(workload.rows)
    cells = []
    for path in paths:
        for batch_size in batch_sizes:
            cell = Cell(path, batch_size, {side.label: Rates(side.label) for side in sides})
            for run in range(runs):
                order = turns(sides, run)
                for side in order:
                    workload.prepare(path)
                    gc.collect()  # no collection of the last run's garbage inside this one
                    try:
                        seconds = side.run(batch_size)
                        workload.check()
                    except CheckFailed as failure:
                        raise CheckFailed(
                            f"{side.label}, {path} path, batch {batch_size}, "
                            f"run {run + 1}: {failure}"
                        ) from failure
                    cell.rates[side.label].values.append(rows / seconds)
                log(
                    f"{path} path, batch {batch_size}, run {run + 1}/{runs}: "
                    + ", ".join(
                        f"{side.label} {cell.rates[side.label].values[-1]:,.0f}" for side in order
                    )
                    + " rows/s"
                )
            cells.append(cell)
    return cells
