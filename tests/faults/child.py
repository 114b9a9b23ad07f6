"""Programs the fault tests run in a child process: ``python -m tests.faults.child PROGRAM ...``.

Each writes one JSON object a line on stdout, the parent's only view of it.

- ``stream DSN TABLE BATCH_SIZE``: reads commands on stdin, one a line, and answers each with a
  report (the queue's counters): ``put START COUNT`` puts the rows of keys START to
  START+COUNT-1 from two threads; ``flush`` flushes. The parent kills it with SIGKILL.
- ``exit DSN TABLE ROWS``: puts ROWS rows into a queue with ``shutdown_timeout=1``, says so, and
  returns without close(): the exit hook drains. Every ``on_failure`` call is reported as it
  happens, and the counters once the exit hook is done.

The program imports writebehind only once it runs, so that ``row`` can be imported without it.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import sys
import threading
from collections.abc import Mapping
from typing import Any

SHUTDOWN_TIMEOUT = 1.0


def row(key: int) -> dict[str, int]:
    """The row the fault tests put for ``key``: its value tells it apart from other keys' rows."""
    return {"k": key, "v": key * 7 % 1000}


def say(message: Mapping[str, Any]) -> None:
    print(json.dumps(message), flush=True)


def counters(metrics: object) -> dict[str, Any]:
    """Every field of a Metrics snapshot but its timestamp, as sent to the parent."""
    fields = dataclasses.asdict(metrics)  # type: ignore[call-overload]
    fields.pop("timestamp")
    return dict(fields)


def stream(dsn: str, table: str, batch_size: int) -> None:
    from writebehind import PostgresUpsert, WriteBehindQueue

    # Only batch_size rows make a batch: a partial batch stays in memory until killed.
    wb = WriteBehindQueue(
        PostgresUpsert(dsn, table, "k"),
        registry=None,
        batch_size=batch_size,
        flush_interval=3600,
    )

    def put(keys: range) -> None:
        for key in keys:
            wb.put(row(key))

    for line in sys.stdin:
        command, *arguments = line.split()
        if command == "put":
            start, count = (int(a) for a in arguments)
            stop = start + count
            threads = [
                threading.Thread(target=put, args=(range(start + t, stop, 2),)) for t in (0, 1)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            say({"put": [start, stop], **counters(wb.metrics())})
        elif command == "flush":
            say({"flushed": wb.flush(timeout=30), **counters(wb.metrics())})


def exit_with_rows_left(dsn: str, table: str, rows: int) -> None:
    # Registered before writebehind is imported, so that it runs after writebehind's exit
    # hook (atexit runs the last registered first).
    queues: list[Any] = []

    def report() -> None:
        wb, registry = queues
        labels = {"queue": wb.name}
        exported = registry.get_sample_value("writebehind_abandoned_total", labels)
        say({"exited": counters(wb.metrics()), "abandoned_total": exported})

    atexit.register(report)

    from prometheus_client import CollectorRegistry

    from writebehind import PostgresUpsert, RowsAbandoned, WriteBehindError, WriteBehindQueue

    def on_failure(rows: list[Mapping[str, Any]], error: BaseException) -> None:
        say(
            {
                "failure": type(error).__name__,
                "abandoned": isinstance(error, RowsAbandoned),
                "writebehind_error": isinstance(error, WriteBehindError),
                "rows": [dict(r) for r in rows],
            }
        )

    registry = CollectorRegistry()
    wb = WriteBehindQueue(
        PostgresUpsert(dsn, table, "k"),
        registry=registry,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        on_failure=on_failure,
    )
    queues.extend([wb, registry])
    for key in range(rows):
        wb.put(row(key))
    say({"put": rows})


def main(argv: list[str]) -> None:
    program, dsn, table, number = argv
    if program == "stream":
        stream(dsn, table, int(number))
    elif program == "exit":
        exit_with_rows_left(dsn, table, int(number))
    else:
        raise SystemExit(f"unknown program {program!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
