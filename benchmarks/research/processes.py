"""Several processes writing disjoint keys through writebehind, straight to the server or
through PgBouncer in transaction mode.

Each process writes its share of the rows (keys split in contiguous ranges) through a queue
of its own with the default write method. The processes connect and read the catalog first,
then all start at one signal; the run is timed from the signal to the last process's report
after its flush(). A row given up, in any process, fails the run.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry

from writebehind import WriteBehindQueue
from writebehind.tools.bench.stats import Rates
from writebehind.tools.bench.throughput import Log, turns
from writebehind.tools.bench.workload import CheckFailed, Workload, new_rows
from writebehind.tools.bench.writer import FLUSH_TIMEOUT, GivenUp, make_sink

from ._child import Child, signal_ready

__all__ = ["Route", "measure_routes", "writer_child"]

DIRECT = "direct"
PGBOUNCER = "PgBouncer (transaction mode)"


def writer_child(spec: dict[str, Any]) -> dict[str, Any]:
    """In a child: connect, wait for the start signal, put this process's rows, flush."""
    first, count = spec["first"], spec["count"]
    rows = new_rows(spec["rows"], datetime.fromisoformat(spec["updated"]))[first : first + count]
    given_up = GivenUp()
    with WriteBehindQueue(
        make_sink(spec["conninfo"], spec["table"], spec["method"]),
        batch_size=spec["batch_size"],
        registry=CollectorRegistry(),
        on_failure=given_up,
    ) as wb:
        wb.start()
        gc.collect()
        signal_ready()
        for row in rows:
            wb.put(row)
        flushed = wb.flush(timeout=FLUSH_TIMEOUT)
        metrics = wb.metrics()
    return {
        "flushed": flushed,
        "given_up": given_up.rows,
        "first_error": repr(given_up.first_error),
        "retries": metrics.total_retries,
    }


@dataclass
class Route:
    """The rates of one route, with the rows given up and retries summed over its runs."""

    label: str
    rates: Rates
    given_up: int = 0
    retries: int = 0
    errors: list[str] = field(default_factory=list)


def processes_run(
    workload: Workload,
    conninfo: str,
    *,
    processes: int,
    batch_size: int,
    method: str | None,
) -> tuple[float, int, int, list[str]]:
    """One run: (seconds, rows given up, retries, first errors of the processes that gave
    rows up)."""
    total = len(workload.rows)
    shares = [total // processes + (1 if n < total % processes else 0) for n in range(processes)]
    children = []
    try:
        for number in range(processes):
            spec = {
                "conninfo": conninfo,
                "table": workload.table,
                "rows": total,
                "first": sum(shares[:number]),
                "count": shares[number],
                "updated": workload.updated.isoformat(),
                "batch_size": batch_size,
                "method": method,
            }
            children.append(Child("writer", spec))
        for child in children:
            child.wait_ready()
        started = time.perf_counter()
        for child in children:
            child.start()
        results = [child.result(timeout=FLUSH_TIMEOUT + 60) for child in children]
        seconds = time.perf_counter() - started
    finally:
        for child in children:
            child.kill()
    if not all(found["flushed"] for found in results):
        raise CheckFailed(f"a process's flush() did not finish within {FLUSH_TIMEOUT:.0f}s")
    errors = [found["first_error"] for found in results if found["given_up"]]
    return (
        seconds,
        sum(found["given_up"] for found in results),
        sum(found["retries"] for found in results),
        errors,
    )


def measure_routes(
    workload: Workload,
    routes: Sequence[tuple[str, str]],
    *,
    processes: int,
    batch_size: int,
    runs: int,
    method: str | None,
    log: Log,
) -> list[Route]:
    """``runs`` runs of each (label, conninfo) route, taking turns, on the update path. Rows
    given up are counted, not raised: the caller reports them (and fails). A run that gave
    none up must leave every new row in the table (CheckFailed)."""
    results = {label: Route(label, Rates(label)) for label, _ in routes}
    for run in range(runs):
        order = turns(routes, run)
        for label, conninfo in order:
            workload.prepare("update")
            gc.collect()
            route = results[label]
            try:
                seconds, given_up, retries, errors = processes_run(
                    workload, conninfo, processes=processes, batch_size=batch_size, method=method
                )
                if not given_up:
                    workload.check()
            except CheckFailed as failure:
                raise CheckFailed(
                    f"{processes} processes, {label}, run {run + 1}: {failure}"
                ) from failure
            route.given_up += given_up
            route.retries += retries
            route.errors += errors
            route.rates.values.append(len(workload.rows) / seconds)
        log(
            f"{processes} processes, run {run + 1}/{runs}: "
            + ", ".join(f"{label} {results[label].rates.values[-1]:,.0f}" for label, _ in order)
            + " rows/s"
        )
    return list(results.values())
