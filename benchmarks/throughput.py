"""The benchmarks, runnable from a checkout: ``python benchmarks/throughput.py [options]``.

The same as ``python -m writebehind bench [options]`` (the code is in ``writebehind/bench``):
writebehind with each write method against raw psycopg loops doing the same writes, per batch
size and path, beside busy threads, through PgBouncer; ``--help`` lists the options, ``--quick``
makes a smoke run of seconds.
"""

from __future__ import annotations

import sys

from writebehind.bench.command import main

if __name__ == "__main__":
    sys.exit(main())
