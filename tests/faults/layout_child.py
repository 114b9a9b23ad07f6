"""A process that journals rows of some columns, then waits to be killed (test_journal_layouts.py).

``layout_child.py DSN TABLE JOURNAL COLUMNS COUNT``: a queue with a journal and
``columns=COLUMNS`` (comma-separated; ``k`` is the key) puts rows ``k`` = 0 .. COUNT-1, each
column ``x`` holding ``f"{x}{k}"``, says ``put`` once every put() has returned, and sleeps.
"""

from __future__ import annotations

import sys
import time


def main(argv: list[str]) -> int:
    from writebehind import Journal, PostgresUpsert, WriteBehindQueue

    dsn, table, journal, columns, count = argv
    names = columns.split(",")
    sink = PostgresUpsert(dsn, table, "k", columns=names)
    wb = WriteBehindQueue(sink, registry=None, journal=Journal(journal), batch_size=100)
    wb.start()
    for k in range(int(count)):
        wb.put({name: k if name == "k" else f"{name}{k}" for name in names})
    print("put", flush=True)
    time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
