"""A producer process for test_failover.py: it writes through a queue with the default settings
while the database fails over under it.

``failover_child.py CONNINFO TABLE PRODUCER KEYS LOG``: puts rows ``{"k": key, "v": n, "p":
PRODUCER}`` for its own keys (``PRODUCER * KEYS`` to ``PRODUCER * KEYS + KEYS - 1``, round after
round, ``n`` counting up), and after each put() returns appends ``key n`` to the file ``LOG``.
It stops putting when a line comes on its standard input, then flushes, closes, and prints its
counters as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import threading
import time


def main(argv: list[str]) -> int:
    from writebehind import PostgresUpsert, WriteBehindQueue

    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s.%(msecs)03d %(levelname)s %(message)s"
    )
    conninfo, table, producer, keys, log_path = argv
    first, count = int(producer) * int(keys), int(keys)
    failures: list[str] = []
    wb = WriteBehindQueue(
        PostgresUpsert(conninfo, table, "k"),
        registry=None,
        on_failure=lambda rows, error: failures.append(f"{len(rows)} rows: {error!r}"),
        name=f"failover-{producer}",
    )
    stop = threading.Event()

    def wait_for_stop() -> None:
        sys.stdin.readline()
        stop.set()

    threading.Thread(target=wait_for_stop, daemon=True).start()
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    wb.start()
    print("ready", flush=True)
    n = 0
    while not stop.is_set():
        key = first + n % count
        wb.put({"k": key, "v": n, "p": int(producer)})
        os.write(log, b"%d %d\n" % (key, n))
        n += 1
        if n % 50 == 0:
            time.sleep(0.02)  # about 2,000 rows a second: a stream, not a flood
    flushed = wb.flush(timeout=180)
    wb.close(timeout=60)
    metrics = dataclasses.asdict(wb.metrics())
    print(json.dumps({"flushed": flushed, "failures": failures, **metrics}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
