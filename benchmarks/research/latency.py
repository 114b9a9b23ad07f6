"""put() latency with the worker busy, and peak memory, per write method, each in a process of
its own (so that no run shares another's peak RSS).

The child builds the rows, then puts them one by one, timing each put() with perf_counter_ns,
into a queue large enough to hold them all: no put() waits for room, so the times are the
cost of put() itself, while the worker writes batch after batch beside it. The RSS before the
queue is made (interpreter, psycopg, the rows) and the peak of the whole run are reported.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry

from writebehind import WriteBehindQueue
from writebehind.tools.bench.stats import percentile
from writebehind.tools.bench.throughput import Log, side_label
from writebehind.tools.bench.workload import CheckFailed, Workload, new_rows
from writebehind.tools.bench.writer import FLUSH_TIMEOUT, GivenUp, make_sink

from ._child import Child, rss_kb

__all__ = ["LatencyResult", "latency_child", "measure_latency"]


@dataclass(frozen=True)
class LatencyResult:
    """put() latency percentiles (µs) and memory (MB) of one method's run."""

    label: str
    p50_us: float
    p99_us: float
    max_us: float
    rss_before_mb: float
    peak_rss_mb: float


def latency_child(spec: dict[str, Any]) -> dict[str, Any]:
    """In a child: put every row, each timed, flush, and report percentiles and memory."""
    rows = new_rows(spec["rows"], datetime.fromisoformat(spec["updated"]))
    batch_size: int = spec["batch_size"]
    given_up = GivenUp()
    clock = time.perf_counter_ns
    latencies = [0] * len(rows)  # filled in place: no list growth inside the timed loop
    gc.collect()
    rss_before, _ = rss_kb()
    with WriteBehindQueue(
        make_sink(spec["dsn"], spec["table"], spec["method"]),
        batch_size=batch_size,
        maxsize=len(rows) + batch_size,
        registry=CollectorRegistry(),
        on_failure=given_up,
    ) as wb:
        wb.start()
        put = wb.put
        for index, row in enumerate(rows):
            before = clock()
            put(row)
            latencies[index] = clock() - before
        flushed = wb.flush(timeout=FLUSH_TIMEOUT)
    _, peak = rss_kb()
    latencies.sort()
    return {
        "flushed": flushed,
        "given_up": given_up.rows,
        "first_error": repr(given_up.first_error),
        "p50_ns": percentile(latencies, 0.50),
        "p99_ns": percentile(latencies, 0.99),
        "max_ns": latencies[-1] if latencies else 0,
        "rss_before_kb": rss_before,
        "peak_rss_kb": peak,
    }


def measure_latency(
    workload: Workload,
    methods: Sequence[str | None],
    *,
    batch_size: int,
    log: Log,
) -> list[LatencyResult]:
    """One child run per method on the update path, each checked."""
    results = []
    for method in methods:
        label = side_label(method)
        workload.prepare("update")
        spec = {
            "dsn": workload.dsn,
            "table": workload.table,
            "rows": len(workload.rows),
            "updated": workload.updated.isoformat(),
            "batch_size": batch_size,
            "method": method,
        }
        found = Child("latency", spec).result(timeout=FLUSH_TIMEOUT + 60)
        try:
            if not found["flushed"]:
                raise CheckFailed(f"flush() did not finish within {FLUSH_TIMEOUT:.0f}s")
            if found["given_up"]:
                raise CheckFailed(
                    f"{found['given_up']} rows given up, first error: {found['first_error']}"
                )
            workload.check()
        except CheckFailed as failure:
            raise CheckFailed(f"{label}, put() latency run: {failure}") from failure
        result = LatencyResult(
            label,
            found["p50_ns"] / 1000,
            found["p99_ns"] / 1000,
            found["max_ns"] / 1000,
            found["rss_before_kb"] / 1024,
            found["peak_rss_kb"] / 1024,
        )
        log(
            f"put() latency, {label}: p50 {result.p50_us:.1f} µs, p99 {result.p99_us:.1f} µs, "
            f"peak RSS {result.peak_rss_mb:.0f} MB"
        )
        results.append(result)
    return results
