"""A process that puts rows into a queue with a journal until it is killed (see
test_journal_kills.py).

``journal_child.py run DSN TABLE JOURNAL FIRST LOG WRITERS COALESCE``: starts the queue (which
replays what killed processes left), says ``ready``, then puts the rows ``FIRST``, ``FIRST + 1``,
... forever, and after each put() returns appends its number to the file ``LOG``.
``journal_child.py drain DSN TABLE JOURNAL``: starts the queue, flushes, closes, and prints its
counters as JSON.

Row ``i`` is ``{"k": i % KEYS, "v": i, "n": 1}``, written with ``merge={"n": "add"}``: ``v`` is the
last value put for the key, ``n`` counts the puts of the key.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

KEYS = 200


def main(argv: list[str]) -> int:
    from writebehind import Journal, PostgresUpsert, WriteBehindQueue

    mode, dsn, table, journal = argv[:4]
    writers = int(argv[6]) if mode == "run" else 1
    coalesce = argv[7] == "1" if mode == "run" else False
    sink = PostgresUpsert(dsn, table, "k", merge={"n": "add"}, pool_size=2)
    wb = WriteBehindQueue(
        sink,
        registry=None,
        batch_size=50,
        flush_interval=0.02,
        writers=writers,
        coalesce=coalesce,
        journal=Journal(journal),
    )
    wb.start()
    if mode == "drain":
        assert wb.flush(600), "the drain did not flush"
        wb.close(60)
        print(json.dumps(dataclasses.asdict(wb.metrics()), default=str), flush=True)
        return 0
    first, log = int(argv[4]), os.open(argv[5], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    print("ready", flush=True)
    i = first
    while True:
        wb.put({"k": i % KEYS, "v": i, "n": 1})
        os.write(log, b"%d\n" % i)
        i += 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
