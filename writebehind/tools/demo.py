"""``python -m writebehind demo``: threads put rows, a queue writes them, the table is counted."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TextIO

import psycopg
from psycopg import sql

from .. import Metrics, PostgresUpsert, WriteBehindQueue
from ..embedded import database
from ..errors import SchemaError
from .args import count

__all__ = ["DESCRIPTION", "HELP", "NAME", "DemoResult", "add_arguments", "run", "run_demo"]

NAME = "demo"
HELP = "write rows through a queue into PostgreSQL and check them"
DESCRIPTION = (
    "Create the table writebehind_demo (emptied first), put ROWS rows from PRODUCERS "
    "threads through one queue, drain it, count the rows in the table and print a "
    "summary. Exits 1 if the table does not hold every row."
)

TABLE = "writebehind_demo"
_TABLE_COLUMNS = sql.SQL(
    """(
    id bigint PRIMARY KEY,
    producer integer NOT NULL,
    seq integer NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL
)"""
)


@dataclass(frozen=True)
class DemoResult:
    """What a demo run measured."""

    rows: int
    seconds: float
    metrics: Metrics
    put_latencies_ns: Sequence[int]
    """Every put() call's duration, sorted."""
    rows_in_table: int
    batch_size: int
    """The batch size the queue used: the one asked for, or the queue's maxsize if smaller."""

    @property
    def ok(self) -> bool:
        """Every row written and counted in the table, none given up."""
        return self.rows_in_table == self.rows and self.metrics.total_failed == 0

    def percentile_us(self, fraction: float) -> float:
        """The put() latency at ``fraction`` (0.5, 0.99) in microseconds (nearest rank)."""
        latencies = self.put_latencies_ns
        if not latencies:
            return 0.0
        rank = min(len(latencies) - 1, max(0, round(fraction * len(latencies)) - 1))
        return latencies[rank] / 1000


def run_demo(
    dsn: str | None = None,
    *,
    rows: int = 100_000,
    producers: int = 4,
    batch_size: int = 500,
    progress: TextIO | None = sys.stderr,
) -> DemoResult:
    """Create the demo table, put ``rows`` rows from ``producers`` threads through one queue,
    close it (drain), and count the table's rows. Without ``dsn``, on an embedded server."""
    with database(dsn) as conninfo:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            table = sql.Identifier(TABLE)
            conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ").format(table) + _TABLE_COLUMNS)
            conn.execute(sql.SQL("TRUNCATE {}").format(table))
        queue = WriteBehindQueue(
            PostgresUpsert(conninfo, TABLE, "id"), batch_size=batch_size, registry=None
        )
        queue.start()  # connect before the clock starts
        shares = [rows // producers + (1 if i < rows % producers else 0) for i in range(producers)]
        latencies: list[list[int]] = [[] for _ in range(producers)]
        threads = [
            threading.Thread(
                target=_produce,
                args=(queue, number, sum(shares[:number]), shares[number], latencies[number]),
                name=f"demo-producer-{number}",
            )
            for number in range(producers)
        ]
        reporter = _Progress(queue.metrics, rows, progress)
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        reporter.start()
        for thread in threads:
            thread.join()
        queue.close()
        seconds = time.perf_counter() - started
        reporter.stop()
        with psycopg.connect(conninfo) as conn:
            counted = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
    return DemoResult(
        rows=rows,
        seconds=seconds,
        metrics=queue.metrics(),
        put_latencies_ns=sorted(ns for part in latencies for ns in part),
        rows_in_table=counted[0] if counted else 0,
        batch_size=queue.batch_size,
    )


def _produce(
    queue: WriteBehindQueue, producer: int, first_id: int, count: int, latencies: list[int]
) -> None:
    clock = time.perf_counter_ns
    now = datetime.now(timezone.utc)
    for seq in range(count):
        row: dict[str, Any] = {
            "id": first_id + seq,
            "producer": producer,
            "seq": seq,
            "payload": {"producer": producer, "seq": seq, "tags": ["demo", "writebehind"]},
            "created_at": now,
        }
        before = clock()
        queue.put(row)
        latencies.append(clock() - before)


class _Progress:
    """A status line from the queue's metrics: redrawn in place on a terminal, else a line a
    second."""

    def __init__(self, metrics: Callable[[], Metrics], total: int, out: TextIO | None) -> None:
        self._metrics = metrics
        self._total = total
        self._out = out
        self._interactive = bool(out and out.isatty())
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-progress", daemon=True)

    def start(self) -> None:
        if self._out is not None:
            self._thread.start()

    def stop(self) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        assert self._out is not None
        started = time.perf_counter()
        interval = 0.2 if self._interactive else 1.0
        while not self._done.wait(interval):
            self._show(time.perf_counter() - started, final=False)
        self._show(time.perf_counter() - started, final=True)

    def _show(self, seconds: float, *, final: bool) -> None:
        assert self._out is not None
        m = self._metrics()
        share = m.total_persisted / self._total if self._total else 1.0
        line = (
            f"{m.total_persisted:>11,} / {self._total:,} rows written ({share:6.1%}) "
            f"| queued {m.current_queue_depth:>6,} | retries {m.total_retries} "
            f"| failed {m.total_failed} | {seconds:5.1f}s"
        )
        if self._interactive:
            self._out.write("\r" + line + ("\n" if final else ""))
        else:
            self._out.write(line + "\n")
        self._out.flush()


def format_summary(result: DemoResult, *, producers: int, batch_size: int, where: str) -> str:
    """The summary table printed at the end of a demo run. ``batch_size`` is the one asked
    for; the head shows the one used, and why when they differ."""
    m = result.metrics
    rate = result.rows / result.seconds if result.seconds > 0 else 0.0
    verdict = "OK" if result.ok else "MISMATCH"
    lines = [
        ("rows", f"{result.rows:,}"),
        ("seconds", f"{result.seconds:.2f}"),
        ("rows/s", f"{rate:,.0f}"),
        ("batches", f"{m.total_batches:,}"),
        ("retries", f"{m.total_retries:,}"),
        ("failed", f"{m.total_failed:,}"),
        ("put p50", f"{result.percentile_us(0.50):.1f} µs"),
        ("put p99", f"{result.percentile_us(0.99):.1f} µs"),
        ("in table", f"{result.rows_in_table:,}  {verdict}"),
    ]
    width = max(len(value) for _, value in lines)
    used = f"batch size {result.batch_size:,}"
    if result.batch_size != batch_size:
        used += f" (asked {batch_size:,}, capped at the queue's maxsize)"
    head = f"writebehind demo: {producers} producer thread(s), {used}, table {TABLE} on {where}"
    rule = f"+{'-' * 10}+{'-' * (width + 2)}+"
    body = [f"| {label:<8} | {value:>{width}} |" for label, value in lines]
    return "\n".join([head, rule, *body, rule])


def describe_server(dsn: str | None) -> str:
    """Where the demo writes: the embedded server or the given one (password left out)."""
    if not dsn:
        return "an embedded PostgreSQL"
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "the given server"
    host = str(params.get("host") or os.environ.get("PGHOST") or "localhost")
    return f"{host}/{params.get('dbname') or ''}".rstrip("/")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the demo command."""
    parser.add_argument(
        "--dsn",
        help="conninfo of a PostgreSQL to use; default: start an embedded one "
        "(needs the 'embedded' extra)",
    )
    parser.add_argument("--rows", type=count(1), default=100_000, help="default: %(default)s")
    parser.add_argument("--producers", type=count(1), default=4, help="default: %(default)s")
    parser.add_argument("--batch-size", type=count(1), default=500, help="default: %(default)s")


def run(args: argparse.Namespace) -> int:
    """Run the demo command; returns the exit status."""
    dsn, rows, producers, batch_size = args.dsn, args.rows, args.producers, args.batch_size
    try:
        result = run_demo(dsn, rows=rows, producers=producers, batch_size=batch_size)
    except ImportError as error:  # the embedded extra is missing
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (psycopg.Error, SchemaError) as error:  # no server there, or a table of another shape
        print(f"error: {describe_server(dsn)}: {error}".rstrip(), file=sys.stderr)
        return 1
    print(
        format_summary(
            result, producers=producers, batch_size=batch_size, where=describe_server(dsn)
        )
    )
    return 0 if result.ok else 1
