"""A process that puts rows into a queue with a journal until it is killed (see
test_journal_kills.py).

``journal_child.py run DSN TABLE JOURNAL FIRST LOG WRITERS COALESCE``: starts the queue (which
replays what killed processes left), says ``ready``, then puts the rows ``FIRST``, ``FIRST + 1``,
... forever, and after each put() returns appends its number to the file ``LOG``.
``journal_child.py drain DSN TABLE JOURNAL``: starts the queue, flushes, closes, and prints its
counters as JSON.

Row ``i`` is ``{"k": i % KEYS, "v": i, "n": 1}``, written with ``merge={"n": "add"}``: ``v`` is the
last value put for the key, ``n`` counts the puts of the key. Logs go to stderr, a line each,
starting with their level.

``journal_child.py mixed ...`` (the arguments of ``run``): the same, but every fourth operation
of each key is ``delete(i % KEYS)`` instead of a put (``is_delete``).

With ``KILL_AT_NEW_SEGMENT=N`` in its environment, a ``run`` process keeps small segments and
kills itself with SIGKILL when it has created its ``N``-th segment file, before writing its header.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
from typing import Any

KEYS = 200
KILL_AT_NEW_SEGMENT = "KILL_AT_NEW_SEGMENT"


def die_at_a_new_segment(number: int) -> None:
    """SIGKILL this process once its ``number``-th segment file exists, before its header is
    written: the unlucky moment of a rotation."""
    from writebehind.journal import framing, writer

    encode_header = framing.encode_header
    made = 0

    def encode_header_or_die(first_seq: int) -> bytes:
        nonlocal made
        made += 1
        if made == number:  # the file is created, empty; its header is what comes next
            os.kill(os.getpid(), signal.SIGKILL)
        return encode_header(first_seq)

    # The name the writer calls, imported from framing into the writer's module.
    vars(writer)["encode_header"] = encode_header_or_die


def is_delete(i: int) -> bool:
    """Whether operation ``i`` of a ``mixed`` run deletes its key: every fourth of each key,
    at another turn for each key."""
    return (i // KEYS + i) % 4 == 3


def main(argv: list[str]) -> int:
    from writebehind import Journal, PostgresUpsert, WriteBehindQueue

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    mode, dsn, table, journal = argv[:4]
    options: dict[str, Any] = {}
    if mode == "run" and os.environ.get(KILL_AT_NEW_SEGMENT):
        die_at_a_new_segment(int(os.environ[KILL_AT_NEW_SEGMENT]))
        options = {"segment_bytes": 4096, "max_bytes": 1 << 20}
    running = mode in ("run", "mixed")
    writers = int(argv[6]) if running else 1
    coalesce = argv[7] == "1" if running else False
    sink = PostgresUpsert(dsn, table, "k", merge={"n": "add"}, pool_size=2)
    wb = WriteBehindQueue(
        sink,
        registry=None,
        batch_size=50,
        flush_interval=0.02,
        writers=writers,
        coalesce=coalesce,
        journal=Journal(journal, **options),
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
        if mode == "mixed" and is_delete(i):
            wb.delete(i % KEYS)
        else:
            wb.put({"k": i % KEYS, "v": i, "n": 1})
        os.write(log, b"%d\n" % i)
        i += 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
