"""The shipped bench, runnable from a checkout: ``python -m benchmarks.throughput [options]``.

The same as ``python -m writebehind bench [options]`` (the code is in
``writebehind/tools/bench``): writebehind with each write method against raw psycopg loops
doing the same writes, per batch size and path; ``--help`` lists the options, ``--quick`` makes
a smoke run of seconds. ``python -m benchmarks.research`` adds the research sections.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from writebehind.tools.cli import main as cli_main


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m writebehind bench`` without the rest of the command line."""
    return cli_main(["bench", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
