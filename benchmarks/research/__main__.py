"""``python -m benchmarks.research [options]``, from a checkout: the shipped bench's throughput
section and the research sections, each in turn.

Sections: ``throughput`` (raw loops and writebehind per method, batch size and path),
``waits`` (socket waits per batch), ``threads`` (beside CPU-bound threads), ``latency``
(put() latency and peak RSS, in child processes), ``pgbouncer`` (several processes through
PgBouncer against straight to the server), ``writers`` (``writers=2`` against one, and the
raw COPY loop on two connections against one), ``coalesce`` (rows written per 100 puts of a
skewed workload, with and without ``coalesce``), ``deletes`` (deletes beside upserts),
``journal`` (the durable journal: throughput and put() latency with and without it, replay,
start-up with a large journal; only with ``--only journal``, it takes minutes) and, with
``--app``, ``app`` (the application benchmark). Tables go to standard output as each section
ends, progress to standard error.
Exit status: 0; 1 when a run left a row unwritten or with a value other than the one it
must hold, or gave rows up (or a child failed); 2 for a usage error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from writebehind.tools.bench.command import execute

from .sections import Research
from .settings import add_arguments, settings_from

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the research command; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.research",
        description=(
            "Measure writebehind against raw psycopg loops doing the same writes, and what "
            "the research sections study (see the module's docstring). Prints Markdown tables."
        ),
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return execute(args, settings_from, Research)


if __name__ == "__main__":
    sys.exit(main())
